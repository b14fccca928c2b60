"""``ResumableCheckpoint``: ``last.ckpt`` every N steps and when training stops, so a killed run can resume."""

from __future__ import annotations

import lightning.pytorch as L
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also writes ``last.ckpt`` when the training loop ends.

    With ``every_n_train_steps`` alone, Lightning saves only at multiples of N, so the state at the stop (the
    ``max_steps`` end or the wall-clock cap) is lost; this callback saves it too, in ``on_train_epoch_end`` (before
    ``EMA`` swaps its weights in at ``on_train_end``), so resuming from it continues the run exactly. Every
    shipped config uses it with a periodic ``every_n_train_steps``. The file is written whole or not at all
    when the trainer uses ``golf_lit.train.checkpoint.SafeCheckpointIO`` (the ``golf-lit`` CLI installs it).

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.ResumableCheckpoint
              init_args: {save_last: true, save_top_k: 0, every_n_train_steps: 50}  # <default_root_dir>/checkpoints
    """

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
