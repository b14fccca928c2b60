"""Artifact size and zstd (de)compression time per level for the record-shaped model (table + JSON).

    python bench/artifact.py                                   # writes bench/results/artifact.json
    python bench/artifact.py --levels 1,16 --trained-steps 5 --out /tmp/artifact.json

The model is the record GPT (27,137,221 parameters) at its initialisation. Init weights compress unrealistically
well (zero-initialised projections, tiny orthogonal matrices), so every 2-D tensor gets Gaussian noise of std
``--noise-std`` added. The default 0.175 is not a measured trained-weight statistic: it was picked so that the
all-int6 artifact lands near the record's logged size (15.92-15.94 MB at zstd-16). Pure noise has no structure
for the higher levels to find, so the gain of 17/19/22 over 1/2 is smaller here than on trained weights.
``--trained-steps N`` then runs N optimizer steps (record optimizers, 4 x 256 tokens of the bundled sample).

Every level compresses the same quantized payload (all int6, no demotion); the decompress column is the time of
golf-lit's reader (:func:`golf_lit.artifact.compression.decompress`).

``--methods`` instead trains a small model (2 layers, width 320: its attention and MLP matrices are large enough to
be quantized) for ``--steps`` steps of 8 x 256 tokens on the bundled sample (cached under runs/quant_bench/, not
committed), calibrates GPTQ on 8 training batches, and tabulates, per quantization method x packing: artifact
bytes, roundtrip val_bpb, quantization tax vs the float model, and seconds (calibration + quantization + packing)::

    python bench/artifact.py --methods --out bench/results/quant_methods.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
import zstandard

from golf_lit.artifact.compression import compress, decompress
from golf_lit.artifact.container import deserialize, serialize
from golf_lit.artifact.quantize import QuantConfig, quantize_state_dict
from golf_lit.data.paths import SAMPLE_TRAIN_FILES, resolve
from golf_lit.data.shards import TokenStream
from golf_lit.io import atomic_write_json
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.model.losses import mean_nll
from golf_lit.optim.config import OptimConfig
from golf_lit.optim.param_groups import build_optimizers
from golf_lit.runs.pack.build import build_record_script


def _train(model: GPT, steps: int, seq_len: int = 256, seqs: int = 4) -> list[float]:
    stream = TokenStream(resolve(SAMPLE_TRAIN_FILES))
    optimizers = build_optimizers(model, OptimConfig())
    device = next(model.parameters()).device
    losses = []
    for step in range(steps):
        x, y = (t.to(device) for t in stream.micro_batch(step, seq_len * seqs, seq_len))
        loss = mean_nll(model(x), y)
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        if (step + 1) % 10 == 0:
            print(f"step:{step + 1}/{steps} train_loss:{losses[-1]}", flush=True)
    return losses


METHODS = {
    "RTN int6 (seed)": {},
    "GPTQ-lite": {"gptq_lite": True},
    "GPTQ+SDClip": {"gptq": True, "sdclip": True},
    "+int7 embeddings": {"gptq": True, "sdclip": True, "embed_bits": 7},
    "+LQER r4 top3": {"gptq": True, "sdclip": True, "embed_bits": 7, "lqer_rank": 4},
}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BENCH_MODEL = {"num_layers": 2, "model_dim": 320, "num_heads": 4, "num_kv_heads": 2, "bigram_vocab_size": 1024,
               "bigram_dim": 64, "xsa_last_n": 2}  # fmt: skip


def _trained(steps: int, cache: Path) -> GPT:
    model = GPT(ModelConfig(**BENCH_MODEL))
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model
    torch.manual_seed(0)
    model = GPT(ModelConfig(**BENCH_MODEL)).to(DEVICE)
    losses = _train(model, steps, seq_len=256, seqs=8)
    model = model.cpu()
    print(f"trained {steps} steps: loss {losses[0]} -> {losses[-1]}", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache)
    return model


def methods_table(args: argparse.Namespace) -> None:
    from golf_lit.eval.standard import evaluate_standard

    from golf_lit.artifact.budget import build_artifact
    from golf_lit.artifact.calibrate import calibrate
    from golf_lit.artifact.quantize import dequantize_state_dict
    from golf_lit.artifact.records import parse_artifact
    from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES
    from golf_lit.data.shards import load_validation_tokens
    from golf_lit.data.tokenizer import build_byte_luts, load_tokenizer

    packings = [p for p in args.packings.split(",") if p]
    model = _trained(args.steps, Path(args.cache))
    luts = build_byte_luts(load_tokenizer(resolve(SAMPLE_TOKENIZER)), 1024)
    val = load_validation_tokens(resolve(SAMPLE_VAL_FILES), 256, args.val_tokens)

    def bpb(m: GPT) -> float:
        return evaluate_standard(m.to(DEVICE), val, luts, 256, 16, DEVICE).val_bpb

    float_bpb = bpb(model)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.to(DEVICE)
    t0 = time.perf_counter()
    hessians = calibrate(model, resolve(SAMPLE_TRAIN_FILES), QuantConfig(gptq_calibration_batches=8,
                         gptq_calibration_tokens=4096, embed_bits=7), 256)  # embed_bits: tok_emb's Hessian too  # fmt: skip  # noqa: E501
    calib_s = time.perf_counter() - t0
    print(f"float val_bpb {float_bpb:.4f}; calibration {calib_s:.1f}s ({len(hessians)} Hessians)", flush=True)
    print(f"{'method':<20} {'packing':<9} {'bytes':>10} {'val_bpb':>8} {'tax':>8} {'quant s':>8} {'pack s':>7}")
    rows = []
    for method, opts in METHODS.items():
        scored: float | None = None
        for packing in packings:
            cfg = QuantConfig(**opts, compressor=packing, zstd_levels=[args.zstd_level], int5_demotion=False,
                              artifact_limit_bytes=10**9, code_bytes=0)  # fmt: skip
            result = build_artifact(sd, cfg, 0, hessians=hessians if cfg.gptq else None)
            w, m = parse_artifact(result.blob, method)
            if scored is None:
                fresh = GPT(ModelConfig(**BENCH_MODEL))
                fresh.load_state_dict(dequantize_state_dict(w, m, fresh.state_dict()), strict=True)
                scored = bpb(fresh)
            quant_s = result.timings["quantize_s"] + (calib_s if cfg.gptq else 0.0)
            row = {"method": method, "packing": packing, "bytes": result.bytes_model, "val_bpb": round(scored, 5),
                   "tax": round(scored - float_bpb, 5), "quantize_s": round(quant_s, 2),
                   "pack_s": round(result.timings["serialize_s"] + result.timings["compress_s"], 2)}  # fmt: skip
            rows.append(row)
            print(f"{method:<20} {packing:<9} {row['bytes']:>10,} {scored:>8.4f} {row['tax']:>+8.4f} "
                  f"{quant_s:>8.2f} {row['pack_s']:>7.2f}", flush=True)  # fmt: skip
    atomic_write_json(Path(args.out), {"model": BENCH_MODEL, "steps": args.steps, "float_val_bpb": float_bpb,
                      "val_tokens": int(val.numel()), "calibration_s": calib_s, "rows": rows})  # fmt: skip
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", action="store_true", help="method x packing table on a trained small model")
    parser.add_argument("--steps", type=int, default=80, help="--methods: training steps of the cached model")
    parser.add_argument("--cache", default="runs/quant_bench/model.pt")
    parser.add_argument("--packings", default="zstd,brotli,lzma,pergroup")
    parser.add_argument("--zstd-level", type=int, default=16)
    parser.add_argument("--val-tokens", type=int, default=65_536)
    parser.add_argument("--out", default="bench/results/artifact.json")
    parser.add_argument("--levels", default="1,2,16,17,19,22", help="comma-separated zstd levels")
    parser.add_argument("--noise-std", type=float, default=0.175)
    parser.add_argument("--trained-steps", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.methods:
        return methods_table(args)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]

    torch.manual_seed(args.seed)
    model = GPT(ModelConfig())
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.add_(torch.randn_like(p) * args.noise_std)
    losses = _train(model, args.trained_steps) if args.trained_steps else []
    sd = model.state_dict()

    cfg = QuantConfig()
    t0 = time.perf_counter()
    w, m = quantize_state_dict(sd, cfg=cfg)
    t1 = time.perf_counter()
    raw = serialize(w, m)
    t2 = time.perf_counter()
    # the counted code: the train_gpt.py generated for the record config (golf_lit.runs.pack)
    record = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "record.yaml").read_text())
    code = SimpleNamespace(total=len(build_record_script(record).script))
    limit = cfg.artifact_limit_bytes - code.total
    formats: dict[str, int] = {}
    for meta in m.values():
        key = meta if isinstance(meta, str) else meta["type"]
        formats[key] = formats.get(key, 0) + 1

    print(f"record model, noise std {args.noise_std}, trained steps {args.trained_steps}; raw payload {len(raw):,} B")
    print(f"quantize {t1 - t0:.2f} s, serialize {t2 - t1:.2f} s; code bytes (auto) {code.total:,}; limit {limit:,} B")
    header = [("level", 5), ("artifact bytes", 15), ("total bytes", 12), ("fits", 5)]
    header += [("compress s", 11), ("decompress s", 13)]
    print(" ".join(f"{name:>{width}}" for name, width in header))
    rows = []
    for level in levels:
        c0 = time.perf_counter()
        blob = compress(raw, level, cfg.zstd_checksum)
        c1 = time.perf_counter()
        back = decompress(blob, f"zstd-{level}")
        c2 = time.perf_counter()
        assert back == raw, f"zstd-{level} roundtrip differs"
        row = {
            "level": level,
            "artifact_bytes": len(blob),
            "total_bytes": len(blob) + code.total,
            "fits": len(blob) <= limit,
            "compress_s": round(c1 - c0, 3),
            "decompress_s": round(c2 - c1, 3),
        }
        rows.append(row)
        print(
            f"{level:>5} {len(blob):>15,} {row['total_bytes']:>12,} {'yes' if row['fits'] else 'no':>5} "
            f"{row['compress_s']:>11.2f} {row['decompress_s']:>13.3f}",
            flush=True,
        )
    l0 = time.perf_counter()
    deserialize(raw, "payload")
    load_s = time.perf_counter() - l0

    result = {
        "model": "record GPT (ModelConfig defaults)",
        "params": sum(t.numel() for t in sd.values()),
        "noise_std": args.noise_std,
        "trained_steps": args.trained_steps,
        "train_losses": losses,
        "seed": args.seed,
        "formats": formats,
        "raw_bytes": len(raw),
        "quantize_s": round(t1 - t0, 3),
        "serialize_s": round(t2 - t1, 3),
        "torch_load_s": round(load_s, 3),
        "code_bytes": code.total,
        "limit_bytes": limit,
        "zstd_checksum": cfg.zstd_checksum,
        "levels": rows,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "zstandard": zstandard.__version__,
        },
    }
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
