"""Non-overlapping evaluation (SPEC §10.1): consecutive seq_len windows, split contiguously across ranks."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from golf_lit.data.byte_source import ByteSource
from golf_lit.eval.sums import ScoreSums
from golf_lit.losses import token_nll


def rank_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous share ``[start, end)`` of ``total`` items for ``rank`` (the seed's split)."""
    return (total * rank) // world_size, (total * (rank + 1)) // world_size


@torch.inference_mode()
def evaluate_standard(
    model: nn.Module,
    val_tokens: Tensor,
    luts: ByteSource,
    seq_len: int,
    batch_seqs: int = 32,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    autocast_dtype: torch.dtype | None = None,
) -> ScoreSums:
    """Score this rank's share of the ``(len(val_tokens) - 1) // seq_len`` non-overlapping sequences.

    Args:
        model: Maps input ids (B, T) to logits (B, T, V).
        val_tokens: 1-D token stream (targets are the stream shifted by one).
        luts: Byte source (LUTs, or the CaseOps sidecar of the same stream).
        seq_len: Sequence length.
        batch_seqs: Sequences per forward.
        device: Where to run the model.
        rank: This process's rank.
        world_size: Number of processes; their sums must be added to get the full score.
        autocast_dtype: Autocast dtype (e.g. torch.bfloat16 on GPU), or None for the weights' dtype.

    Returns:
        This rank's float64 sums.
    """
    total_seqs = (val_tokens.numel() - 1) // seq_len
    start, end = rank_range(total_seqs, rank, world_size)
    luts = luts.to(device)
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    byte_sum = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    device_type = torch.device(device).type
    autocast = (
        torch.autocast(device_type=device_type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    )
    try:
        for s in range(start, end, batch_seqs):
            e = min(s + batch_seqs, end)
            chunk = val_tokens[s * seq_len : e * seq_len + 1].to(device=device, dtype=torch.int64)
            x, y = chunk[:-1].reshape(-1, seq_len), chunk[1:].reshape(-1, seq_len)
            with autocast:
                logits = model(x)
            nll_sum += token_nll(logits, y).to(torch.float64).sum()
            positions = torch.arange(s * seq_len, e * seq_len, device=device).view_as(x)
            byte_sum += luts.bytes_at(positions, x, y).to(torch.float64).sum()
    finally:
        model.train(was_training)
    return ScoreSums(float(nll_sum), float((end - start) * seq_len), float(byte_sum))
