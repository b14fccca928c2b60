"""Losses on logits: per-token NLL (for evaluation) and the mean training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-token negative log-likelihood in nats, computed in fp32.

    Args:
        logits: (..., V) logits (already softcapped by the model).
        targets: (...) target ids.

    Returns:
        fp32 tensor of the targets' shape.
    """
    flat = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
    return flat.reshape(targets.shape)


def mean_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over all positions in fp32 (the training loss, docs/record-stack.md §4.1 step 6)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


FUSED_CE_BLOCK = 1024
"""Columns per block of the fused softcapped cross-entropy (the record's Triton kernel streams 1,024 at a time)."""


class _SoftcappedCE(torch.autograd.Function):
    """Mean over rows of ``LSE(z) - z_y`` with z = 2C*sigmoid(2x/C), x the pre-softcap logits.

    ``C*tanh(x/C) = 2C*sigmoid(2x/C) - C`` and softmax ignores the constant, so this is the cross-entropy of the
    softcapped logits. Columns are visited in blocks with an online max / sum-exp; only the per-row LSE (fp32) is
    saved, and backward recomputes sigmoid: dloss/dx_j = g (softmax(z)_j - [j = y]) 4 s_j (1 - s_j).
    Origin: 0423-PolarNS (PR #1787), docs/top-stack.md §4.5.
    """

    @staticmethod
    def forward(ctx, x: Tensor, targets: Tensor, cap: float, block: int) -> Tensor:
        n, v = x.shape
        run_max = torch.full((n,), float("-inf"), device=x.device, dtype=torch.float32)
        run_sum = torch.zeros((n,), device=x.device, dtype=torch.float32)
        for c0 in range(0, v, block):
            z = (2 * cap) * torch.sigmoid(x[:, c0 : c0 + block].float() * (2 / cap))
            new_max = torch.maximum(run_max, z.amax(dim=1))
            run_sum = run_sum * torch.exp(run_max - new_max) + torch.exp(z - new_max[:, None]).sum(dim=1)
            run_max = new_max
        lse = run_max + torch.log(run_sum)
        z_y = (2 * cap) * torch.sigmoid(x.gather(1, targets[:, None]).squeeze(1).float() * (2 / cap))
        ctx.save_for_backward(x, targets, lse)
        ctx.cap, ctx.block = cap, block
        return (lse - z_y).mean()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, targets, lse = ctx.saved_tensors
        cap, block = ctx.cap, ctx.block
        n, v = x.shape
        g = grad_out.float() / n
        grad = torch.empty_like(x)
        cols = torch.arange(v, device=x.device)
        for c0 in range(0, v, block):
            s = torch.sigmoid(x[:, c0 : c0 + block].float() * (2 / cap))
            p = torch.exp((2 * cap) * s - lse[:, None])
            p = p - (cols[None, c0 : c0 + block] == targets[:, None]).float()
            grad[:, c0 : c0 + block] = (g * p * 4 * s * (1 - s)).to(x.dtype)
        return grad, None, None, None


def softcapped_cross_entropy(logits: Tensor, targets: Tensor, cap: float, block: int = FUSED_CE_BLOCK) -> Tensor:
    """Mean cross-entropy of ``cap * tanh(logits / cap)`` without materialising the softcapped logits.

    Args:
        logits: (N, V) pre-softcap logits (any float dtype; the arithmetic is fp32).
        targets: (N,) target ids.
        cap: Softcap C.
        block: Columns per block.

    Returns:
        0-dim fp32 loss, equal to ``mean_nll(cap * tanh(logits / cap), targets)`` up to fp32 rounding.
    """
    return _SoftcappedCE.apply(logits, targets, float(cap), int(block))
