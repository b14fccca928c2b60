"""``RecordLog``: console lines in the record scripts' shape, so runs compare with published logs."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from golf_lit.callbacks.wallclock import find_clock
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class RecordLog(Callback):
    """Prints ``step:N/M train_loss:x train_time:Tms step_avg:Sms`` and ``step:N/M val_loss:x val_bpb:y ...``.

    Training lines for the first 10 steps, every ``train_log_every`` steps and the last step, as the seed.
    Times come from the ``WallClockLimit`` clock (training time only) when one is configured; that time is also
    logged every step as ``train/time_ms`` (CSV logs, ``golf-lit plot``). Reads the module's ``last_train_loss``
    and ``last_val`` (see ``GolfLM``'s callback interface).

    Args:
        train_log_every: Print a training line every this many steps (0: only the first 10 and the last).

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.RecordLog
              init_args: {train_log_every: 200}
    """

    def __init__(self, train_log_every: int = 200) -> None:
        self.train_log_every = train_log_every

    @staticmethod
    def _times(trainer: L.Trainer) -> str:
        clock = find_clock(trainer)
        if clock is None:
            return ""
        ms = clock.training_ms()
        return f" train_time:{ms:.0f}ms step_avg:{ms / max(trainer.global_step, 1):.2f}ms"

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        every = self.train_log_every
        clock = find_clock(trainer)
        if clock is not None:  # training time per step in the logs (golf-lit plot puts curves against it)
            pl_module.log("train/time_ms", clock.training_ms(), on_step=True, on_epoch=False)
        if step <= 10 or (every > 0 and step % every == 0) or trainer.should_stop or step == trainer.max_steps:
            loss = float(pl_module.last_train_loss)
            trainer.print(f"step:{step}/{trainer.max_steps} train_loss:{loss:.4f}{self._times(trainer)}")

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or pl_module.last_val is None:
            return
        loss, bpb = pl_module.last_val
        trainer.print(
            f"step:{trainer.global_step}/{trainer.max_steps} val_loss:{loss:.4f} val_bpb:{bpb:.4f}"
            + self._times(trainer)
        )
