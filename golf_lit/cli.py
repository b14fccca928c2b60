"""The ``golf-lit`` console script: ``fit`` (LightningCLI), ``eval``, ``export`` and ``data``."""

from __future__ import annotations

import sys

from golf_lit.options import check_config_files, normalize_options  # noqa: F401 (re-exported)

USAGE = """usage: golf-lit {fit,validate,eval,export,data,seeds,submit,ablate,plot} ...

  fit        train with LightningCLI:  golf-lit fit --config configs/smoke.yaml
  validate   score a checkpoint's weights on the validation split (LightningCLI)
  eval       score an artifact (roundtrip, sliding window, score-first TTT, n-gram mixer)
  export     quantize + compress a checkpoint into a challenge artifact
  data       download shards, tokenize documents, train a tokenizer
  seeds      fit + eval once per seed with one config; table of val_bpb, mean, std and a significance test
  submit     assemble a challenge submission folder from seed runs (refuses size/time/config/log problems)
  ablate     train with each technique switched off; table of val_bpb deltas (Markdown + JSON)
  plot       PNG plots of train loss, val_bpb and lr multiplier from runs' CSV logs

Run 'golf-lit COMMAND -h' for the options of a command. Options are spelled with underscores
(--val_files); eval and export also accept hyphens (--val-files).
"""


def run_lightning(argv: list[str]) -> int:
    """Run LightningCLI (``fit``/``validate``) with golf-lit's module and data module."""
    from golf_lit.train.cli import run_fit

    check_config_files(argv)
    # From the console, let LightningCLI read sys.argv itself: Lightning's DDP launcher re-runs sys.argv to start
    # the other ranks, so it must stay intact. Programmatic calls pass their own arguments.
    from_console = argv == sys.argv[1:]
    run_fit(None if from_console else argv)
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
            from golf_lit.runs.export import main as export_main

            return export_main(rest)
        if command == "data":
            from golf_lit.data.cli import main as data_main

            return data_main(rest)
        if command == "seeds":
            from golf_lit.runs.seeds import main as seeds_main

            return seeds_main(rest)
        if command == "submit":
            from golf_lit.runs.submit import main as submit_main

            return submit_main(rest)
        if command in ("ablate", "plot"):
            from importlib import import_module

            return import_module(f"golf_lit.runs.{command}").main(rest)
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
