"""Full-Hessian GPTQ and SDClip row scales (docs/top-stack.md §5.1-5.3).

GPTQ (Frantar et al. 2022; in Parameter Golf from PRs #634/#1019 via the 0329-GPTQ record): quantize one column
at a time and push its rounding error onto the columns not yet quantized, weighted by the inverse Hessian of the
layer's inputs, so the layer output ``W X`` moves as little as possible. SDClip (0405-SDClip, PR #1394): the row
scale is ``k * std(row) / q_max`` instead of a clip search.
"""

from __future__ import annotations

import torch
from torch import Tensor


def qmax_of(bits: int) -> int:
    """Largest code of a symmetric ``bits``-bit quantizer: 2^(bits-1) - 1 (31 for int6, 63 for int7)."""
    return (1 << (bits - 1)) - 1


def sdclip_scales(w: Tensor, k: float, qmax: int) -> Tensor:
    """SDClip row scales: ``fp16(max(k * std(W_r) / qmax, 1e-10))`` (std with Bessel's correction, as torch.std).

    Args:
        w: 2-D weight (rows = output channels).
        k: Clip in standard deviations of the row.
        qmax: Largest code.

    Returns:
        fp16 scales, one per row.
    """
    return (k * w.float().std(dim=1) / qmax).clamp_min(1e-10).to(torch.float16)


def amax_scales(w: Tensor, qmax: int) -> Tensor:
    """Row scales ``fp16(max(max|W_r| / qmax, 1e-10))`` (no clipping)."""
    return (w.float().abs().amax(dim=1) / qmax).clamp_min(1e-10).to(torch.float16)


def quantize_rtn(w: Tensor, scale: Tensor, qmax: int) -> Tensor:
    """Round to nearest with given row scales: ``clamp(round(W / s_r), -qmax, qmax)`` as int8."""
    return torch.clamp(torch.round(w.float() / scale.float()[:, None]), -qmax, qmax).to(torch.int8)


def gptq_quantize(
    w: Tensor,
    hessian: Tensor,
    scale: Tensor,
    qmax: int,
    *,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = True,
) -> Tensor:
    """GPTQ codes for ``w`` with fixed row scales (docs/top-stack.md §5.1).

    Dead inputs (H_jj = 0) get H_jj = 1 and a zero weight column; ``damp * mean(diag H)`` is added to the
    diagonal; with ``act_order`` columns are processed by descending diag(H); the upper Cholesky factor of
    H^-1 drives the error propagation inside and across blocks of ``block_size`` columns.

    Args:
        w: 2-D weight (rows, cols).
        hessian: (cols, cols) input second moment ``sum X^T X / #batches``.
        scale: fp16 row scales (kept: GPTQ only chooses the codes).
        qmax: Codes lie in [-qmax, qmax].
        block_size: Columns per lazy-update block.
        damp: Relative diagonal damping.
        act_order: Quantize columns in order of descending Hessian diagonal.

    Returns:
        int8 codes of ``w``'s shape, columns in the original order.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the column loop is ~100x faster on a GPU
    W = w.detach().float().clone().to(device)
    H = hessian.detach().float().clone().to(device)
    cols = W.shape[1]
    if H.shape != (cols, cols):
        raise ValueError(f"gptq: Hessian of shape {tuple(H.shape)} for a weight with {cols} columns")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols, device=W.device)
    W, H = W[:, perm], H[perm][:, perm]
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    U = torch.linalg.cholesky(hinv, upper=True)
    s = scale.float().to(W.device)[:, None]
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = W1[:, i : i + 1]
            q = torch.clamp(torch.round(col / s), -qmax, qmax)
            Q[:, i1 + i : i1 + i + 1] = q
            err = (col - q * s) / U1[i, i]
            W1[:, i:] -= err @ U1[i : i + 1, i:]
            E1[:, i : i + 1] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return Q[:, torch.argsort(perm)].to(torch.int8).cpu().contiguous()
