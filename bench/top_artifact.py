"""Artifact size of the leaderboard-top shapes as configs/top.yaml exports them (#24 item 5; docs/artifact.md).

    PYTHONPATH=. python bench/top_artifact.py                 # writes bench/results/top_artifact.json

Builds the model of ``configs/top.yaml`` (11 x 512, vocab 8192, looping, two lanes, sparse gates: 35,945,623
parameters) at its initialisation, replaces every weight matrix with Gaussian values (see below), and runs the
export's own :func:`golf_lit.artifact.budget.build_artifact` with the config's quantization block, GPTQ off
(round-to-nearest with SDClip: full-Hessian GPTQ of this model takes too long on a CPU), int5 demotion off (so the
all-int6 size is reported, never a demoted one) and every packing asked for (default: the config's own pergroup +
lrzip, and brotli).

Why Gaussian matrices: at initialisation many projections are zero and would compress to nothing. With SDClip a
row's step is ``k * std(row) / qmax``, so the integer codes of any Gaussian row have the same distribution
whatever its std: the size measured here is that of Gaussian weights under the record's clip widths. Trained
weights have heavier tails than a Gaussian of the same std, which puts more of their codes near zero (smaller
entropy), so this is an estimate from above for the int6/int7 codes; the LQER factors and scales are measured
as they come out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from golf_lit.artifact.budget import build_artifact
from golf_lit.artifact.code_bytes import count_code_bytes
from golf_lit.artifact.quantize import QuantConfig
from golf_lit.io import atomic_write_json
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT


def top_configs(path: Path) -> tuple[dict, dict]:
    """The model block and the ArtifactExport quant block of a fit config."""
    cfg = yaml.safe_load(path.read_text())
    model = {k: v for k, v in cfg["model"].items() if k != "optim"}
    quant = next(c["init_args"]["quant"] for c in cfg["trainer"]["callbacks"]
                 if c["class_path"].endswith("ArtifactExport"))
    return model, quant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/top.yaml")
    parser.add_argument("--packings", default="pergroup,brotli", help="comma-separated; pergroup uses the config's "
                        "pergroup_backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/top_artifact.json")
    args = parser.parse_args()
    model_opts, quant_opts = top_configs(Path(args.config))
    torch.manual_seed(args.seed)
    fields = set(ModelConfig.__dataclass_fields__)
    model = GPT(ModelConfig(**{k: v for k, v in model_opts.items() if k in fields}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and p.numel() >= 65_536:
                p.normal_(0.0, 0.02)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = sum(p.numel() for p in model.parameters())
    from golf_lit.runs.pack.build import build_packed

    readable = count_code_bytes("auto").total  # the package's scorer sources as they are
    seq_len = int(yaml.safe_load(Path(args.config).read_text())["data"]["train_seq_len"])
    packed = len(build_packed(model.cfg, seq_len).script)  # quant.code_bytes: packed
    rows = []
    for packing in [p for p in args.packings.split(",") if p]:
        opts = {**quant_opts, "gptq": False, "compressor": packing, "int5_demotion": False}
        cfg = QuantConfig(**opts)
        t0 = time.perf_counter()
        result = build_artifact(sd, QuantConfig(**{**opts, "code_bytes": 0}), 0)
        limit = cfg.artifact_limit_bytes
        row = {"packing": packing, "backend": cfg.pergroup_backend if packing == "pergroup" else None,
               "bytes_model": result.bytes_model, "code_readable": readable, "code_packed": packed,
               "total_readable": result.bytes_model + readable, "total_packed": result.bytes_model + packed,
               "fits_packed": result.bytes_model + packed <= limit, "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(row, flush=True)
    atomic_write_json(Path(args.out), {"config": args.config, "parameters": params, "quant": quant_opts,
                                       "gptq": False, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
