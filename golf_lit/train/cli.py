"""``GolfCLI``: LightningCLI with safe, whole-or-nothing checkpoints, a strict ``last`` and early output checks.

Training-only (not part of the counted scorer code); ``golf_lit.cli.run_lightning`` runs it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from golf_lit.data.paths import resolve
from golf_lit.data.shards import SIDECAR_PREFIX, check_token_ids, find_shards, load_shard, read_shard_header
from golf_lit.io import FolderLock, require_writable_dir
from golf_lit.train.checkpoint import (
    LAST,
    LAST_IF_PRESENT,
    CheckpointError,
    SafeCheckpointIO,
    check_checkpoint_model,
    check_checkpoint_shapes,
    load_checkpoint,
    resolve_resume_path,
)
from golf_lit.train.trainer import CHECKPOINT_DIR, GolfTrainer, default_loggers

ALLOWED_CLASS_PATHS: tuple[str, ...] = (
    "golf_lit",
    "lightning.Callback",  # Lightning's public names of its base classes (jsonargparse resolves types through them)
    "lightning.pytorch.Callback",
    "lightning.LightningModule",
    "lightning.pytorch.LightningModule",
    "lightning.LightningDataModule",
    "lightning.pytorch.LightningDataModule",
    "lightning.Trainer",
    "lightning.pytorch.Trainer",
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "lightning.pytorch.strategies",
    "lightning.pytorch.plugins",
    "lightning.pytorch.profilers",
    "lightning.pytorch.accelerators",
    "lightning.fabric.plugins",
    "lightning.fabric.accelerators",
    "torch.optim",
)
"""The only modules a class path in a config, on the command line or in a checkpoint may name (and their
submodules): golf-lit's own classes and Lightning's callbacks, loggers, strategies, plugins, profilers and
accelerators (plus ``callbacks.*``, golf-lit's callbacks under their folder name, when that alias is installed).
Anything else is refused before it is imported (docs/safety.md)."""


def _allowed_class_paths() -> tuple[str, ...]:
    """:data:`ALLOWED_CLASS_PATHS`, plus ``callbacks`` when the dispatcher aliased it to golf_lit.callbacks (looked
    up in ``sys.modules``, never imported, from here)."""
    pkg = sys.modules.get("golf_lit.callbacks")
    aliased = pkg is not None and sys.modules.get("callbacks") is pkg
    return ALLOWED_CLASS_PATHS + (("callbacks",) if aliased else ())


def class_path_allowed(path: str) -> bool:
    """True when ``path`` is a dotted name inside :data:`ALLOWED_CLASS_PATHS` (nothing is imported to decide)."""
    if not isinstance(path, str):
        return False
    return any(path == a or path.startswith(a + ".") for a in _allowed_class_paths())


def refuse_foreign_class_paths(obj: Any, source: str, where: str = "") -> None:
    """Raise CheckpointError naming ``source`` when any ``class_path`` in ``obj`` (any depth) is not allowed."""
    if isinstance(obj, dict):
        cp = obj.get("class_path")
        if "class_path" in obj and not class_path_allowed(cp):
            key = f"{where}.class_path" if where else "class_path"
            raise CheckpointError(
                f"{source}: {key} names {cp!r}, which is not one of golf-lit's or Lightning's classes; refused "
                "before importing anything (see docs/safety.md)"
            )
        for key, value in obj.items():
            refuse_foreign_class_paths(value, source, f"{where}.{key}" if where else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            refuse_foreign_class_paths(value, source, f"{where}[{i}]")


CLASS_OPTIONS = frozenset(
    f"--{k}"
    for k in (
        "trainer.callbacks",
        "trainer.logger",
        "trainer.strategy",
        "trainer.plugins",
        "trainer.profiler",
        "trainer.accelerator",
        "optimizer",
        "lr_scheduler",
    )
)
"""Command-line options whose value may be a bare class path (``--trainer.callbacks+=pkg.Class``)."""


def _check_seed(value: Any, where: str) -> None:
    """``seed_everything`` must be true/false or an integer Lightning accepts (uint32); else one line."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false", "null", "none"):
            return
        try:
            value = int(text, 10)
        except ValueError:
            raise ValueError(f"{where}: expected an integer 0..4294967295 or true/false, got {value!r}") from None
    if value is None or isinstance(value, bool):
        return
    if not isinstance(value, int) or not 0 <= value <= 2**32 - 1:
        raise ValueError(f"{where}: expected an integer 0..4294967295 or true/false, got {value!r}")


