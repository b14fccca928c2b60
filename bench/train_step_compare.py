"""Parts of ``bench/train_step.py``: golf-lit through Lightning vs a plain PyTorch loop, MFU, and ``--profile``.

Kept in its own module so the benchmark's main flow stays small. The plain loop does what ``GolfLM`` and the
callbacks do per step (forward/backward per micro-batch, one global clip, lrs and Muon momentum, every optimizer,
EMA) with no Lightning in between; both run on the same module, data stream and precision.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import lightning.pytorch as L
import torch
from golf_lit.callbacks import EMA, WallClockLimit

from golf_lit.data.datamodule import TrainStream
from golf_lit.model.losses import mean_nll
from golf_lit.optim.muon import Muon
from golf_lit.optim.param_groups import build_optimizers
from golf_lit.optim.schedules import muon_momentum

H100_BF16_DENSE_TFLOPS = 989.5
"""NVIDIA H100 SXM peak dense bf16 tensor-core throughput (no sparsity)."""


def add_compare_args(parser) -> None:
    """The benchmark options this module adds."""
    parser.add_argument("--shape", choices=("tiny", "record"), default="tiny", help="tiny: smoke model on CPU")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved Lightning/plain blocks (0: off)")
    parser.add_argument("--ema-decay", type=float, default=0.997, help="EMA decay in both loops")
    parser.add_argument("--peak-tflops", type=float, default=None, help="MFU denominator (default: H100 on GPU)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler trace of the plain loop")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--trace", default="bench/results/train_step_trace.json")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def matmul_params(gpt: torch.nn.Module) -> int:
    """N_matmul: weights used in matrix products per token (every Linear, plus the output head once).

    Embedding lookups (tok_emb as input, bigram.embed) are not matmuls; the tied head reuses tok_emb as a
    (V, d) matrix, so it is counted here once as the head.
    """
    n = sum(m.weight.numel() for m in gpt.modules() if isinstance(m, torch.nn.Linear))
    if getattr(gpt, "lm_head", None) is None:
        n += gpt.tok_emb.weight.numel()
    return n


def flops_per_token(gpt: torch.nn.Module, seq_len: int) -> dict:
    """Training FLOPs per token: 6 * N_matmul + 6 * L * T * d (causal attention, forward + backward).

    With depth recurrence switched on, the repeated blocks run ``num_loops`` more times: their matmul weights and
    their attention count once per virtual layer.
    """
    cfg = gpt.cfg
    n = matmul_params(gpt)
    layers = cfg.num_layers
    loops = getattr(cfg, "num_loops", 0) if getattr(gpt, "looping_active", False) else 0
    if loops:
        repeated = range(cfg.loop_start, cfg.loop_end + 1)
        n += loops * sum(
            m.weight.numel() for i in repeated for m in gpt.blocks[i].modules() if isinstance(m, torch.nn.Linear)
        )
        layers += loops * len(repeated)
    attn = 6 * layers * seq_len * cfg.model_dim
    return {"n_matmul": n, "dense": 6 * n, "attention": attn, "total": 6 * n + attn}


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def bench_trainer(steps: int, callbacks: list, cuda: bool) -> L.Trainer:
    """One device, bf16-mixed on a GPU, ``steps`` optimizer steps, only ``callbacks``: no logs, checkpoints or val."""
    return L.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if cuda else "32-true",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        callbacks=callbacks,
    )


def lightning_block(module, data, steps: int, cuda: bool, ema_decay: float) -> tuple[float, float | None]:
    """ms/step (training clock) and peak GiB of ``steps`` optimizer steps through Lightning (+ EMA)."""
    clock = WallClockLimit(None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = bench_trainer(steps, [clock, EMA(ema_decay)], cuda)
    trainer.fit(module, data)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return clock.elapsed_ms / steps, peak


class PlainLoop:
    """The same training step written directly in PyTorch (no Lightning, no callbacks)."""

    def __init__(self, module, data, grad_accum: int, cuda: bool, ema_decay: float) -> None:
        self.gpt, self.forward, self.cfg = module.gpt, module._forward, module.optim_config
        self.optimizers = build_optimizers(self.gpt, self.cfg)
        self.params = list(self.gpt.parameters())
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.decay, self.cuda, self.step_idx = ema_decay, cuda, 0
        stream = TrainStream(data.stream, 0, grad_accum, data.local_tokens, data.train_seq_len, 0, 1)
        self.batches = iter(stream)
        self.device = next(self.gpt.parameters()).device

    def step(self) -> None:
        x, y = (t.to(self.device, non_blocking=True) for t in next(self.batches))
        n = x.size(0)
        with torch.profiler.record_function("forward_backward"):
            for m in range(n):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                    loss = mean_nll(self.forward(x[m]), y[m])
                (loss / n).backward()
        with torch.profiler.record_function("optimizer"):
            mom = muon_momentum(
                self.step_idx,
                start=self.cfg.muon_momentum_warmup_start,
                end=self.cfg.muon_momentum,
                warmup_steps=self.cfg.muon_momentum_warmup_steps,
            )
            for opt in self.optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"]
                    if isinstance(opt, Muon):
                        group["momentum"] = mom
            if self.cfg.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip_norm)
            for opt in self.optimizers:
                opt.step()
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                torch._foreach_mul_(self.shadow, self.decay)
                torch._foreach_add_(self.shadow, [p.detach().float() for p in self.params], alpha=1.0 - self.decay)
        self.step_idx += 1

    def block(self, steps: int) -> tuple[float, float | None]:
        """ms/step and peak GiB of ``steps`` steps."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        _sync(self.cuda)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync(self.cuda)
        ms = 1000.0 * (time.perf_counter() - t0) / steps
        return ms, (torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None)


