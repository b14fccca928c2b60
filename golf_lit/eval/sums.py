"""Float64 score sums shared by every evaluation strategy."""

from __future__ import annotations

from dataclasses import dataclass

from golf_lit.bpb import bpb_from_sums


@dataclass
class ScoreSums:
    """Summed NLL (nats), scored-token and byte counts; add them across batches and ranks, convert once."""

    nll_sum: float = 0.0
    token_count: float = 0.0
    byte_count: float = 0.0

    def __add__(self, other: ScoreSums) -> ScoreSums:
        return ScoreSums(
            self.nll_sum + other.nll_sum, self.token_count + other.token_count, self.byte_count + other.byte_count
        )

    @property
    def val_loss(self) -> float:
        """Mean NLL per token in nats."""
        return bpb_from_sums(self.nll_sum, self.token_count, self.byte_count)[0]

    @property
    def val_bpb(self) -> float:
        """Bits per byte."""
        return bpb_from_sums(self.nll_sum, self.token_count, self.byte_count)[1]
