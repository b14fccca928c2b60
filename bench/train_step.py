"""Training step time of a model config on this machine (table + JSON).

    python bench/train_step.py                        # the smoke model on CPU (--shape tiny, the default)
    python bench/train_step.py --shape record         # record config, 1 GPU (grad accumulation 8), compiled
    python bench/train_step.py --shape record --no-compile --steps 5
    python bench/train_step.py --rounds 3 --json      # Lightning and a plain PyTorch loop, interleaved
    python bench/train_step.py --profile              # + torch.profiler trace, top kernels, time shares

With ``--rounds R`` (default 2) the same model and optimizers run R blocks of ``--steps`` through golf-lit's
Lightning stack and R blocks in a plain PyTorch loop written here (forward, backward, clip, Muon + AdamW, EMA),
alternating, so both see the same machine state; each reports ms/step, tokens/s, peak memory and MFU (FLOPs
per token: 6 * N_matmul + 6 * L * T * d, see docs/readme/evidence.md; peak 989.5 TFLOP/s, H100 bf16 dense,
or ``--peak-tflops``). ``--rounds 0`` is the old Lightning-only measurement.

Runs ``--priming`` compile-priming steps (not timed), then ``--steps`` timed optimizer steps through the real
Lightning stack (GolfLM, GolfDataModule on the bundled sample, WallClockLimit clock) and reports the mean step
time, tokens/s and peak GPU memory. On one GPU a record step is 8 micro-batches of 48 x 2048 tokens, i.e. the
work one of 8 GPUs does in 8 record steps; ``micro_batch_ms`` (= step / grad_accum) is therefore the compute
part of an 8xH100 step (DDP's all-reduce comes on top).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning.pytorch as L
import torch

from callbacks import CompilePriming, WallClockLimit
from golf_lit.data.datamodule import GolfDataModule
from golf_lit.io import atomic_write_json
from golf_lit.lit_module import GolfLM
from golf_lit.paths import SAMPLE_TOKENIZER, SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES

try:  # `python bench/train_step.py` puts bench/ on the path; `python -m bench.train_step` needs the package form
    from train_step_compare import add_compare_args, compare, print_compare, profile_plain
except ImportError:
    from bench.train_step_compare import add_compare_args, compare, print_compare, profile_plain

TINY = dict(
    num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2, xsa_last_n=2, bigram_vocab_size=1024, bigram_dim=64
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--priming", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="the smoke model and batch (same as --shape tiny)")
    add_compare_args(parser)
    parser.add_argument("--grad-accum", type=int, default=None)
    parser.add_argument("--out", default="bench/results/train_step.json")
    args = parser.parse_args()
    args.tiny = args.tiny or args.shape == "tiny"

    cuda = torch.cuda.is_available()
    model_kw = TINY if args.tiny else {}
    seq_len, batch_tokens = (256, 4096) if args.tiny else (2048, 786_432)
    grad_accum = args.grad_accum or (1 if args.tiny else 8)
    module = GolfLM(compile=not args.no_compile and cuda, **model_kw)
    data = GolfDataModule(
        SAMPLE_TRAIN_FILES,
        SAMPLE_VAL_FILES,
        SAMPLE_TOKENIZER,
        train_batch_tokens=batch_tokens,
        train_seq_len=seq_len,
        grad_accum_steps=grad_accum,
        val_max_tokens=seq_len,
    )
    clock = WallClockLimit(None)
    trainer = L.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if cuda else "32-true",
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        callbacks=[CompilePriming(args.priming), clock],
    )
    t0 = time.perf_counter()
    trainer.fit(module, data)
    wall = time.perf_counter() - t0
    step_ms = clock.elapsed_ms / args.steps
    row = {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "config": "tiny" if args.tiny else "record",
        "params": module.gpt.num_parameters(),
        "compile": module.compile,
        "attention": "fa3"
        if (cuda and __import__("golf_lit.model.attention", fromlist=["x"]).flash_attn_3())
        else "sdpa",
        "grad_accum": grad_accum,
        "tokens_per_step": batch_tokens,
        "steps": args.steps,
        "step_ms": round(step_ms, 2),
        "micro_batch_ms": round(step_ms / grad_accum, 2),
        "tokens_per_s": round(batch_tokens / (step_ms / 1000.0)),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "wall_s_incl_priming": round(wall, 1),
    }
    if args.rounds > 0:  # Lightning vs plain loop, interleaved; `row` stays the first Lightning measurement
        row["compare"] = compare(args, module, data, model_kw, batch_tokens, seq_len, grad_accum, step_ms)
    if args.profile:
        row["profile"] = profile_plain(args, module, data, grad_accum)
    if args.json:
        print(json.dumps(row, indent=1))
    else:
        flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
        print("| " + " | ".join(flat) + " |")
        print("|" + "---|" * len(flat))
        print("| " + " | ".join(str(v) for v in flat.values()) + " |")
        if "compare" in row:
            print_compare(row["compare"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, row)


if __name__ == "__main__":
    main()
