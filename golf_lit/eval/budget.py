"""A wall-clock budget for evaluation: named phases are timed on one clock and the next phase is refused once
the budget is spent (the challenge allows 10 minutes of evaluation on 8xH100)."""

from __future__ import annotations

import time
from collections.abc import Callable


class EvalBudgetError(RuntimeError):
    """A phase would start after the evaluation budget is spent (the message names the phase and the budget)."""


class EvalBudget:
    """Times phases against ``seconds`` from construction on ``clock``.

    Args:
        seconds: The budget; 0 = unlimited (phases are still timed).
        clock: Monotonic seconds (``time.perf_counter``; tests pass a fake one).

    Example:
        ``budget = EvalBudget(600); budget.require("sliding"); ...; budget.record("sliding", t0)``
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds = float(seconds)
        self.clock = clock
        self.start = clock()
        self.phases: dict[str, float] = {}
        """Phase name -> seconds, in the order they ran."""

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return self.clock() - self.start

    def spent(self) -> bool:
        """Whether the budget is used up (never, without one)."""
        return self.seconds > 0 and self.elapsed() >= self.seconds

    def require(self, phase: str, spent: bool | None = None) -> None:
        """Raise :class:`EvalBudgetError` unless ``phase`` may start now.

        Args:
            phase: Names the phase in the message.
            spent: The decision to apply (e.g. rank 0's, broadcast so all ranks agree); None = :meth:`spent`.
        """
        if self.spent() if spent is None else spent:
            done = ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items()) or "nothing"
            raise EvalBudgetError(
                f"eval_budget_seconds={self.seconds:g} is spent ({self.elapsed():.1f}s elapsed: {done}); "
                f"refusing to start {phase}"
            )

    def record(self, phase: str, since: float) -> float:
        """Store and return the seconds of ``phase``, which started at clock time ``since``."""
        seconds = self.clock() - since
        self.phases[phase] = seconds
        return seconds

    def summary(self) -> dict[str, object]:
        """``{"phases": {...}, "total_s", "budget_s", "fits"}`` for the report (budget_s None without a budget)."""
        total = self.elapsed()
        budget = self.seconds if self.seconds > 0 else None
        return {"phases": dict(self.phases), "total_s": total, "budget_s": budget,
                "fits": None if budget is None else total <= budget}