def _row(name: str, ms: float, peak: float | None, batch_tokens: int, flops: dict, peak_tflops: float | None) -> dict:
    tflops = flops["total"] * batch_tokens / (ms / 1000.0) / 1e12
    return {
        "loop": name,
        "step_ms": round(ms, 2),
        "tokens_per_s": round(batch_tokens / (ms / 1000.0)),
        "peak_mem_gib": round(peak, 2) if peak is not None else None,
        "model_tflops": round(tflops, 3),
        "mfu": round(tflops / peak_tflops, 4) if peak_tflops else None,
    }


def compare(args, module, data, model_kw, batch_tokens: int, seq_len: int, grad_accum: int, first_ms: float) -> dict:
    """Alternate ``args.rounds`` Lightning and plain-loop blocks of ``args.steps`` steps; rows per block."""
    cuda = torch.cuda.is_available()
    peak_tflops = args.peak_tflops or (H100_BF16_DENSE_TFLOPS if cuda else None)
    flops = flops_per_token(module.gpt, seq_len)
    plain = PlainLoop(module, data, grad_accum, cuda, args.ema_decay)
    plain.step()  # warm-up (the compiled graph is shared with the Lightning path, already primed)
    rows = []
    for r in range(args.rounds):
        ms, peak = lightning_block(module, data, args.steps, cuda, args.ema_decay)
        rows.append({"round": r, **_row("lightning", ms, peak, batch_tokens, flops, peak_tflops)})
        print(f"block: {rows[-1]}", flush=True)  # as measured, so a run cut short still reports
        ms, peak = plain.block(args.steps)
        rows.append({"round": r, **_row("plain", ms, peak, batch_tokens, flops, peak_tflops)})
        print(f"block: {rows[-1]}", flush=True)
    summary = {}
    for name in ("lightning", "plain"):
        ms = sorted(row["step_ms"] for row in rows if row["loop"] == name)
        summary[name] = _row(name, ms[len(ms) // 2], None, batch_tokens, flops, peak_tflops)  # median block
    overhead = summary["lightning"]["step_ms"] / summary["plain"]["step_ms"] - 1.0
    return {
        "flops_per_token": flops,
        "peak_tflops": peak_tflops,
        "rows": rows,
        "median": summary,
        "lightning_overhead": round(overhead, 4),
    }


def print_compare(c: dict) -> None:
    """Markdown table of the interleaved blocks and the medians."""
    keys = ["round", "loop", "step_ms", "tokens_per_s", "peak_mem_gib", "model_tflops", "mfu"]
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in c["rows"]:
        print("| " + " | ".join(str(row.get(k)) for k in keys) + " |")
    for name, row in c["median"].items():
        print(f"| median | {name} | " + " | ".join(str(row.get(k)) for k in keys[2:]) + " |")
    f = c["flops_per_token"]
    print(
        f"\nFLOPs/token {f['total']:,} (6*N_matmul {f['dense']:,} + attention {f['attention']:,}); "
        f"Lightning overhead vs plain loop: {100 * c['lightning_overhead']:+.1f} %"
    )


# Name patterns of the time-share buckets (checked in this order; everything else is "elementwise / other").
CATEGORIES = [
    ("communication", re.compile(r"nccl|all_?reduce|all_?gather|reduce_scatter|broadcast|c10d", re.I)),
    ("attention", re.compile(r"attention|flash|fmha|sdpa", re.I)),  # the head's log_softmax is not attention
    ("matmul", re.compile(r"\b(aten::)?(mm|bmm|addmm|matmul|linear)\b|gemm|cutlass|xmma|wgmma", re.I)),
]


def _self_time(evt, cuda: bool) -> float:
    if cuda:
        return float(getattr(evt, "self_device_time_total", getattr(evt, "self_cuda_time_total", 0.0)))
    return float(evt.self_cpu_time_total)


def _in_optimizer(evt) -> bool:
    p = evt
    while p is not None:
        if p.name == "optimizer" or p.name.startswith("Optimizer.step"):
            return True
        p = p.cpu_parent
    return False


def time_shares(prof, cuda: bool) -> dict:
    """Share of profiled op time per bucket: optimizer (step, clip, EMA), attention, matmul, comm, elementwise."""
    totals: dict[str, float] = {}
    for evt in prof.events():
        if evt.name in ("forward_backward", "optimizer") or evt.name.startswith("ProfilerStep"):
            continue
        t = _self_time(evt, cuda)
        if t <= 0:
            continue
        cat = "optimizer" if _in_optimizer(evt) else next(
            (name for name, rx in CATEGORIES if rx.search(evt.name)), "elementwise / other"
        )
        totals[cat] = totals.get(cat, 0.0) + t
    whole = sum(totals.values()) or 1.0
    return {k: round(v / whole, 4) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def profile_plain(args, module, data, grad_accum: int) -> dict:
    """torch.profiler over ``--profile-steps`` plain-loop steps: a Chrome trace, the top ops, the time shares."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    plain = PlainLoop(module, data, grad_accum, cuda, args.ema_decay)
    plain.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.profile_steps):
            plain.step()
        _sync(cuda)
    Path(args.trace).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(args.trace)
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15))
    shares = time_shares(prof, cuda)
    print("time shares (" + ("device" if cuda else "CPU") + " self time): " + ", ".join(
        f"{k} {100 * v:.1f} %" for k, v in shares.items()
    ))
    top = sorted(prof.key_averages(), key=lambda e: -_self_time(e, cuda))[:15]
    return {
        "trace": args.trace,
        "steps": args.profile_steps,
        "shares": shares,
        "top": [{"name": e.key, "self_ms": round(_self_time(e, cuda) / 1000.0, 3), "calls": e.count} for e in top],
    }
