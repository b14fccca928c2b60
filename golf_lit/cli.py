"""The ``golf-lit`` console script: ``fit`` (LightningCLI), ``eval``, ``export`` and ``data``."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = """usage: golf-lit {fit,validate,eval,export,data} ...

  fit        train with LightningCLI:  golf-lit fit --config configs/smoke.yaml
  validate   score a checkpoint's weights on the validation split (LightningCLI)
  eval       score an artifact (roundtrip, sliding window, score-first TTT, n-gram mixer)
  export     quantize + compress a checkpoint into a challenge artifact
  data       download shards, tokenize documents, train a tokenizer

Run 'golf-lit COMMAND -h' for the options of a command.
"""


def _alias_short_callback_paths() -> None:
    """Let configs say ``class_path: callbacks.EMA`` (the project folder's name) for ``golf_lit.callbacks.EMA``.

    Only in this process, and only when no other importable package is called ``callbacks``; nothing named
    ``callbacks`` is installed. Both names give the same classes.
    """
    import importlib
    import importlib.util
    import pkgutil

    import golf_lit.callbacks as pkg

    if "callbacks" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("callbacks")
    except (ImportError, ValueError):
        spec = None
    ours = {str(Path(p).resolve()) for p in pkg.__path__}
    if spec is not None and {str(Path(p).resolve()) for p in (spec.submodule_search_locations or [])} != ours:
        return  # somebody else's package called callbacks wins
    sys.modules["callbacks"] = pkg
    for info in pkgutil.iter_modules(pkg.__path__):
        sys.modules[f"callbacks.{info.name}"] = importlib.import_module(f"golf_lit.callbacks.{info.name}")


def _cli_class():
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from golf_lit.checkpoint import LAST, LAST_IF_PRESENT, SafeCheckpointIO, load_checkpoint, resolve_resume_path
    from golf_lit.outdirs import require_writable_dir

    class GolfCLI(LightningCLI):
        """LightningCLI with safe, whole-or-nothing checkpoints, a strict ``--ckpt_path last`` and output checks.

        - Every checkpoint is written atomically and read with ``weights_only=True`` (``SafeCheckpointIO``).
        - ``--ckpt_path last`` is an error naming the checkpoint directories when there is no ``last.ckpt``;
          ``--ckpt_path last-if-present`` resumes when there is one and starts fresh otherwise.
        - Output directories (``trainer.default_root_dir``, checkpoint directories) are checked writable
          before anything runs.
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
            cfg = self.config_init[subcommand]
            if "ckpt_path" in cfg:
                cfg["ckpt_path"] = resolve_resume_path(cfg["ckpt_path"], self._checkpoint_dirs())

        def before_fit(self) -> None:
            self._before("fit")

        def before_validate(self) -> None:
            self._before("validate")

    return GolfCLI


def run_lightning(argv: list[str]) -> int:
    """Run LightningCLI (``fit``/``validate``) with golf-lit's module and data module."""
    from jsonargparse import set_docstring_parse_options

    from golf_lit.data.datamodule import GolfDataModule
    from golf_lit.lit_module import GolfLM

    set_docstring_parse_options(attribute_docstrings=True)
    _alias_short_callback_paths()
    # From the console, let LightningCLI read sys.argv itself: Lightning's DDP launcher re-runs sys.argv to start
    # the other ranks, so it must stay intact. Programmatic calls pass their own arguments.
    from_console = argv == sys.argv[1:]
    _cli_class()(
        GolfLM,
        GolfDataModule,
        args=None if from_console else argv,
        seed_everything_default=1337,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"use_distributed_sampler": False, "check_val_every_n_epoch": None},
        parser_kwargs={"prog": "golf-lit"},
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``golf-lit COMMAND ...``; configuration errors print one line and exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command in ("fit", "validate"):
            return run_lightning(argv)
        if command == "eval":
            from golf_lit.eval.cli import main as eval_main

            return eval_main(rest)
        if command == "export":
            from golf_lit.export import main as export_main

            return export_main(rest)
        if command == "data":
            from golf_lit.data.cli import main as data_main

            return data_main(rest)
    except (ValueError, FileNotFoundError) as exc:  # bad config or input: the message names the key/file
        print(f"golf-lit {command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable path, full disk: one line naming the file, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"golf-lit {command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"golf-lit: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
