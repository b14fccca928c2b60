"""Training step time of a model config on this machine (table + JSON).

    python bench/train_step.py                        # the smoke model on CPU (--shape tiny, the default)
    python bench/train_step.py --shape record         # record config, 1 GPU (grad accumulation 8), compiled
    python bench/train_step.py --shape record --no-compile --steps 5
    python bench/train_step.py --rounds 3 --json      # Lightning and a plain PyTorch loop, interleaved
    python bench/train_step.py --profile              # + torch.profiler trace, top kernels, time shares
    python bench/train_step.py --compare --rounds 0   # base vs leaderboard-top training stack (and looping)
    python bench/train_step.py --top --model.num_loops 2 --model.loop_start 3 --model.loop_end 5 --looping

With ``--rounds R`` (default 2) the base variant's model and optimizers also run R blocks of ``--steps`` through
golf-lit's Lightning stack and R blocks in a plain PyTorch loop written here (forward, backward, clip, Muon +
AdamW, EMA), alternating, so both see the same machine state; each reports ms/step, tokens/s, peak memory and MFU
(FLOPs per token: 6 * N_matmul + 6 * L * T * d, see docs/training.md; peak 989.5 TFLOP/s, H100 bf16 dense, or
``--peak-tflops``). ``--rounds 0`` is the Lightning-only measurement.

Runs ``--priming`` compile-priming steps (not timed), then ``--steps`` timed optimizer steps through the real
Lightning stack (GolfLM, GolfDataModule on the bundled sample, WallClockLimit clock) and reports the mean step
time, tokens/s and peak GPU memory. On one GPU a record step is 8 micro-batches of 48 x 2048 tokens, i.e. the
work one of 8 GPUs does in 8 record steps; ``micro_batch_ms`` (= step / grad_accum) is therefore the compute
part of an 8xH100 step (DDP's all-reduce comes on top).

``--top`` uses the leaderboard top's training stack (docs/top-stack.md §4, §8): Polar Express + MuonEq-R, its
learning rates, weight decays and beta2, and document packing, plus the top's model options that this
checkout's ``ModelConfig`` knows (the others are listed as skipped). The vocabulary stays 1024 (the bundled
sample). ``--compare`` runs base, top, and top with looping on when the model supports it. Any
``--model.<field> VALUE`` / ``--model.optim.<field> VALUE`` (YAML values) overrides every variant, so a model
option can be timed without editing this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import platform
import time
from pathlib import Path

import torch
import yaml
from golf_lit.callbacks import CompilePriming, WallClockLimit

from golf_lit.data.datamodule import GolfDataModule
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES
from golf_lit.io import atomic_write_json
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.optim.config import OptimConfig
from golf_lit.train.module import GolfLM

try:  # `python bench/train_step.py` puts bench/ on the path; `python -m bench.train_step` needs the package form
    from train_step_compare import add_compare_args, bench_trainer, compare, print_compare, profile_plain
except ImportError:
    from bench.train_step_compare import add_compare_args, bench_trainer, compare, print_compare, profile_plain

TINY = dict(
    num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2, xsa_last_n=2, bigram_vocab_size=1024, bigram_dim=64
)

# Leaderboard top (docs/top-stack.md §8), training side: optimizer settings.
TOP_OPTIM = dict(
    matrix_lr=0.026,
    tied_embed_lr=0.03,
    scalar_lr=0.02,
    muon_momentum=0.97,
    muon_wd=0.095,
    adam_wd=0.02,
    embed_wd=0.085,
    beta2=0.99,
    ns_coefficients="polar_express",
    muon_row_normalize=True,
)
# Model side (vocab stays 1024: the bench trains on the bundled sp1024 sample). Fields this checkout's
# ModelConfig lacks are skipped and reported.
TOP_MODEL = dict(
    mlp_mult=4.0,
    qk_gain_init=5.0,
    rope_train_seq_len=2048,
    rope_yarn=False,
    leaky_slope=0.5,
    value_residual=False,
    bigram_vocab_size=0,
    gated_attention=True,
    attn_gate_variant="sparse",
    sparse_attn_gate_scale=0.5,
    smear_gate=True,
    smear_gate_variant="gated_bos",
    skip_gates_enabled=True,
    parallel_start_layer=8,
    num_loops=2,
    loop_start=3,
    loop_end=5,
)
TOP_TINY_MODEL = dict(TOP_MODEL, parallel_start_layer=1, loop_start=0, loop_end=0)  # fits 2 layers


def parse_overrides(extra: list[str]) -> tuple[dict, dict]:
    """``--model.<field> V`` and ``--model.optim.<field> V`` pairs (V read as YAML) -> (model, optim) dicts."""
    model, optim = {}, {}
    if len(extra) % 2:
        raise SystemExit(f"overrides come in '--model.<field> VALUE' pairs, got {extra}")
    for key, value in zip(extra[::2], extra[1::2]):
        if key.startswith("--model.optim."):
            optim[key[len("--model.optim.") :]] = yaml.safe_load(value)
        elif key.startswith("--model."):
            model[key[len("--model.") :]] = yaml.safe_load(value)
        else:
            raise SystemExit(f"unknown argument {key!r} (overrides are --model.<field> / --model.optim.<field>)")
    return model, optim


def known(fields: dict, cls) -> tuple[dict, list[str]]:
    """Split ``fields`` into those ``cls`` (a dataclass) has and the names of those it lacks."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in fields.items() if k in names}, sorted(set(fields) - names)