def check_class_paths_in_args(argv: list[str]) -> None:
    """Refuse, in one line naming the file or option, a class path outside :data:`ALLOWED_CLASS_PATHS` in a
    ``--config`` file or a command-line value, before jsonargparse sees (and would import) it; likewise a malformed
    ``seed_everything`` (jsonargparse's message for it spans several lines).

    jsonargparse's import policy (:func:`only_allowed_class_paths`) refuses them too; this check runs first so the
    message is one line naming where the class path came from, not a multi-line parse error.
    """
    import yaml

    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                i += 1
                continue
            value = argv[i + 1]
            i += 1
        i += 1
        if name == "--config":
            path = Path(value)
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
            except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
                continue  # jsonargparse / check_config_files report unreadable files
            refuse_foreign_class_paths(data, f"--config {value}", "")
            if isinstance(data, dict) and "seed_everything" in data:
                _check_seed(data["seed_everything"], f"--config {value}: seed_everything")
            continue
        if name == "--seed_everything":
            _check_seed(value, name)
            continue
        option = name.rstrip("+")
        parts = value.split(".")
        if (
            (option in CLASS_OPTIONS or option.endswith(".class_path"))
            and len(parts) > 1
            and all(p.isidentifier() for p in parts)
        ):
            if not class_path_allowed(value):
                raise ValueError(
                    f"{option}: {value!r} is not one of golf-lit's or Lightning's classes; refused before importing "
                    "anything (see docs/safety.md)"
                )
            continue
        if value[:1] in "{[":
            try:
                data = yaml.safe_load(value)
            except (yaml.YAMLError, RecursionError):
                continue
            refuse_foreign_class_paths(data, option, "")


