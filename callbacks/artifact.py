"""``ArtifactExport``: the challenge artifact and its roundtrip score, written when training ends (SPEC §9)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from callbacks.wallclock import find_clock
from golf_lit.export import TrainingTime, export_model
from golf_lit.quant import QuantConfig


class ArtifactExport(Callback):
    """Quantize, compress, write atomically, read back, dequantize into a fresh model and score it.

    Runs in ``on_train_end`` on rank 0 (the other ranks wait), after ``EMA`` has swapped its weights in:
    list ``callbacks.EMA`` before this callback. Writes ``final_model.int6.ptz``, ``submission.json`` (val_bpb,
    val_loss, bytes_total/model/code, zstd level, int5 layers, per-tensor formats, timings) and
    ``config.json`` (resolved model and quantization config) into ``dirpath``. With ``quant.gptq`` the Hessians
    are collected here from training batches, and the report says whether training + calibration stayed within
    the ``WallClockLimit`` cap (``within_training_budget``; docs/top-stack.md §5.1).

    Args:
        dirpath: Output directory (default: ``<trainer.default_root_dir>/artifact``).
        quant: Quantization and size-budget options.
        eval_batch_seqs: Sequences per forward when scoring.
        eval_pre_quant: Also score the unquantized (EMA) model, to show the quantization gap.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: callbacks.EMA
            - class_path: callbacks.ArtifactExport
              init_args: {dirpath: runs/record/artifact, quant: {zstd_levels: [16, 1, 17, 2]}}
    """

    def __init__(
        self,
        dirpath: str | None = None,
        quant: QuantConfig = QuantConfig(),
        eval_batch_seqs: int = 32,
        eval_pre_quant: bool = True,
    ) -> None:
        self.dirpath = dirpath
        self.quant = quant
        self.eval_batch_seqs = eval_batch_seqs
        self.eval_pre_quant = eval_pre_quant
        self.report: dict | None = None

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            dm = trainer.datamodule
            out = Path(self.dirpath or Path(trainer.default_root_dir) / "artifact")
            clock = find_clock(trainer)
            training_time = None
            if clock is not None:  # reserve_seconds: added by the training branch; 0 before it lands
                cap_s = clock.max_ms / 1000.0 if clock.max_ms else None
                training_time = TrainingTime(clock.training_ms() / 1000.0, cap_s, getattr(clock, "reserve_seconds", 0.0))
            self.report = export_model(
                pl_module.gpt,
                out,
                quant=self.quant,
                val_files=dm.val_files,
                tokenizer_path=dm.tokenizer_path,
                seq_len=dm.train_seq_len,
                batch_seqs=self.eval_batch_seqs,
                val_max_tokens=dm.val_max_tokens,
                eval_pre_quant=self.eval_pre_quant,
                log=trainer.print,
                extra_config={"optim": pl_module.optim_config.to_dict(), "data": dict(dm.hparams)},
                train_files=dm.train_files,
                training_time=training_time,
            )
        trainer.strategy.barrier("artifact_export")
