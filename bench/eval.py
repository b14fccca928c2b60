"""Evaluation throughput per strategy on this machine, and the projected full eval on 8xH100 (table + JSON).

    python bench/eval.py                                  # record-shaped random model, CPU-sized slices
    python bench/eval.py --device cuda --precision bf16   # on a GPU: larger slices, batch 32 windows
    python bench/eval.py --artifact runs/x/final_model.int6.ptz   # also: val_bpb of that artifact per strategy

Measures, on a slice of the bundled validation sample:
- roundtrip: non-overlapping 2048-token sequences (tokens/s);
- sliding: stride-64 windows; the steady-state rate is stride tokens per window forward (windows/s);
- ttt: score-first TTT (sliding windows + training on each scored chunk); training tokens/s at the micro-batch
  one of 8 ranks gets (chunk_tokens / seq_len / 8 sequences);
- ngram: the mixer's extra cost per scored position (lookups, backoff, mixing; measured with random logits so
  the model does not dominate) and the count store's insert rate (the prefill a rank does before its share).

The projection splits the 62,021,632-token eval over 8 ranks exactly as the Evaluator does: 969,057 windows,
chunk-wise TTT training with 1/8 of each chunk per rank, and per-rank n-gram work on the host CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import time

import numpy as np
import torch

from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES, resolve
from golf_lit.data.shards import find_shards, load_shard, load_validation_tokens
from golf_lit.data.tokenizer import build_byte_luts, load_tokenizer
from golf_lit.eval.ngram import NgramConfig, NgramStore, NgramStoreConfig
from golf_lit.eval.scorer import Scorer
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.eval.strategies.sliding import Sliding, SlidingConfig, Windows, score_windows, sliding_windows
from golf_lit.eval.strategies.ttt import TestTimeTrainer, TTTConfig
from golf_lit.io import atomic_write_json
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT

FULL_TARGETS = 62_021_632
RANKS = 8
LIMIT_S = 600.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the scoring forward")
    parser.add_argument("--windows", type=int, default=None, help="sliding windows timed (default 8 CPU / 256 GPU)")
    parser.add_argument("--batch_seqs", type=int, default=None, help="windows per forward (default 4 CPU / 32 GPU)")
    parser.add_argument("--ttt_chunk", type=int, default=32768)
    parser.add_argument("--ttt_epochs", type=int, default=3)
    parser.add_argument("--mixer_tokens", type=int, default=65536)
    parser.add_argument("--insert_tokens", type=int, default=1 << 20)
    parser.add_argument("--mixer_shard", default=None,
                        help="shard to draw the mixer's stream from (e.g. an 8M-token train shard): the store is "
                             "prefilled with --mixer_prefill tokens first, so lookups meet a realistically large store")
    parser.add_argument("--mixer_prefill", type=int, default=6_000_000)
    parser.add_argument("--artifact", default=None,
                        help="also report val_bpb of this artifact (model config beside it) per strategy on the sample")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="bench/results/eval.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    n_windows = args.windows or (256 if gpu else 8)
    batch = args.batch_seqs or (32 if gpu else 4)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16" else (
        contextlib.nullcontext)
    sl = SlidingConfig(seq_len=2048, stride=64, batch_seqs=batch)

    all_tokens = load_validation_tokens(resolve(SAMPLE_VAL_FILES), sl.seq_len)
    luts = build_byte_luts(load_tokenizer(resolve(SAMPLE_TOKENIZER)), 1024)
    torch.manual_seed(0)
    model = GPT(ModelConfig()).to(device).eval()  # record shape, random init: throughput only
    fwd = torch.compile(model, dynamic=False) if args.compile else model
    rows: list[dict] = []

    # roundtrip -------------------------------------------------------------------------------------------------
    rt_seqs = max(2, batch)
    rt_tokens = all_tokens[: rt_seqs * sl.seq_len + 1]
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def roundtrip():
        Roundtrip(sl.seq_len, batch).score(EvalContext(model, rt_tokens, luts, forward=fwd, device=device,
                                                      autocast_dtype=dtype))

    roundtrip()  # warm-up (and compilation) with the timed shapes
    sec = timed(roundtrip, device)
    rows.append({"strategy": "roundtrip", "tokens": rt_seqs * sl.seq_len, "seconds": sec,
                 "tokens_per_s": rt_seqs * sl.seq_len / sec})

    # sliding: the whole slice, and windows 1..n alone (the steady state: stride new tokens per window forward) ----
    n_sl = sl.seq_len + n_windows * sl.stride
    sl_tokens = all_tokens[: n_sl + 1]
    w = sliding_windows(n_sl, sl.seq_len, sl.stride)
    later = Windows(w.start[1:], w.score_from[1:], w.end[1:])

    def later_windows():
        scorer = Scorer(sl_tokens, luts, device)
        score_windows(fwd, scorer.tokens, later, scorer, sl.seq_len, sl.batch_seqs, autocast)

    for _ in range(2):  # the second pass is timed: warm-up and compilation of every batch shape first
        ctx = EvalContext(model, sl_tokens, luts, forward=fwd, device=device, autocast=autocast)
        sec = timed(lambda: Sliding(sl).score(ctx), device)
        steady_sec = timed(later_windows, device)
    window_s = steady_sec / n_windows
    rows.append({"strategy": "sliding", "tokens": n_sl, "windows": n_windows + 1, "seconds": sec,
                 "tokens_per_s": n_sl / sec, "steady_tokens_per_s": sl.stride / window_s,
                 "window_forward_s": window_s})

    # ttt: training throughput at one rank's share of a chunk, plus one full protocol run on a small stream -------
    seqs_per_rank = max(1, args.ttt_chunk // sl.seq_len // RANKS)
    tr_tokens = all_tokens[: seqs_per_rank * sl.seq_len + 1]
    compile_model = (lambda m: torch.compile(m, dynamic=False)) if args.compile else None
    trainer = TestTimeTrainer(EvalContext(model, tr_tokens, luts, device=device, autocast=autocast,
                                          compile_fn=compile_model),
                              TTTConfig(chunk_tokens=seqs_per_rank * sl.seq_len, epochs=1, batch_seqs=seqs_per_rank),
                              sl)
    trainer.train_chunk(0)  # warm-up
    train_s = timed(lambda: trainer.train_chunk(0), device)
    train_tps = seqs_per_rank * sl.seq_len / train_s
    n_ttt = sl.seq_len + n_windows * sl.stride
    ttt_tokens = all_tokens[: n_ttt + 1]
    ttt_cfg = TTTConfig(chunk_tokens=sl.seq_len, epochs=args.ttt_epochs, batch_seqs=seqs_per_rank)
    for _ in range(2):  # the second run is timed (the first compiles when --compile)
        ttt_ctx = EvalContext(model, ttt_tokens, luts, device=device, autocast=autocast, compile_fn=compile_model)
        sec = timed(lambda: TestTimeTrainer(ttt_ctx, ttt_cfg, sl).run(), device)
    rows.append({"strategy": "ttt", "tokens": n_ttt, "seconds": sec, "tokens_per_s": n_ttt / sec,
                 "train_tokens_per_s": train_tps, "train_micro_batch_seqs": seqs_per_rank, "epochs": args.ttt_epochs})

    # ngram: mixer overhead per position with random logits, and the store's insert rate ---------------------------
    stream = all_tokens
    if args.mixer_shard:  # a larger stream so the lookups run against a store of realistic size
        stream = torch.from_numpy(np.asarray(load_shard(args.mixer_shard)).astype(np.int64))
    start = min(args.mixer_prefill, stream.numel() - 1 - args.mixer_tokens) if args.mixer_shard else 0
    args.mixer_tokens = min(args.mixer_tokens, stream.numel() - 1 - start)
    stream = stream.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(2048, 1024, device=device, generator=g) * 3
    blocks = [torch.arange(s, min(s + 2048, start + args.mixer_tokens), device=device)
              for s in range(start, start + args.mixer_tokens, 2048)]

    def feed(mixers):
        sc = Scorer(stream, luts, device, mixers=mixers, store=NgramStoreConfig())
        first = timed(lambda: sc.score(blocks[0], logits[: blocks[0].numel()]), device)  # includes the prefill
        rest = timed(lambda: [sc.score(b, logits[: b.numel()]) for b in blocks[1:]], device)
        return first, rest, sc

    base_first, base_rest, _ = feed([])
    mix_first, mix_rest, sc = feed([NgramConfig()])
    scored = sum(b.numel() for b in blocks[1:])
    per_pos = (mix_rest - base_rest) / scored
    if start:
        insert_rate = start / max(mix_first - base_first, 1e-9)
        store_bytes = sc.store.nbytes / sc.store.num_inserted
    else:
        train_np = np.concatenate([np.asarray(load_shard(f)) for f in find_shards(resolve(SAMPLE_TRAIN_FILES))])
        ins = min(args.insert_tokens, train_np.size - 1)
        store = NgramStore(train_np, 1024, range(2, 8))
        t0 = time.perf_counter()
        store.advance_to(ins)
        insert_rate = ins / (time.perf_counter() - t0)
        store_bytes = store.nbytes / ins
    steady = 1.0 / (window_s / sl.stride + per_pos)  # sliding + mixer, per rank
    rows.append({"strategy": "ngram", "tokens": scored, "seconds": mix_rest, "tokens_per_s": scored / mix_rest,
                 "steady_tokens_per_s": steady, "extra_s_per_token": per_pos, "store_tokens": start,
                 "insert_tokens_per_s": insert_rate, "store_bytes_per_token": store_bytes})

    projection = project(rows, sl, args.ttt_chunk, args.ttt_epochs)
    result = {"device": torch.cuda.get_device_name(device) if gpu else (platform.processor() or "cpu"),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "precision": args.precision,
              "compile": args.compile, "batch_seqs": batch, "rows": rows, "projection_8_ranks": projection}
    if args.artifact:
        result["val_bpb"] = quality(args.artifact, device)
    print_table(result)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


def project(rows: list[dict], sl: SlidingConfig, chunk: int, epochs: int) -> dict:
    """Seconds for the full eval on RANKS ranks, from this machine's per-rank rates."""
    r = {row["strategy"]: row for row in rows}
    windows = len(sliding_windows(FULL_TARGETS, sl.seq_len, sl.stride))
    per_rank_windows = math.ceil(windows / RANKS)
    sliding_s = per_rank_windows * r["sliding"]["window_forward_s"]
    roundtrip_s = FULL_TARGETS / RANKS / r["roundtrip"]["tokens_per_s"]
    chunks = math.ceil(FULL_TARGETS / chunk)
    train_s = epochs * (FULL_TARGETS - chunk) / RANKS / r["ttt"]["train_tokens_per_s"]
    mixer_s = FULL_TARGETS / RANKS * r["ngram"]["extra_s_per_token"]
    prefill_s = FULL_TARGETS * (RANKS - 1) / RANKS / r["ngram"]["insert_tokens_per_s"]  # the last rank's catch-up
    out = {
        "windows": windows,
        "roundtrip_s": roundtrip_s,
        "sliding_s": sliding_s,
        "ttt_s": sliding_s + train_s,
        "ttt_train_s": train_s,
        "ttt_chunks": chunks,
        "ngram_extra_s": mixer_s + prefill_s,
        "ngram_prefill_last_rank_s": prefill_s,
        "sliding_ngram_s": sliding_s + mixer_s + prefill_s,
        "ttt_ngram_s": sliding_s + train_s + mixer_s + prefill_s,
        "limit_s": LIMIT_S,
    }
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in out.items()}