@contextlib.contextmanager
def only_allowed_class_paths() -> Iterator[None]:
    """While parsing: jsonargparse imports a class path only when it is in :data:`ALLOWED_CLASS_PATHS`.

    Uses jsonargparse's import-path policy (deny ``*``, allow ours), which checks a path before importing it; the
    process-wide policy is restored afterwards, so library users and tests keep their own.
    """
    from jsonargparse import _common, set_parsing_settings

    saved = {k: _common.parsing_settings[k] for k in ("import_path_verdicts", "import_paths_enforced")}
    set_parsing_settings(import_path_denylist=["*"], import_path_allowlist=list(_allowed_class_paths()))
    try:
        yield
    finally:
        _common.parsing_settings.update(saved)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class GolfCLI(LightningCLI):
    """LightningCLI with safe, whole-or-nothing checkpoints, a strict ``--ckpt_path last`` and output checks.

    - Every checkpoint is written atomically and read with ``weights_only=True`` (``SafeCheckpointIO``).
    - ``--ckpt_path last`` is an error naming the checkpoint directories when there is no ``last.ckpt``;
      ``--ckpt_path last-if-present`` resumes when there is one and starts fresh otherwise.
    - Output directories (``trainer.default_root_dir``, checkpoint directories) are checked writable and the
      data shards' headers are checked before anything runs.
    - One run folder: loggers and checkpoint callbacks that name no folder of their own write under
      ``trainer.default_root_dir`` (``lightning_logs/``, ``checkpoints/``), like ``ArtifactExport`` (``artifact/``),
      and the trainer writes ``train.log`` there (``GolfTrainer``). The folder is locked while the run writes to
      it (``golf_lit.io.FolderLock``): a second ``fit`` into it is refused by name.
    - Class paths (config, command line, checkpoint hyperparameters) only from :data:`ALLOWED_CLASS_PATHS`,
      checked before anything is imported; a resume checkpoint whose weights have other shapes than the
      configured model is refused naming both.
    """

    def __init__(self, *args: Any, trainer_class: type = GolfTrainer, **kwargs: Any) -> None:
        self._lock: FolderLock | None = None
        with only_allowed_class_paths():
            super().__init__(*args, trainer_class=trainer_class, **kwargs)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except SystemExit:
            # Lightning ends an interrupted fit with sys.exit(1) (Ctrl-C) or a bare SIGTERMException (status 0!)
            # after its graceful shutdown: report it as the interruption it is (the dispatcher prints one line).
            if getattr(self, "trainer", None) is not None and self.trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:  # also when the run fails: the folder is free again (a dead process's lock is stale anyway)
            if self._lock is not None:
                self._lock.release()

    def _parse_ckpt_path(self) -> None:
        # Lightning's version reads the file with a plain torch.load: go through the safe loader instead.
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path or ckpt_path in (LAST, LAST_IF_PRESENT, "best", "hpc", "registry"):
            return
        ckpt = load_checkpoint(ckpt_path)
        raw = ckpt.get("hyper_parameters", {})
        if not isinstance(raw, dict):
            raise CheckpointError(f"{ckpt_path}: hyper_parameters is a {type(raw).__name__}, expected a dict")
        # Plain data can still name classes: check them all before jsonargparse imports any (issue: somemodule.X).
        refuse_foreign_class_paths(raw, str(ckpt_path), "hyper_parameters")
        weights = ckpt.get("state_dict")
        if isinstance(weights, dict) and any(isinstance(k, str) and k.startswith("gpt.") for k in weights):
            # the hyper_parameters describe a bounded model and the weights are exactly that model's, before
            # they are parsed into the config (a forged num_layers would otherwise build a model without limit)
            check_checkpoint_model(Path(str(ckpt_path)), raw, weights)
        check_checkpoint_shapes(ckpt, self.config[sub].get("model"), str(ckpt_path))
        hparams = dict(raw)
        hparams.pop("_instantiator", None)
        hparams.pop("_class_path", None)
        if hparams:
            self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)

    def instantiate_trainer(self, **kwargs):
        cfg = self._get(self.config_init, "trainer", default={})
        root = cfg.get("default_root_dir") or os.getcwd()
        if "logger" not in kwargs and cfg.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(root)  # under the run folder, CSV even with TensorBoard installed
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as exc:  # e.g. max_steps -5, accelerator cuda without a GPU: one line
            raise ValueError(f"trainer: {_first_line(exc)}") from None
        except ModuleNotFoundError as exc:  # accelerator tpu without torch_xla
            raise ValueError(f"trainer.accelerator {cfg.get('accelerator')!r}: {_first_line(exc)}") from None
        if type(trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO":
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                # Lightning would use <logger version folder>/checkpoints, a new folder per run: `last` could never
                # find the previous run's checkpoint. One fixed folder under the run's root instead.
                cb.dirpath = os.path.realpath(os.path.expanduser(Path(trainer.default_root_dir) / CHECKPOINT_DIR))
        return trainer

    def _checkpoint_dirs(self) -> list[Path]:
        trainer = self.trainer
        dirs = []
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint):
                dirs.append(Path(cb.dirpath))  # instantiate_trainer gave every ModelCheckpoint a folder
        return dirs

    def _before(self, subcommand: str) -> None:
        require_writable_dir(self.trainer.default_root_dir, "trainer.default_root_dir")
        for d in self._checkpoint_dirs():
            require_writable_dir(d, "ModelCheckpoint.dirpath")
        # Shard headers, and the validation token ids against the vocabulary, before the loggers create their
        # folders: a bad shard leaves nothing behind (training shards' ids are checked at their first read:
        # reading them all here would take minutes on the full dataset).
        vocab = getattr(getattr(self.model, "model_config", None), "vocab_size", None)
        for name in ("train_files", "val_files") if subcommand == "fit" else ("val_files",):
            pattern = getattr(self.datamodule, name, None)
            if isinstance(pattern, str):
                for shard in find_shards(resolve(pattern)):
                    read_shard_header(shard)
                    if name == "val_files" and vocab and not shard.name.startswith(SIDECAR_PREFIX):
                        check_token_ids(load_shard(shard), vocab, str(shard))
        if subcommand == "fit":
            self._hand_over_fit_config()
        cfg = self.config_init[subcommand]
        if "ckpt_path" in cfg:
            cfg["ckpt_path"] = resolve_resume_path(cfg["ckpt_path"], self._checkpoint_dirs())
            if cfg["ckpt_path"] and cfg["ckpt_path"] != self.config[subcommand].get("ckpt_path"):
                check_checkpoint_shapes(load_checkpoint(cfg["ckpt_path"]), self.model, cfg["ckpt_path"])

    def _lock_run_folder(self) -> None:
        """Lock ``default_root_dir`` on the process that writes it (global rank 0: not a rank a launcher started)."""
        if any(os.environ.get(v, "0") not in ("", "0") for v in ("RANK", "LOCAL_RANK", "NODE_RANK")):
            return
        self._lock = FolderLock(self.trainer.default_root_dir, "trainer.default_root_dir").acquire()

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
        self._lock_run_folder()
        if isinstance(self.trainer, GolfTrainer):
            self.trainer.start_train_log(resume=bool(self.config_init["fit"].get("ckpt_path")))

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
