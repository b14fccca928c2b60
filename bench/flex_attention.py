"""Document-masked attention through flex_attention on a GPU (docs/model.md, "Record-equal options").

    python bench/flex_attention.py                     # prints a table, writes bench/results/flex_attention.json

1. Agreement: a small top-option GPT (GQA, XSA, sparse gate, looping, two lanes) on packed 4,096-token rows, bf16
   autocast, attention_backend 'flex' against 'sdpa' (dense boolean mask): max |Δ logit| and the relative
   difference of the parameter gradients.
2. Scale: one top-shaped attention layer (8 query / 4 KV heads of 64) on one packed row of 98,304 tokens with
   documents cut at 2,048 (the record's training row), forward + backward through the compiled flex kernel:
   milliseconds per call and peak memory, over several document layouts (a new layout must not recompile:
   the dynamo frame count is printed before and after).
Needs CUDA. Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from golf_lit.model.attention import CausalSelfAttention, Segments, document_block_mask
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.model.layers import segment_positions


def layout(T: int, seed: int, max_len: int = 2048) -> torch.Tensor:
    """cu_seqlens of one row of T tokens: random document lengths (geometric, mean ~600), cut at max_len."""
    g = torch.Generator().manual_seed(seed)
    starts, t = [], 0
    while t < T:
        starts.append(t)
        n = int(torch.empty(1).exponential_(1 / 600, generator=g).item()) + 1
        t += min(n, max_len)
    return torch.tensor([*starts, T], dtype=torch.int32)


def agreement(device: torch.device) -> dict:
    kw = dict(
        vocab_size=1024, num_layers=6, model_dim=256, num_heads=4, num_kv_heads=2, mlp_mult=4.0, rope_dims=16,
        rope_yarn=False, qk_gain_init=5.0, xsa_last_n=6, value_residual=False, attn_gate_variant="sparse",
        sparse_attn_gate_scale=0.5, leaky_slope=0.5, smear_gate_variant="gated_bos", bigram_vocab_size=0,
        skip_gates_enabled=True, num_loops=1, loop_start=2, loop_end=3, parallel_start_layer=4,
    )  # fmt: skip
    torch.manual_seed(0)
    sdpa = GPT(ModelConfig(**kw, attention_backend="sdpa")).to(device)
    flex = GPT(ModelConfig(**kw, attention_backend="flex")).to(device)
    flex.load_state_dict(sdpa.state_dict())
    B, T = 2, 4096
    ids = torch.randint(2, 1024, (B, T), device=device)
    cu = torch.cat([layout(T, 1), layout(T, 2)[1:] + T]).to(device)
    ids.view(-1)[cu[:-1].long()] = 1
    out = {}
    for name, model in (("sdpa", sdpa), ("flex", flex)):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids, cu)
        logits.float().square().mean().backward()
        out[name] = (logits.detach().float(), [p.grad.float() for p in model.parameters()])
    dl = (out["flex"][0] - out["sdpa"][0]).abs().max().item()
    g_rel = max(((a - b).norm() / b.norm().clamp_min(1e-12)).item() for a, b in zip(out["flex"][1], out["sdpa"][1]))
    return {"max_abs_logit_diff": dl, "max_rel_grad_diff": g_rel, "logit_scale": out["sdpa"][0].abs().max().item()}


def scale(device: torch.device, T: int, layouts: int) -> dict:
    cfg = ModelConfig(
        vocab_size=8192, model_dim=512, num_heads=8, num_kv_heads=4, rope_yarn=False, value_residual=False,
        attention_backend="flex", attn_gate_variant="sparse",
    )  # fmt: skip
    attn = CausalSelfAttention(cfg, 10).to(device)
    u = torch.randn(1, T, 512, device=device, dtype=torch.bfloat16, requires_grad=True)
    frames = counters["stats"]["unique_graphs"]
    times, peaks = [], []
    for i in range(layouts + 1):  # the first call compiles
        cu = layout(T, 100 + i).to(device)
        segment, _ = segment_positions(cu, 1, T)
        seg = Segments(cu, segment, None, 2048, document_block_mask(segment))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, _ = attn(u, None, seg)
        y.float().square().mean().backward()
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t0))
        peaks.append(torch.cuda.max_memory_allocated() / 2**30)
    return {
        "T": T, "first_call_ms": times[0], "ms_per_call": sorted(times[1:])[len(times[1:]) // 2],
        "peak_gib": max(peaks[1:]), "unique_graphs_before": frames,
        "unique_graphs_after": counters["stats"]["unique_graphs"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=98_304)
    parser.add_argument("--layouts", type=int, default=4)
    parser.add_argument("--out", default="bench/results/flex_attention.json")
    args = parser.parse_args()
    device = torch.device("cuda")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    result["agreement"] = agreement(device)
    print("agreement", result["agreement"], flush=True)
    result["scale"] = scale(device, args.tokens, args.layouts)
    print("scale", result["scale"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