def quality(artifact: str, device: torch.device) -> list[dict]:
    """val_bpb of the artifact under each strategy on the bundled sample (via the Evaluator)."""
    from golf_lit.eval.config import EvalConfig
    from golf_lit.eval.evaluator import Evaluator

    cfg = EvalConfig(artifact=artifact, val_files=SAMPLE_VAL_FILES, tokenizer=SAMPLE_TOKENIZER,
                     strategy="roundtrip,sliding,ttt", ngram=True, accelerator=device.type, progress=False)
    report = Evaluator(cfg).run()
    return [{k: r[k] for k in ("name", "val_bpb", "val_loss", "tokens", "seconds")} for r in report["results"]]


def print_table(result: dict) -> None:
    print(f"device: {result['device']}  torch {result['torch']}  threads {result['threads']}  "
          f"precision {result['precision']}  compile {result['compile']}  batch {result['batch_seqs']}")
    print("| strategy | tokens | seconds | tokens/s (slice) | steady state / details |")
    print("|---|---|---|---|---|")
    for row in result["rows"]:
        kind = row["strategy"]
        extra = ""
        if kind == "sliding":
            extra = f"{row['steady_tokens_per_s']:,.0f} tok/s steady ({row['window_forward_s']:.4f} s/window)"
        elif kind == "ttt":
            extra = f"train {row['train_tokens_per_s']:,.0f} tok/s at {row['train_micro_batch_seqs']} seqs"
        elif kind == "ngram":
            extra = (f"sliding+mixer {row['steady_tokens_per_s']:,.0f} tok/s steady; mixer "
                     f"+{row['extra_s_per_token'] * 1e6:.1f} us/token, insert {row['insert_tokens_per_s']:,.0f} "
                     f"tok/s, {row['store_bytes_per_token']:.0f} B/token")
        print(f"| {row['strategy']} | {row['tokens']} | {row['seconds']:.2f} | {row['tokens_per_s']:,.0f} | {extra} |")
    p = result["projection_8_ranks"]
    print(f"projection, {FULL_TARGETS:,} tokens on {RANKS} ranks at these per-rank rates (limit {LIMIT_S:.0f} s):")
    for key in ("roundtrip_s", "sliding_s", "ttt_s", "sliding_ngram_s", "ttt_ngram_s"):
        print(f"  {key:<16} {p[key]:>10.1f} s")
    for row in result.get("val_bpb", []):
        print(f"  {row['name']:<40} val_bpb {row['val_bpb']:.6f}")


if __name__ == "__main__":
    main()
