"""Evaluation strategies: one file per strategy, each a :class:`~golf_lit.eval.strategies.base.Strategy`.

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
