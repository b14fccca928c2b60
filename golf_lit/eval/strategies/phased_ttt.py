"""``--strategy phased_ttt``: phased score-first TTT, per-document LoRA plus global SGD phases.

The algorithm lives in ``golf_lit.eval.phased_ttt`` (docs/top-stack.md §6.2-6.4; records 2026-04-10 VarLen
through PR #1855); this file adapts it to the evaluator's strategy interface. Bytes come from the evaluator's
byte source, so a CaseOps stream is charged its original bytes (docs/top-stack.md §2.3).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from golf_lit.data.byte_source import target_bytes
from golf_lit.eval.phased_ttt import Collectives, PhasedTTTConfig, score_phased_ttt
from golf_lit.eval.strategies.base import EvalContext, Strategy
from golf_lit.eval.sums import ScoreSums

if TYPE_CHECKING:
    from golf_lit.eval.config import EvalConfig


class PhasedTTT(Strategy):
    """``--strategy phased_ttt`` with the ``--phased_ttt.*`` settings (top config values by default)."""

    name = "phased_ttt"

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg: PhasedTTTConfig = cfg.phased_ttt
        self.label = self.cfg.name
        self.timings: list[tuple[str, float]] = []

    def warmup_targets(self, world_size: int) -> int:
        # a few documents' worth of chunks on each rank: every forward shape of scoring, a LoRA step and a phase
        return world_size * 4 * self.cfg.chunk_size * 2

    def score(self, ctx: EvalContext) -> dict[str, ScoreSums]:
        self.timings = []
        return score_phased_ttt(
            ctx.model,
            ctx.tokens,
            target_bytes(ctx.luts, ctx.tokens),
            self.cfg,
            Collectives(ctx.rank, ctx.world_size, ctx.all_reduce),
            autocast=ctx.autocast,
            timings=self.timings,
        )

    def settings(self) -> dict[str, Any]:
        return {"phased_ttt": asdict(self.cfg), "phase_seconds": dict(self.timings)}

    def line_extra(self) -> str:
        return f" phases:{self.cfg.num_phases} prefix_docs:{self.cfg.prefix_docs} chunk:{self.cfg.chunk_size}"
