"""``Warmdown``: sets the learning-rate multiplier before every step (docs/record-stack.md §7;
docs/top-stack.md §4.3)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from golf_lit.callbacks.wallclock import find_clock
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from golf_lit.optim.schedules import lr_multiplier, warmdown_frac_multiplier


class Warmdown(Callback):
    """Sets the lr multiplier before every step: the record's warmdown, or the top's fraction rule with a floor.

    Default (``warmdown_frac`` None), the record line's rule (PR #638 -> #761): with a ``WallClockLimit`` that
    has a cap, a linear decay to 0 lasting ``warmdown_iters`` times the running mean step time and ending
    exactly at the clock's budget (the cap minus its reserve); otherwise over the last ``warmdown_iters`` of
    ``trainer.max_steps`` steps (``golf_lit.optim.schedules.lr_multiplier``).

    With ``warmdown_frac`` set, the leaderboard top's rule (docs/top-stack.md §4.3,
    ``golf_lit.optim.schedules.warmdown_frac_multiplier``): ``m = 1`` while ``frac < 1 - warmdown_frac``, then
    ``max((1 - frac) / warmdown_frac, min_lr)``, where ``frac`` is ``clock.fraction()`` (training time over the
    budget) with a capped clock and ``global_step / max_steps`` without one.

    ``min_lr`` floors the multiplier in both rules (0 = today's behaviour).

    Args:
        warmdown_iters: Warmdown length in steps for the record rule (0 disables it).
        warmdown_frac: Fraction of the budget the warmdown covers, in [0, 1] (top: 0.85); None = record rule.
        min_lr: Floor of the multiplier, in [0, 1] (top: 0.1).

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.Warmdown
              init_args: {warmdown_iters: 3000}                    # record
            - class_path: golf_lit.callbacks.Warmdown
              init_args: {warmdown_frac: 0.85, min_lr: 0.1}        # leaderboard top
    """

    def __init__(self, warmdown_iters: int = 3000, warmdown_frac: float | None = None, min_lr: float = 0.0) -> None:
        if warmdown_iters < 0:
            raise ValueError(f"Warmdown.warmdown_iters: must be >= 0, got {warmdown_iters}")
        if warmdown_frac is not None and not 0 <= warmdown_frac <= 1:
            raise ValueError(f"Warmdown.warmdown_frac: must be in [0, 1] or null, got {warmdown_frac}")
        if not 0 <= min_lr <= 1:
            raise ValueError(f"Warmdown.min_lr: must be in [0, 1], got {min_lr}")
        self.warmdown_iters, self.warmdown_frac, self.min_lr = warmdown_iters, warmdown_frac, min_lr

    def multiplier(self, trainer: L.Trainer) -> float:
        """The multiplier for the step about to run."""
        clock = find_clock(trainer)
        budget = clock.budget_ms() if clock is not None else None
        if self.warmdown_frac is not None:
            if budget is not None:
                frac = clock.fraction()
            elif trainer.max_steps > 0:
                frac = trainer.global_step / trainer.max_steps
            else:
                raise ValueError(
                    "Warmdown.warmdown_frac: needs a WallClockLimit with a cap or trainer.max_steps > 0 to measure "
                    "the fraction of training done"
                )
            return warmdown_frac_multiplier(frac, warmdown_frac=self.warmdown_frac, min_lr=self.min_lr)
        m = lr_multiplier(
            trainer.global_step,
            clock.training_ms() if budget is not None else 0.0,
            warmdown_iters=self.warmdown_iters,
            iterations=trainer.max_steps,
            max_wallclock_ms=budget,
        )
        return max(m, self.min_lr)

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        pl_module.lr_multiplier = self.multiplier(trainer)