def run_variant(name: str, args, model_kw: dict, optim_kw: dict, packing: bool, looping: bool) -> tuple:
    """Time ``args.steps`` steps of one configuration; returns its report row, the module and the data."""
    cuda = torch.cuda.is_available()
    seq_len, batch_tokens = (256, 4096) if args.tiny else (2048, 786_432)
    grad_accum = args.grad_accum or (1 if args.tiny else 8)
    module = GolfLM(optim=OptimConfig(**optim_kw), compile=not args.no_compile and cuda, **model_kw)
    if hasattr(module.gpt, "set_looping"):
        module.gpt.set_looping(looping)
    elif looping:
        raise SystemExit("--looping: this checkout's GPT has no set_looping")
    data = GolfDataModule(
        SAMPLE_TRAIN_FILES,
        SAMPLE_VAL_FILES,
        SAMPLE_TOKENIZER,
        train_batch_tokens=batch_tokens,
        train_seq_len=seq_len,
        grad_accum_steps=grad_accum,
        val_max_tokens=seq_len,
        document_packing=packing,
        max_segment_len=seq_len,  # record: 2048-token segments in 98,304-token rows
    )
    clock = WallClockLimit(None)
    trainer = bench_trainer(args.steps, [CompilePriming(args.priming), clock], cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.fit(module, data)
    wall = time.perf_counter() - t0
    step_ms = clock.elapsed_ms / args.steps
    row = {
        "variant": name,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "config": "tiny" if args.tiny else "record",
        "params": module.gpt.num_parameters(),
        "compile": module.compile,
        "attention": "fa3"
        if (cuda and __import__("golf_lit.model.attention", fromlist=["x"]).flash_attn_3())
        else "sdpa",
        "packing": packing,
        "looping": looping,
        "grad_accum": grad_accum,
        "tokens_per_step": batch_tokens,
        "steps": args.steps,
        "step_ms": round(step_ms, 2),
        "micro_batch_ms": round(step_ms / grad_accum, 2),
        "tokens_per_s": round(batch_tokens / (step_ms / 1000.0)),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "wall_s_incl_priming": round(wall, 1),
    }
    return row, module, data, (batch_tokens, seq_len, grad_accum, step_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--priming", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="the smoke model and batch (same as --shape tiny)")
    add_compare_args(parser)
    parser.add_argument("--grad-accum", type=int, default=None)
    parser.add_argument("--top", action="store_true", help="the leaderboard top's training stack")
    parser.add_argument("--looping", action="store_true", help="turn the model's layer looping on (needs set_looping)")
    parser.add_argument("--compare", action="store_true", help="base vs top vs top with looping on")
    parser.add_argument("--only", default=None, help="with --compare: comma-separated variants to run")
    parser.add_argument("--packing", choices=("auto", "on", "off"), default="auto",
                        help="document packing in the top variants (auto: off on a GPU without FlashAttention-3)")
    parser.add_argument("--out", default="bench/results/train_step.json")
    args, extra = parser.parse_known_args()
    args.tiny = args.tiny or args.shape == "tiny"
    model_over, optim_over = parse_overrides(extra)
    unknown = [f"model.{k}" for k in known(model_over, ModelConfig)[1]]
    unknown += [f"model.optim.{k}" for k in known(optim_over, OptimConfig)[1]]
    if unknown:
        raise SystemExit(f"unknown override(s) {unknown}: not fields of this checkout's ModelConfig / OptimConfig")

    base_model = dict(TINY) if args.tiny else {}
    top_model, skipped = known(TOP_TINY_MODEL if args.tiny else TOP_MODEL, ModelConfig)
    if torch.cuda.is_available() and "fused_ce_enabled" in {f.name for f in dataclasses.fields(ModelConfig)}:
        top_model["fused_ce_enabled"] = True  # Triton kernel: GPU only
    top_model = {**base_model, **top_model}
    # packing needs a model that takes cu_seqlens (GPT.forward(input_ids, cu_seqlens=None, ...))
    packing_ok = "cu_seqlens" in inspect.signature(GPT.forward).parameters
    if args.packing == "off":
        packing_ok = False
    elif args.packing == "auto" and torch.cuda.is_available():
        from golf_lit.model.attention import flash_attn_3

        if flash_attn_3() is None:  # without FA3's varlen kernel a packed 98,304-token row needs an O(T^2) mask
            packing_ok = False
            print("document packing: off on this GPU (FlashAttention-3 not installed; --packing on forces it)")
    looping_ok = hasattr(GPT, "set_looping")
    if skipped:
        print(f"top model fields not in this checkout's ModelConfig (skipped): {', '.join(skipped)}")
    if "cu_seqlens" not in inspect.signature(GPT.forward).parameters:
        print("document packing: off (this checkout's GPT.forward takes no cu_seqlens)")

    variants = []  # name, model kw, optim kw, packing, looping
    if args.compare:
        variants.append(("base", base_model, {}, False, False))
        variants.append(("top", top_model, TOP_OPTIM, packing_ok, False))
        if looping_ok:
            variants.append(("top+looping", top_model, TOP_OPTIM, packing_ok, True))
        else:
            print("looping: skipped (this checkout's GPT has no set_looping)")
    elif args.top:
        variants.append(("top", top_model, TOP_OPTIM, packing_ok, args.looping))
    else:
        variants.append(("base", base_model, {}, False, args.looping))

    if args.only:
        variants = [v for v in variants if v[0] in args.only.split(",")]
    rows = []
    for name, m, o, packing, looping in variants:
        row, module, data, (batch_tokens, seq_len, grad_accum, step_ms) = run_variant(
            name, args, {**m, **model_over}, {**o, **optim_over}, packing, looping
        )
        print(f"variant: {row}", flush=True)
        if args.rounds > 0 and not packing:  # Lightning vs plain loop, interleaved, on this variant's module
            row["compare"] = compare(args, module, data, m, batch_tokens, seq_len, grad_accum, step_ms)
        if args.profile and not packing:
            row["profile"] = profile_plain(args, module, data, grad_accum)
        rows.append(row)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=1))
    else:
        keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)]
        print("| " + " | ".join(keys) + " |")
        print("|" + "---|" * len(keys))
        for row in rows:
            print("| " + " | ".join(str(row[k]) for k in keys) + " |")
        for row in rows:
            if "compare" in row:
                print(f"\n{row['variant']}:")
                print_compare(row["compare"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, rows[0] if len(rows) == 1 else rows)


if __name__ == "__main__":
    main()
