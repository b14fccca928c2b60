"""CaseOps and phased TTT on CPU: bpb and seconds per strategy for a briefly trained tiny model, with and without
CaseOps, plus a projection of the full-validation phased-TTT time on 8xH100 (table + JSON).

    python bench/caseops_phased_ttt.py --train-docs tests/data/fineweb_train_docs.jsonl

Both data variants are built from the same text (val: tests/data/fineweb_val_docs.jsonl, first --val-docs
documents; train: --train-docs): plain sp1024 (the bundled tokenizer, LUT bytes) and CaseOps (a CaseOps BPE of
the same vocabulary trained here on the train docs, sidecar bytes). For each, a tiny GPT is trained for --steps
plain AdamW steps (a smoke model, not the record recipe), then scored by: sliding windows, today's legal
score-first TTT (golf_lit.eval.strategies.ttt), and phased TTT with 1 and 3 global phases
(golf_lit.eval.strategies.phased_ttt).

Projection: phased TTT's cost is dominated by the chunk forwards/backwards over a window of <= eval_seq_len
tokens. The bench counts the token positions the model processes per scored token for each strategy on this
val set and reports the ratio phased/sliding. An 8xH100 estimate is that ratio times the record's sliding
time per token (docs/record-stack.md §10.2: ~150 s for 62.0M tokens at stride 64) scaled to CaseOps' 47.85M tokens,
plus the
global phases; TOP's logged phased TTT time (455-509 s) is printed beside it for comparison.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from golf_lit.data.byte_source import load_byte_source
from golf_lit.data.encode import tokenize_documents
from golf_lit.data.paths import SAMPLE_TOKENIZER, resolve
from golf_lit.data.shards import TokenStream, load_validation_tokens
from golf_lit.data.tokenizer import load_tokenizer
from golf_lit.data.train_tokenizer import train_tokenizer
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.phased_ttt import PhasedTTT, PhasedTTTConfig
from golf_lit.eval.strategies.phased_ttt_engine import split_documents
from golf_lit.eval.strategies.sliding import Sliding, SlidingConfig
from golf_lit.eval.strategies.ttt import TestTimeTraining, TTTConfig
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT

VAL_DOCS = Path(__file__).parents[1] / "tests" / "data" / "fineweb_val_docs.jsonl"


def build_data(root: Path, train_docs: Path, val_docs: int, caseops: bool, vocab: int) -> tuple[str, str]:
    """Shards (val first, then train) and the tokenizer of one variant; returns (shard dir, tokenizer)."""
    root.mkdir(parents=True, exist_ok=True)
    docs = root / "docs.jsonl"
    val_lines = VAL_DOCS.read_text(encoding="utf-8").splitlines()[:val_docs]
    docs.write_text("\n".join(val_lines) + "\n" + train_docs.read_text(encoding="utf-8"), encoding="utf-8")
    if caseops:
        tok = str(train_tokenizer(train_docs, vocab, root / "tok", heldout_docs=0, num_threads=2,
                                  caseops=True).model_path)
    else:
        tok = resolve(SAMPLE_TOKENIZER)
    tokenize_documents(docs, tok, root / "data", num_val_docs=val_docs, workers=2, progress=False, caseops=caseops)
    return str(root / "data"), tok


def train_smoke(cfg: ModelConfig, train_files: str, steps: int, seq_len: int, batch: int) -> GPT:
    torch.manual_seed(0)
    model = GPT(cfg)
    stream = TokenStream(train_files)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    for step in range(steps):
        x, y = stream.micro_batch(step, batch * seq_len, seq_len)
        lr = 3e-3 * min(1.0, (steps - step) / (0.3 * steps))
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-docs", required=True, help="JSONL train documents (e.g. the shared FineWeb sample)")
    ap.add_argument("--val-docs", type=int, default=36, help="validation documents (first N of tests/data)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vocab = 1024
    cfg = ModelConfig(vocab_size=vocab, num_layers=args.layers, model_dim=args.dim, num_heads=4, num_kv_heads=2,
                      rope_dims=16, bigram_vocab_size=512, bigram_dim=32, xsa_last_n=args.layers,
                      rope_train_seq_len=args.seq_len)
    L = args.seq_len
    sliding = SlidingConfig(seq_len=L, stride=64, batch_seqs=16)
    ttt = TTTConfig(chunk_tokens=8192, epochs=1, lr=0.002, batch_seqs=8)
    phased = {
        n: PhasedTTTConfig(prefix_docs=args.val_docs // 2, num_phases=n, lora_rank=16, lora_alpha=28.8, chunk_size=48,
                           eval_seq_len=L, batch_size=8, global_chunk_tokens=4096, global_seq_len=L)
        for n in (1, 3)
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for caseops in (False, True):
            name = "caseops" if caseops else "sp1024"
            data, tok = build_data(Path(tmp) / name, Path(args.train_docs), args.val_docs, caseops, vocab)
            model, train_s = timed(lambda: train_smoke(cfg, f"{data}/fineweb_train_*.bin", args.steps, L, 16))
            print(f"{name}: smoke model trained in {train_s:.0f} s", flush=True)
            tokens = load_validation_tokens(f"{data}/fineweb_val_*.bin", 1)  # whole val stream
            src = load_byte_source(f"{data}/fineweb_val_*.bin", load_tokenizer(tok), vocab, tokens.numel())
            ctx = EvalContext(model, tokens, src)
            n = tokens.numel() - 1
            starts, lengths = split_documents(tokens, 1)
            results = {}
            with torch.no_grad():
                results["sliding"] = timed(lambda: Sliding(sliding).score(ctx)["model"])
            results["legal_ttt"] = timed(lambda: TestTimeTraining(ttt, sliding).score(ctx)["model"])
            for k, pc in phased.items():
                strategy = PhasedTTT(pc)
                results[f"phased_ttt_{k}"] = timed(lambda s=strategy: s.score(ctx)["model"])
                results[f"phased_ttt_{k}"] += (strategy.timings,)
            # positions processed per scored token (forward), from the schedules
            win = sum(min(L, c * 48 + 48) for ln in lengths.tolist() for c in range(-(-ln // 48)))
            for key, val in results.items():
                sums, secs = val[0], val[1]
                print(f"{name} {key} val_bpb:{sums.val_bpb:.4f} seconds:{secs:.1f}", flush=True)
                rows.append({"data": name, "strategy": key, "val_bpb": sums.val_bpb, "tokens": int(sums.token_count),
                             "bytes": int(sums.byte_count), "seconds": secs,
                             "parts": {p: round(s, 2) for p, s in val[2]} if len(val) > 2 else None})
            rows.append({"data": name, "strategy": "smoke_train", "seconds": train_s, "val_tokens": n,
                         "docs": len(starts), "phased_positions_per_token": win / n,
                         "sliding_positions_per_token": L / sliding.stride})
    print(f"{'data':8} {'strategy':14} {'val_bpb':>9} {'tokens':>8} {'bytes':>8} {'seconds':>8}  parts")
    for r in rows:
        if r["strategy"] == "smoke_train":
            continue
        print(f"{r['data']:8} {r['strategy']:14} {r['val_bpb']:9.4f} {r['tokens']:8d} {r['bytes']:8d} "
              f"{r['seconds']:8.1f}  {r['parts'] or ''}")
    for r in rows:
        if r["strategy"] == "smoke_train":
            print(f"{r['data']}: {r['val_tokens']} val tokens, {r['docs']} docs, smoke training {r['seconds']:.0f} s; "
                  f"phased TTT forward positions per token at eval_seq_len {L}: "
                  f"{r['phased_positions_per_token']:.1f}")
    # 8xH100 seconds per sliding-scored token (docs/record-stack.md §10.2, stride 64, seq 2048)
    sl_rate = 150.0 / 62_021_632
    print(f"projection basis: 8xH100 sliding {sl_rate * 47_851_520:.0f} s for 47.85M tokens at 32 positions/token; "
          f"TOP's logged phased TTT 455-509 s (LoRA scoring ~400 s + global SGD 70-85 s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
