#!/usr/bin/env bash
# The GPU measurements behind the speed tables of docs/training.md, in one run (one machine, one process per benchmark).
#   bash bench/gpu.sh OUT_DIR
# Needs a CUDA torch and golf-lit's dependencies; the repository root on PYTHONPATH (or golf-lit installed).
set -u
out=${1:-bench/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, sys, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__, 'python', sys.version.split()[0])"
} | tee "$out/env.txt"
# 1. record config: golf-lit through Lightning vs the same step in a plain PyTorch loop (compiled, bf16), + profile
timeout "${RECORD_TIMEOUT:-300}" python3 bench/train_step.py --shape record --steps 5 --priming 2 --rounds 2 \
  --profile --profile-steps 2 --trace /tmp/train_step_trace.json --out "$out/record.json" 2>&1 | tee "$out/record.log"
# 2. leaderboard-top training stack, looping off and on (Lightning only)
timeout "${TOP_TIMEOUT:-240}" python3 bench/train_step.py --shape record --compare --only top,top+looping \
  --rounds 0 --steps 4 --priming 2 --out "$out/top.json" 2>&1 | tee "$out/top.log"
