"""``LoopingSwitch``: depth recurrence on once training reaches model.enable_looping_at (docs/top-stack.md §3.3)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from golf_lit.callbacks.wallclock import find_clock
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class LoopingSwitch(Callback):
    """One-time switch from the plain to the looped layer order (0409-3Loop, PR #1493: layers 3-5 from 35 %).

    Before every training step the training fraction is measured: ``WallClockLimit.fraction()`` when the clock
    has one, else its ``training_ms() / max_ms`` when it has a cap, else ``global_step / max_steps``. Once it
    reaches ``model.enable_looping_at`` on any rank (all ranks agree through one boolean all-reduce per step
    until the switch, so DDP ranks always run the same graph), the GPT runs looped from that step on and a
    line ``layer_loop:enabled step:N frac:F`` is printed. The step is kept in this callback's state and the
    module saves ``looping_active`` in the checkpoint, so a resumed run continues looped. If training ends
    before the switch, looping is turned on at the end anyway, because the exported and evaluated model is
    always the looped one: list this callback before ``callbacks.ArtifactExport``. Validation during training
    runs whichever form is active.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.LoopingSwitch
    """

    drives_looping = True  # GolfLM refuses to train a delayed-looping model without a callback that has this

    def __init__(self) -> None:
        self.switched_step: int | None = None
        self.switched_frac: float | None = None

    @staticmethod
    def fraction(trainer: L.Trainer) -> float:
        """Fraction of the training budget used so far (wall clock when capped, else steps)."""
        clock = find_clock(trainer)
        frac = getattr(clock, "fraction", None)
        value = frac() if callable(frac) else None
        if value is not None:
            return float(value)
        if clock is not None and clock.max_ms:
            return clock.training_ms() / clock.max_ms
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.global_step / trainer.max_steps
        raise ValueError("LoopingSwitch: needs a WallClockLimit with a cap or trainer.max_steps to measure progress")

    def _switch(self, trainer: L.Trainer, pl_module: L.LightningModule, frac: float, note: str = "") -> None:
        pl_module.gpt.set_looping(True)
        self.switched_step, self.switched_frac = trainer.global_step, frac
        trainer.print(f"layer_loop:enabled step:{trainer.global_step} frac:{frac:.3f}{note}")

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        names = [type(cb).__name__ for cb in trainer.callbacks]
        if "ArtifactExport" in names and names.index("ArtifactExport") < names.index(type(self).__name__):
            raise ValueError("trainer.callbacks: list callbacks.LoopingSwitch before callbacks.ArtifactExport")

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.switched_step is not None:  # resumed after the switch
            pl_module.gpt.set_looping(True)

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not pl_module.model_config.num_loops or pl_module.gpt.looping_active:
            return
        frac = self.fraction(trainer)
        reached = frac >= pl_module.model_config.enable_looping_at
        if trainer.strategy.reduce_boolean_decision(reached, all=False):
            self._switch(trainer, pl_module, frac)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.model_config.num_loops and not pl_module.gpt.looping_active:
            self._switch(trainer, pl_module, self.fraction(trainer), " (end of training: export and eval run looped)")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"switched_step": self.switched_step, "switched_frac": self.switched_frac}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.switched_step = state_dict.get("switched_step")
        self.switched_frac = state_dict.get("switched_frac")
