"""``Warmdown``: sets the learning-rate multiplier before every step (SPEC §7)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from golf_lit.callbacks.wallclock import find_clock
from golf_lit.optim.schedules import lr_multiplier


class Warmdown(Callback):
    """Linear warmdown to 0 that ends exactly at the wall-clock cap (record line PR #638 -> #761).

    With a ``WallClockLimit`` that has a cap, the warmdown lasts ``warmdown_iters`` times the running mean
    step time; otherwise it covers the last ``warmdown_iters`` of ``trainer.max_steps`` steps. The schedule
    itself is the pure function ``golf_lit.optim.schedules.lr_multiplier``.

    Args:
        warmdown_iters: Warmdown length in steps (0 disables it).

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.Warmdown
              init_args: {warmdown_iters: 3000}
    """

    def __init__(self, warmdown_iters: int = 3000) -> None:
        if warmdown_iters < 0:
            raise ValueError(f"Warmdown.warmdown_iters: must be >= 0, got {warmdown_iters}")
        self.warmdown_iters = warmdown_iters

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        clock = find_clock(trainer)
        capped = clock is not None and clock.max_ms is not None
        pl_module.lr_multiplier = lr_multiplier(
            trainer.global_step,
            clock.training_ms() if capped else 0.0,
            warmdown_iters=self.warmdown_iters,
            iterations=trainer.max_steps,
            max_wallclock_ms=clock.max_ms if capped else None,
        )
