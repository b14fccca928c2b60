"""The roundtrip strategy: consecutive non-overlapping ``seq_len`` sequences, split contiguously across ranks.

This is the record's ``final_int6_roundtrip`` evaluation (docs/record-stack.md §10.1): each sequence is scored
from its own start, so early positions of a sequence see little context. Only whole sequences are scored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from golf_lit.eval.strategies.base import EvalContext, Strategy
from golf_lit.eval.sums import ScoreSums
from golf_lit.ranks import rank_range

if TYPE_CHECKING:
    from golf_lit.eval.config import EvalConfig


class Roundtrip(Strategy):
    """``--strategy roundtrip``: whole ``seq_len`` sequences (``sliding.seq_len``), ``batch_seqs`` per forward
    (``roundtrip_batch_seqs``).

    Args:
        seq_len: Sequence length.
        batch_seqs: Sequences per forward (the result does not depend on it).
    """

    name = "roundtrip"
    label = "roundtrip"

    def __init__(self, seq_len: int, batch_seqs: int = 32) -> None:
        if seq_len < 1 or batch_seqs < 1:
            raise ValueError(f"roundtrip: seq_len and batch_seqs must be >= 1, got {seq_len} and {batch_seqs}")
        self.seq_len = seq_len
        self.batch_seqs = batch_seqs

    @classmethod
    def from_config(cls, cfg: EvalConfig) -> list[Strategy]:
        return [cls(cfg.sliding.seq_len, cfg.roundtrip_batch_seqs)]

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

    @torch.inference_mode()
    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        """This rank's contiguous share of the ``N // seq_len`` sequences, ``batch_seqs`` per forward."""
        total_seqs = ctx.num_targets // self.seq_len
        start, end = rank_range(total_seqs, ctx.rank, ctx.world_size)
        scorer = ctx.scorer()
        model = ctx.forward
        was_training = ctx.model.training
        ctx.model.eval()
        try:
            for s in range(start, end, self.batch_seqs):
                e = min(s + self.batch_seqs, end)
                x = scorer.tokens[s * self.seq_len : e * self.seq_len].reshape(-1, self.seq_len)
                with ctx.autocast():
                    logits = model(x)
                positions = torch.arange(s * self.seq_len, e * self.seq_len, device=scorer.device)
                scorer.score(positions, logits.reshape(positions.numel(), -1))
        finally:
            ctx.model.train(was_training)
        return scorer.sums()

    def settings(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len}
