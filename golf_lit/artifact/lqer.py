"""LQER: a low-rank correction of the quantization error of the worst tensors (docs/top-stack.md §5.4).

Origin: PR #1797 (used by 0427-1851 and TOP). For the ``top_k`` tensors with the largest ``||W - Q s||_F``,
the truncated SVD ``E ~ U_r S_r V_r^T`` gives ``A = U_r S_r`` and ``B = V_r^T``; the dequantized weight is
``Q s + A_hat B_hat``. Packings: asymmetric (A 2-bit codes {-2..1} with one scale max|A|/1.5, B 4-bit codes
[-8, 7] per group of 64 with scale max|g|/7.5), symmetric (both factors ``bits`` per row), or fp32 (bits 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

GROUP = 64


def low_rank(e: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``A = U_r S_r`` (rows x r) and ``B = V_r^T`` (r x cols) of the truncated SVD of ``e`` (fp32)."""
    u, s, vh = torch.linalg.svd(e.float(), full_matrices=False)
    r = min(rank, s.numel())
    return (u[:, :r] * s[:r]).contiguous(), vh[:r].contiguous()


def _codes(x: Tensor, scale: Tensor, lo: int, hi: int) -> Tensor:
    return torch.clamp(torch.round(x / scale), lo, hi).to(torch.int8)


def pack(a: Tensor, b: Tensor, asym: bool, bits: int) -> tuple[dict[str, Tensor], str]:
    """Quantize the factors.

    Returns:
        ``(parts, packing)``: tensors keyed ``A``, ``B``, ``A_scale``, ``B_scale`` (fp32 packing: only A, B) and
        ``"asym"``, ``"sym"`` or ``"fp32"``. Asymmetric packing needs numel(B) divisible by 64, else "sym".
    """
    if bits == 0:
        return {"A": a.float(), "B": b.float()}, "fp32"
    if asym and b.numel() % GROUP == 0:
        sa = (a.abs().max() / 1.5).clamp_min(1e-10).to(torch.float16)
        groups = b.reshape(-1, GROUP)
        sb = (groups.abs().amax(dim=1) / 7.5).clamp_min(1e-10).to(torch.float16)
        qa = _codes(a, sa.float(), -2, 1)
        qb = _codes(groups, sb.float()[:, None], -8, 7).reshape(b.shape)
        return {"A": qa, "B": qb, "A_scale": sa, "B_scale": sb}, "asym"
    qmax = (1 << (bits - 1)) - 1
    parts: dict[str, Tensor] = {}
    for key, f in (("A", a), ("B", b)):
        s = (f.abs().amax(dim=1) / qmax).clamp_min(1e-10).to(torch.float16)
        parts[key], parts[f"{key}_scale"] = _codes(f, s.float()[:, None], -qmax, qmax), s
    return parts, "sym"


def unpack(parts: Mapping[str, Tensor], packing: str) -> Tensor:
    """``A_hat @ B_hat`` (fp32) from packed factors."""
    a, b = parts["A"].float(), parts["B"].float()
    if packing == "asym":
        a = a * parts["A_scale"].float()
        b = (b.reshape(-1, GROUP) * parts["B_scale"].float()[:, None]).reshape(b.shape)
    elif packing == "sym":
        a = a * parts["A_scale"].float()[:, None]
        b = b * parts["B_scale"].float()[:, None]
    elif packing != "fp32":
        raise ValueError(f"unknown LQER packing {packing!r}")
    return a @ b


def choose(errors: Mapping[str, float], top_k: int) -> list[str]:
    """The ``top_k`` names with the largest error norm (ties: earlier name first)."""
    order = sorted(errors, key=lambda n: -errors[n])
    return order[:top_k]


def correct(e: Tensor, rank: int, asym: bool, bits: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Pack the rank-``rank`` correction of error ``e``: ``(parts, meta)`` with meta ``{"packing", "rank"}``."""
    a, b = low_rank(e, rank)
    parts, packing = pack(a, b, asym, bits)
    return parts, {"packing": packing, "rank": int(a.shape[1])}
