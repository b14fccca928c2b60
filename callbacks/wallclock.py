"""``WallClockLimit``: the training-time clock and the 600 s cap (docs/record-stack.md §7)."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


def _sync(pl_module: L.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)


class WallClockLimit(Callback):
    """Measures training time and stops training once it reaches the cap.

    The clock counts only the training loop: it starts at the first training batch (so compile priming in
    ``on_train_start`` is excluded), pauses during validation, and is saved in checkpoints so a resumed run
    continues it. After every step each rank checks the cap and the stop is taken if any rank reached it
    (the seed's all-reduce MAX), so all ranks stop at the same step. Lightning's ``Timer`` is not used
    because it counts validation and cannot drive the warmdown.

    ``reserve_seconds`` keeps part of the cap for work after training that the challenge counts as training
    time (the top's GPTQ calibration on training data, docs/top-stack.md §4.3 and §5.1): training stops at
    ``cap - reserve`` (``budget_ms()``), and ``fraction()`` measures progress against that budget.

    Args:
        max_wallclock_seconds: Training-time cap in seconds; None or 0 = no cap (the warmdown then falls back
            to its step-based rule).
        reserve_seconds: Seconds of the cap kept back from training (top: GPTQ_RESERVE_SECONDS); must be
            smaller than the cap.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.WallClockLimit
              init_args: {max_wallclock_seconds: 600, reserve_seconds: 0.0}
    """

    def __init__(self, max_wallclock_seconds: float | None = 600.0, reserve_seconds: float = 0.0) -> None:
        if max_wallclock_seconds is not None and max_wallclock_seconds < 0:
            raise ValueError(f"WallClockLimit.max_wallclock_seconds: must be >= 0 or null, got {max_wallclock_seconds}")
        if not reserve_seconds >= 0 or (max_wallclock_seconds and reserve_seconds >= max_wallclock_seconds):
            raise ValueError(
                f"WallClockLimit.reserve_seconds: must be >= 0 and below max_wallclock_seconds "
                f"({max_wallclock_seconds}), got {reserve_seconds}"
            )
        self.max_ms = 1000.0 * max_wallclock_seconds if max_wallclock_seconds else None
        self.reserve_seconds = float(reserve_seconds)
        self.elapsed_ms = 0.0  # training time up to the last pause
        self._t0: float | None = None

    def training_ms(self) -> float:
        """Training time so far in milliseconds."""
        return self.elapsed_ms + (1000.0 * (time.perf_counter() - self._t0) if self._t0 is not None else 0.0)

    def budget_ms(self) -> float | None:
        """Training-time budget in milliseconds: the cap minus the reserve (None without a cap)."""
        return None if self.max_ms is None else self.max_ms - 1000.0 * self.reserve_seconds

    def fraction(self) -> float | None:
        """Fraction of the budget used so far, ``training_ms() / budget_ms()`` (None without a cap)."""
        budget = self.budget_ms()
        return None if budget is None else self.training_ms() / budget

    def _pause(self, pl_module: L.LightningModule) -> None:
        if self._t0 is not None:
            _sync(pl_module)
            self.elapsed_ms = self.training_ms()
            self._t0 = None

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._t0 is None:
            _sync(pl_module)
            self._t0 = time.perf_counter()

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.max_ms is None:
            return
        _sync(pl_module)
        reached = self.training_ms() >= self.budget_ms()
        if trainer.strategy.reduce_boolean_decision(reached, all=False):
            trainer.should_stop = True

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"elapsed_ms": self.training_ms()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_ms = float(state_dict["elapsed_ms"])
        self._t0 = None


def find_clock(trainer: L.Trainer) -> WallClockLimit | None:
    """The trainer's ``WallClockLimit`` callback, if any."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, WallClockLimit)), None)
