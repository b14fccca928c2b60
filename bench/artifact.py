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
golf-lit's reader (:func:`golf_lit.quant.compression.decompress`).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import zstandard

from golf_lit.config import ModelConfig
from golf_lit.data.shards import TokenStream
from golf_lit.io import atomic_write_json
from golf_lit.losses import mean_nll
from golf_lit.model.gpt import GPT
from golf_lit.optim.config import OptimConfig
from golf_lit.optim.param_groups import build_optimizers
from golf_lit.paths import SAMPLE_TRAIN_FILES, resolve
from golf_lit.quant.code_bytes import count_code_bytes
from golf_lit.quant.compression import compress, decompress
from golf_lit.quant.container import deserialize, serialize
from golf_lit.quant.quantize import QuantConfig, quantize_state_dict


def _train(model: GPT, steps: int, seq_len: int = 256, seqs: int = 4) -> list[float]:
    stream = TokenStream(resolve(SAMPLE_TRAIN_FILES))
    optimizers = build_optimizers(model, OptimConfig())
    losses = []
    for step in range(steps):
        x, y = stream.micro_batch(step, seq_len * seqs, seq_len)
        loss = mean_nll(model(x), y)
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/artifact.json")
    parser.add_argument("--levels", default="1,2,16,17,19,22", help="comma-separated zstd levels")
    parser.add_argument("--noise-std", type=float, default=0.175)
    parser.add_argument("--trained-steps", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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
    code = count_code_bytes("auto")
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
