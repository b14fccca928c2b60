"""The ``golf-lit`` console script: ``fit`` (LightningCLI), ``eval``, ``export`` and ``data``."""

from __future__ import annotations

import sys

USAGE = """usage: golf-lit {fit,validate,eval,export,data,ablate,plot} ...

  fit        train with LightningCLI:  golf-lit fit --config configs/smoke.yaml
  validate   score a checkpoint's weights on the validation split (LightningCLI)
  eval       score an artifact (roundtrip, sliding window, score-first TTT, n-gram mixer)
  export     quantize + compress a checkpoint into a challenge artifact
  data       download shards, tokenize documents, train a tokenizer
  ablate     train with each technique switched off; table of val_bpb deltas (Markdown + JSON)
  plot       PNG plots of train loss, val_bpb and lr multiplier from runs' CSV logs

Run 'golf-lit COMMAND -h' for the options of a command.
"""


def run_lightning(argv: list[str]) -> int:
    """Run LightningCLI (``fit``/``validate``) with golf-lit's module and data module."""
    from jsonargparse import set_docstring_parse_options
    from lightning.pytorch.cli import LightningCLI

    from golf_lit.data.datamodule import GolfDataModule
    from golf_lit.lit_module import GolfLM

    set_docstring_parse_options(attribute_docstrings=True)
    # From the console, let LightningCLI read sys.argv itself: Lightning's DDP launcher re-runs sys.argv to start
    # the other ranks, so it must stay intact. Programmatic calls pass their own arguments.
    from_console = argv == sys.argv[1:]
    LightningCLI(
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
        if command in ("ablate", "plot"):
            from importlib import import_module

            return import_module(f"golf_lit.{command}").main(rest)
    except (ValueError, FileNotFoundError) as exc:  # bad config or input: the message names the key/file
        print(f"golf-lit {command}: error: {exc}", file=sys.stderr)
        return 2
    print(f"golf-lit: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
