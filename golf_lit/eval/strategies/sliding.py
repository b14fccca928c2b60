"""The sliding strategy (docs/record-stack.md §10.2; record 2026-03-19_SlidingWindowEval): windows that score every
token once.

Windows start at 0, stride, 2*stride, ... and span ``seq_len`` inputs (cut at the end of the stream). The first
window scores all of its positions; every later window scores only positions that no earlier window scored,
i.e. ``[end of the previous window, its own end)``, so each position after the first window is predicted
with at least ``seq_len - stride`` tokens of context. Windows that would add nothing (the seed's tail windows,
which re-score the final ``stride`` tokens up to ``seq_len / stride`` times) are not generated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf_lit.eval.scorer import Scorer
from golf_lit.eval.strategies.base import PAD_ID, EvalContext, Strategy
from golf_lit.eval.sums import ScoreSums
from golf_lit.ranks import rank_range

if TYPE_CHECKING:
    from golf_lit.eval.config import EvalConfig

@dataclass(kw_only=True)
class SlidingConfig:
    """Sliding-window scoring (also the windows that score-first TTT scores)."""

    seq_len: int = 2048
    """Window length in tokens (seed EVAL_SEQ_LEN)."""
    stride: int = 64
    """Distance between window starts; each later window scores at most this many new tokens (EVAL_STRIDE)."""
    batch_seqs: int = 32
    """Windows per forward pass (the result does not depend on it)."""

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"sliding.seq_len: must be >= 1, got {self.seq_len}")
        if not 1 <= self.stride <= self.seq_len:
            raise ValueError(f"sliding.stride: must be between 1 and seq_len={self.seq_len}, got {self.stride}")
        if self.batch_seqs < 1:
            raise ValueError(f"sliding.batch_seqs: must be >= 1, got {self.batch_seqs}")


@dataclass(frozen=True)
class Windows:
    """Window ``k`` reads inputs ``tokens[start[k] : end[k]]`` and scores target indices ``[score_from[k], end[k])``."""

    start: Tensor
    score_from: Tensor
    end: Tensor

    def __len__(self) -> int:
        return int(self.start.numel())


def sliding_windows(num_targets: int, seq_len: int, stride: int) -> Windows:
    """The windows that together score target indices ``0 .. num_targets - 1`` exactly once.

    Args:
        num_targets: Number of positions N (the stream has N + 1 tokens).
        seq_len: Window length.
        stride: Distance between window starts.

    Returns:
        ``1 + ceil((N - seq_len) / stride)`` windows (1 if ``N <= seq_len``), each scoring >= 1 position.
    """
    if num_targets < 1:
        raise ValueError(f"need at least one target position, got {num_targets}")
    extra = max(0, -(-(num_targets - seq_len) // stride))
    start = torch.arange(extra + 1, dtype=torch.int64) * stride
    end = (start + seq_len).clamp(max=num_targets)
    score_from = torch.cat([torch.zeros(1, dtype=torch.int64), end[:-1]])  # everything the previous window did not
    return Windows(start, score_from, end)


def score_windows(
    model: nn.Module,
    tokens: Tensor,
    windows: Windows,
    scorer: Scorer,
    seq_len: int,
    batch_seqs: int,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> None:
    """Forward ``windows`` in batches of ``batch_seqs`` (padded to ``seq_len``) and score their positions.

    Runs under ``torch.inference_mode``; the caller puts the model in eval mode.

    Args:
        model: Maps (B, seq_len) ids to (B, seq_len, V) logits.
        tokens: The token stream on the scorer's device.
        windows: The windows to score, in stream order.
        scorer: Receives the scored positions and their logits.
        seq_len: Padded window length (the same for every forward, as in the seed).
        batch_seqs: Windows per forward.
        autocast: Context manager factory wrapped around each forward.
    """
    device = scorer.device
    cols = torch.arange(seq_len, device=device)
    with torch.inference_mode():
        for b0 in range(0, len(windows), batch_seqs):
            ws = windows.start[b0 : b0 + batch_seqs].to(device)[:, None]
            sf = windows.score_from[b0 : b0 + batch_seqs].to(device)[:, None]
            we = windows.end[b0 : b0 + batch_seqs].to(device)[:, None]
            idx = ws + cols  # (B, T) input index = target index at that column
            real = idx < we
            x = torch.where(real, tokens[idx.clamp(max=tokens.numel() - 1)], PAD_ID)
            with autocast():
                logits = model(x)
            scored = real & (idx >= sf)  # row-major order = stream order, since windows score disjoint ascending ranges
            scorer.score(idx[scored], logits[scored])


def rank_positions(num_targets: int, cfg: SlidingConfig, rank: int, world_size: int) -> int:
    """Number of positions ``rank`` scores with :class:`Sliding` (for progress bars)."""
    windows = sliding_windows(num_targets, cfg.seq_len, cfg.stride)
    w0, w1 = rank_range(len(windows), rank, world_size)
    return int((windows.end[w0:w1] - windows.score_from[w0:w1]).sum())


class Sliding(Strategy):
    """``--strategy sliding``: the windows of ``cfg`` (``--sliding.*``), with the n-gram mixers of the context.

    Args:
        cfg: Window length, stride and batch size (default: seq_len 2048, stride 64).
    """

    name = "sliding"
    supports_ngram = True
    label = "sliding_window"

    def __init__(self, cfg: SlidingConfig | None = None) -> None:
        self.cfg = cfg or SlidingConfig()

    @classmethod
    def from_config(cls, cfg: EvalConfig) -> list[Strategy]:
        return [cls(cfg.sliding)]

    def rank_targets(self, num_targets: int, rank: int, world_size: int) -> int:
        return rank_positions(num_targets, self.cfg, rank, world_size)

    def warmup_targets(self, world_size: int) -> int:
        return self.cfg.seq_len + (world_size * self.cfg.batch_seqs - 1) * self.cfg.stride

    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        """Score this rank's contiguous share of the sliding windows; ``"model"`` and one entry per mixer."""
        windows = sliding_windows(ctx.num_targets, self.cfg.seq_len, self.cfg.stride)
        w0, w1 = rank_range(len(windows), ctx.rank, ctx.world_size)
        mine = Windows(windows.start[w0:w1], windows.score_from[w0:w1], windows.end[w0:w1])
        scorer = ctx.scorer()
        was_training = ctx.model.training
        ctx.model.eval()
        try:
            score_windows(ctx.forward, scorer.tokens, mine, scorer, self.cfg.seq_len, self.cfg.batch_seqs,
                          ctx.autocast)
        finally:
            ctx.model.train(was_training)
        return scorer.sums()

    def settings(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def line_extra(self) -> str:
        return f" stride:{self.cfg.stride}"
