"""Building blocks shared by the model: parameter-free RMSNorm, CastedLinear and partial NTK RoPE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMSNorm over the last dim (eps = dtype default)."""
    return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Linear):
    """Linear layer whose fp32 master weight is cast to the activation dtype at matmul time.

    Keeps optimizer state and weights in fp32 while the forward runs in bf16 (modded-nanogpt / p-golf).
    """

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class Rotary(nn.Module):
    """Partial rotary embedding tables with the NTK-aware base rule (records 2026-03-21 partial RoPE; NTK RoPE).

    Only the first ``rope_dims`` of each head's dims are rotated. For sequences longer than ``ref_seq_len``
    the base becomes ``base * (T / ref_seq_len) ** (rope_dims / (rope_dims - 2))``, so at T=2048 with
    16 dims the effective base is 10000 * 2**(8/7) ~ 22,082 (docs/record-stack.md §4.4). Tables are recomputed on every
    call (a T x rope_dims/2 outer product): there is no cache that could leak inference tensors into a
    later backward pass, and nothing for torch.compile to guard on.

    Args:
        rope_dims: Rotated dims per head (even).
        base: RoPE base before NTK scaling.
        ref_seq_len: NTK reference length (the seed hard-codes 1024).
        ntk_rescale: Apply the NTK base rule (False: the base is used as given at every length; the leaderboard
            top's ``rope_yarn: False``, docs/top-stack.md §3.6).
    """

    def __init__(self, rope_dims: int, base: float, ref_seq_len: int, ntk_rescale: bool = True) -> None:
        super().__init__()
        self.rope_dims = rope_dims
        self.base = base
        self.ref_seq_len = ref_seq_len
        self.ntk_rescale = ntk_rescale

    def inv_freq(self, seq_len: int, device: torch.device | None = None) -> Tensor:
        """Inverse frequencies (fp32, rope_dims/2) for a sequence of ``seq_len`` tokens."""
        rd = self.rope_dims
        base = self.base
        if self.ntk_rescale and seq_len > self.ref_seq_len:
            base = base * ((seq_len / self.ref_seq_len) ** (rd / (rd - 2)))
        return 1.0 / (base ** (torch.arange(0, rd, 2, dtype=torch.float32, device=device) / rd))

    def forward(
        self, seq_len: int, device: torch.device, dtype: torch.dtype, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(cos, sin)`` of shape (1|B, T, 1, rope_dims/2) in ``dtype``.

        ``positions`` (B, T), if given, replaces 0..T-1 (``rope_positions: per_document`` restarts them in every
        segment); the NTK rule still looks at the row length ``seq_len``.
        """
        if positions is not None:
            freqs = positions.to(torch.float32)[..., None] * self.inv_freq(seq_len, device)  # (B, T, rd/2)
            return freqs.cos()[:, :, None, :].to(dtype), freqs.sin()[:, :, None, :].to(dtype)
        positions = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq(seq_len, device))  # (T, rd/2)
        return freqs.cos()[None, :, None, :].to(dtype), freqs.sin()[None, :, None, :].to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``2 * cos.size(-1)`` dims of ``x`` (B, T, H, D) with split-half pairs (i, i + rd/2)."""
    rd = 2 * cos.size(-1)
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    x1, x2 = x_rot[..., : rd // 2], x_rot[..., rd // 2 :]
    rotated = torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
    return torch.cat((rotated, x_pass), dim=-1) if x_pass.size(-1) else rotated


def segment_positions(cu_seqlens: Tensor, batch: int, seq_len: int) -> tuple[Tensor, Tensor]:
    """Segment index and position within its segment of every token of a packed (batch, seq_len) input.

    Args:
        cu_seqlens: int32 starts of the segments of the flattened batch, ending with ``batch * seq_len``
            (trailing repeats of the total, i.e. empty segments, are allowed). Every row start must be a
            segment start.
        batch: Rows B.
        seq_len: Row length T.

    Returns:
        ``(segment, position)``, both int64 (B, T).
    """
    flat = torch.arange(batch * seq_len, device=cu_seqlens.device)
    bounds = cu_seqlens.to(device=flat.device, dtype=torch.int64)
    segment = torch.searchsorted(bounds, flat, right=True) - 1  # last start <= t
    position = flat - bounds[segment]
    return segment.reshape(batch, seq_len), position.reshape(batch, seq_len)
