"""The roundtrip strategy: consecutive non-overlapping ``seq_len`` sequences, split contiguously across ranks.

This is the record's ``final_int6_roundtrip`` evaluation (docs/record-stack.md §10.1): each sequence is scored
from its own start, so early positions of a sequence see little context. Only whole sequences are scored.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf_lit.data.byte_source import ByteSource
from golf_lit.eval.scorer import MODEL
from golf_lit.eval.strategies.base import EvalContext, Strategy
from golf_lit.eval.sums import ScoreSums
from golf_lit.model.losses import token_nll
from golf_lit.ranks import rank_range

if TYPE_CHECKING:
    from golf_lit.eval.config import EvalConfig


@torch.inference_mode()
def score_roundtrip(
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


class Roundtrip(Strategy):
    """``--strategy roundtrip``: whole ``sliding.seq_len`` sequences, ``roundtrip_batch_seqs`` per forward."""

    name = "roundtrip"
    label = "roundtrip"

    def __init__(self, cfg: EvalConfig) -> None:
        self.seq_len = cfg.sliding.seq_len
        self.batch_seqs = cfg.roundtrip_batch_seqs

    def check(self, num_targets: int) -> None:
        if num_targets < self.seq_len:
            raise ValueError(
                f"max_tokens: roundtrip scores whole sequences of sliding.seq_len={self.seq_len} tokens, but the "
                f"stream has only {num_targets} positions; raise --max_tokens or lower --sliding.seq_len"
            )

    def expected_targets(self, num_targets: int) -> int:
        return (num_targets // self.seq_len) * self.seq_len

    def warmup_targets(self, world_size: int) -> int:
        return world_size * self.batch_seqs * self.seq_len

    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        sums = score_roundtrip(ctx.forward, ctx.tokens, ctx.luts, self.seq_len, self.batch_seqs, ctx.device,
                               ctx.rank, ctx.world_size, ctx.autocast_dtype)
        if ctx.progress is not None:
            ctx.progress(int(sums.token_count))
        return {MODEL: sums}

    def settings(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len}
