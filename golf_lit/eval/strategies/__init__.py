"""Evaluation strategies: one file per strategy, each a :class:`~golf_lit.eval.strategies.base.Strategy` whose
``score(ctx)`` takes an :class:`~golf_lit.eval.strategies.base.EvalContext` and nothing else.

    base.py               ``Strategy``, ``EvalContext``, PAD_ID / IGNORE
    roundtrip.py          whole non-overlapping sequences (the record's roundtrip)
    sliding.py            stride windows, each position scored once (+ n-gram mixers)
    ttt.py                score-first TTT over the sliding windows (+ n-gram mixers)
    phased_ttt.py         phased score-first TTT: settings and strategy
    phased_ttt_engine.py  its procedure (per-document LoRA scoring, global SGD phases)
    lora.py               per-document LoRA adapters attached through forward hooks

``REGISTRY`` maps the ``--strategy`` names to their classes; a new strategy is a new file here plus one line
below (docs/evaluation.md, "Adding a strategy").
"""

from __future__ import annotations

from golf_lit.eval.strategies.base import EvalContext, Strategy
from golf_lit.eval.strategies.phased_ttt import PhasedTTT
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.eval.strategies.sliding import Sliding
from golf_lit.eval.strategies.ttt import TestTimeTraining

REGISTRY: dict[str, type[Strategy]] = {
    Roundtrip.name: Roundtrip,
    Sliding.name: Sliding,
    TestTimeTraining.name: TestTimeTraining,
    PhasedTTT.name: PhasedTTT,
}
"""``--strategy`` name -> strategy class, in the order ``golf-lit eval -h`` lists them."""

__all__ = ["REGISTRY", "EvalContext", "Strategy"]
