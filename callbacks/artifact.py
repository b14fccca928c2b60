"""``ArtifactExport``: the challenge artifact and its roundtrip score, written when training ends
(docs/record-stack.md §9)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
from golf_lit.callbacks.ema import EMA
from golf_lit.callbacks.wallclock import find_clock
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from golf_lit.artifact import QuantConfig
from golf_lit.io import require_writable_dir
from golf_lit.runs.export import TrainingTime, export_model
from golf_lit.runs.fingerprint import fingerprint


def training_report(trainer: L.Trainer) -> dict:
    """How training ran, for ``submission.json``: mode, training seconds, budget, steps, ranks, precision.

    ``mode`` is ``"wallclock"`` when a ``WallClockLimit`` cap was on (training stops at the cap), else
    ``"fixed_steps"`` (``trainer.max_steps`` decides, e.g. to reproduce a record's step count on slower hardware).
    """
    clock = find_clock(trainer)
    cap_ms = getattr(clock, "max_ms", None) if clock is not None else None
    budget_ms = clock.budget_ms() if cap_ms and hasattr(clock, "budget_ms") else cap_ms
    return {
        "mode": "wallclock" if cap_ms else "fixed_steps",
        "seconds": clock.training_ms() / 1000.0 if clock is not None else None,
        "cap_s": cap_ms / 1000.0 if cap_ms else None,
        "budget_s": budget_ms / 1000.0 if budget_ms else None,
        "steps": trainer.global_step,
        "max_steps": trainer.max_steps,
        "world_size": trainer.world_size,
        "precision": str(trainer.precision),
    }


class ArtifactExport(Callback):
    """Quantize, compress, write atomically, read back, dequantize into a fresh model and score it.

    Runs in ``on_train_end`` on rank 0 (the other ranks wait). With an ``EMA`` callback it first asks it to swap
    its weights in (``EMA.apply_to``, which acts once), so the EMA weights are exported whether ``EMA`` is listed
    before or after this callback. Writes ``final_model.int6.ptz``, ``submission.json`` (val_bpb,
    val_loss, bytes_total/model/code, zstd level, int5 layers, per-tensor formats, timings) and
    ``config.json`` (resolved model and quantization config) into ``dirpath``. With ``quant.gptq`` the Hessians
    are collected here from training batches, and the report says whether training + calibration stayed within
    the ``WallClockLimit`` cap (``within_training_budget``; docs/top-stack.md §5.1).

    Args:
        dirpath: Output directory (default: ``<trainer.default_root_dir>/artifact``).
        quant: Quantization and size-budget options.
        eval_batch_seqs: Sequences per forward when scoring.
        eval_pre_quant: Also score the unquantized (EMA) model, to show the quantization gap.
        eval_args: The ``golf-lit eval`` options of the evaluation this run claims (e.g. ``["--strategy",
            "roundtrip,sliding"]``), baked into the ``train_gpt.py`` written beside the artifact (its size is the
            counted code with ``quant.code_bytes: auto``); none: it scores only the roundtrip.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: golf_lit.callbacks.EMA
            - class_path: golf_lit.callbacks.ArtifactExport
              init_args: {dirpath: runs/record/artifact, quant: {zstd_levels: [16, 1, 17, 2]}}
    """

    def __init__(
        self,
        dirpath: str | None = None,
        quant: QuantConfig = QuantConfig(),
        eval_batch_seqs: int = 32,
        eval_pre_quant: bool = True,
        eval_args: list[str] | None = None,
    ) -> None:
        self.dirpath = dirpath
        self.quant = quant
        self.eval_batch_seqs = eval_batch_seqs
        self.eval_pre_quant = eval_pre_quant
        self.eval_args = list(eval_args) if eval_args else None
        self.fit_config: dict | None = None  # the resolved fit config (GolfCLI hands it over), for train_gpt.py
        self.report: dict | None = None
        self._exported = False

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._exported = False
            _find_ema(trainer)  # more than one EMA is ambiguous: fail before training, not after it
            if trainer.is_global_zero:
                require_writable_dir(self.output_dir(trainer), "ArtifactExport.dirpath")

    def output_dir(self, trainer: L.Trainer) -> Path:
        """Where the artifact goes: ``dirpath``, or ``<trainer.default_root_dir>/artifact``."""
        return Path(self.dirpath or Path(trainer.default_root_dir) / "artifact")

    @override
    def state_dict(self) -> dict:
        """The quantization config, saved in every checkpoint so ``golf-lit export`` uses the run's own (#24).

        Nothing is restored from it (Lightning's default ``load_state_dict``): a resumed run exports with the quant
        config it is started with."""
        return {"quant": self.quant.to_dict()}

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ema = _find_ema(trainer)
        if ema is not None:
            ema.apply_to(pl_module)  # on every rank, as EMA.on_train_end would
        if trainer.is_global_zero:
            dm = trainer.datamodule
            out = self.output_dir(trainer)
            clock = find_clock(trainer)
            training_time = None
            if clock is not None:
                cap_s = clock.max_ms / 1000.0 if clock.max_ms else None
                training_time = TrainingTime(clock.training_ms() / 1000.0, cap_s, clock.reserve_seconds)
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
                extra_report={"training": training_report(trainer), "fingerprint": fingerprint()},
                train_files=dm.train_files,
                training_time=training_time,
                fit_config=self.fit_config,
                eval_args=self.eval_args,
            )
        trainer.strategy.barrier("artifact_export")
        self._exported = True

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resuming from a last.ckpt written at the max_steps stop (e.g. after a crash during the export) skips the
        # training loop and with it on_train_end: export here, so the resumed run still ends with an artifact.
        if not self._exported and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            self.on_train_end(trainer, pl_module)


def _find_ema(trainer: L.Trainer) -> EMA | None:
    found = [cb for cb in trainer.callbacks if isinstance(cb, EMA)]
    if len(found) > 1:
        raise ValueError(f"trainer.callbacks: {len(found)} EMA callbacks; ArtifactExport needs at most one")
    return found[0] if found else None
