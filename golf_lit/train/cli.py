"""``GolfCLI``: LightningCLI with safe, whole-or-nothing checkpoints, a strict ``last`` and early output checks.

Training-only (not part of the counted scorer code); ``golf_lit.cli.run_lightning`` runs it.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from golf_lit.data.paths import resolve
from golf_lit.data.shards import find_shards, read_shard_header
from golf_lit.io import require_writable_dir
from golf_lit.train.checkpoint import LAST, LAST_IF_PRESENT, SafeCheckpointIO, load_checkpoint, resolve_resume_path


class GolfCLI(LightningCLI):
    """LightningCLI with safe, whole-or-nothing checkpoints, a strict ``--ckpt_path last`` and output checks.

    - Every checkpoint is written atomically and read with ``weights_only=True`` (``SafeCheckpointIO``).
    - ``--ckpt_path last`` is an error naming the checkpoint directories when there is no ``last.ckpt``;
      ``--ckpt_path last-if-present`` resumes when there is one and starts fresh otherwise.
    - Output directories (``trainer.default_root_dir``, checkpoint directories) are checked writable and the
      data shards' headers are checked before anything runs.
    """

    def _parse_ckpt_path(self) -> None:
        # Lightning's version reads the file with a plain torch.load: go through the safe loader instead.
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path or ckpt_path in (LAST, LAST_IF_PRESENT, "best", "hpc", "registry"):
            return
        hparams = dict(load_checkpoint(ckpt_path).get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        hparams.pop("_class_path", None)
        if hparams:
            self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO":
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def _checkpoint_dirs(self) -> list[Path]:
        trainer = self.trainer
        dirs = []
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint):
                dirs.append(Path(cb.dirpath) if cb.dirpath else Path(trainer.default_root_dir) / "checkpoints")
        return dirs

    def _before(self, subcommand: str) -> None:
        require_writable_dir(self.trainer.default_root_dir, "trainer.default_root_dir")
        for d in self._checkpoint_dirs():
            require_writable_dir(d, "ModelCheckpoint.dirpath")
        # Shard headers before the loggers create their version folders: a bad shard leaves nothing behind.
        for name in ("train_files", "val_files") if subcommand == "fit" else ("val_files",):
            pattern = getattr(self.datamodule, name, None)
            if isinstance(pattern, str):
                for shard in find_shards(resolve(pattern)):
                    read_shard_header(shard)
        if subcommand == "fit":
            self._hand_over_fit_config()
        cfg = self.config_init[subcommand]
        if "ckpt_path" in cfg:
            cfg["ckpt_path"] = resolve_resume_path(cfg["ckpt_path"], self._checkpoint_dirs())

    def _hand_over_fit_config(self) -> None:
        """Give the resolved fit config to the callbacks that ask for it (``ArtifactExport`` packs it into
        ``train_gpt.py``): those with a ``fit_config`` attribute."""
        wanting = [cb for cb in self.trainer.callbacks if hasattr(cb, "fit_config")]
        if wanting:
            text = self._parser("fit").dump(self.config["fit"], skip_none=False)
            resolved = yaml.safe_load(text)
            for cb in wanting:
                cb.fit_config = resolved

    def before_fit(self) -> None:
        self._before("fit")

    def before_validate(self) -> None:
        self._before("validate")


CLI_DEFAULTS: dict = {
    "seed_everything_default": 1337,
    "save_config_kwargs": {"overwrite": True},
    "trainer_defaults": {"use_distributed_sampler": False, "check_val_every_n_epoch": None},
    "parser_kwargs": {"prog": "golf-lit"},
}
"""How ``golf-lit fit`` builds its GolfCLI (also what ``train_gpt.py`` runs)."""


def run_fit(args: dict | list[str] | None) -> GolfCLI:
    """Run GolfCLI with golf-lit's module, data module and defaults; ``args`` as LightningCLI takes them."""
    from jsonargparse import set_docstring_parse_options

    from golf_lit.data.datamodule import GolfDataModule
    from golf_lit.train.module import GolfLM

    set_docstring_parse_options(attribute_docstrings=True)
    return GolfCLI(GolfLM, GolfDataModule, args=args, **CLI_DEFAULTS)
