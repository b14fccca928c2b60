"""The ``golf-lit`` console script: ``fit``/``validate`` (LightningCLI) and the commands of ``COMMANDS`` (options from
dataclasses through jsonargparse, ``golf_lit.options``); hyphens and underscores in option names are made equal here."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

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
(--val_files); every command also accepts hyphens (--val-files).
"""


def normalize_options(argv: list[str], known: set[str]) -> tuple[list[str], dict[str, str]]:
    """Rewrite ``--some-option`` / ``--some_option`` (also ``=value`` forms) to the spelling in ``known``.

    The one place where hyphens and underscores are made equal: every command parser declares one spelling (its
    dataclass fields' underscores; ``golf_lit.options``). Arguments after a bare ``--`` are left as they are
    (``ablate`` passes them on to ``golf-lit fit``).

    Returns:
        The rewritten arguments and ``{declared spelling: spelling as typed}`` of what was rewritten.
    """
    out: list[str] = []
    renamed: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:], renamed
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and " " not in name and name not in known:
            for candidate in (name[:2] + name[2:].replace("-", "_"), name[:2] + name[2:].replace("_", "-")):
                if candidate in known:
                    renamed[candidate] = name
                    arg = candidate + eq + value
                    break
        out.append(arg)
    return out, renamed


def as_typed(message: str, renamed: dict[str, str]) -> str:
    """An error message that names each rewritten option the way the user typed it (``--x_y``, ``"x_y"``, never
    inside a path such as ``/data/x_y/``)."""
    for declared, typed in renamed.items():
        pattern = rf'(?<=["\s.-]){re.escape(declared[2:])}(?=["\s:=,]|$)'
        message = re.sub(pattern, lambda _, name=typed[2:]: name, message)
    return message


def check_config_files(argv: list[str]) -> None:
    """Raise ValueError naming a ``--config`` file that is not UTF-8 text (jsonargparse would not name it)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            path = arg.partition("=")[2]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        else:
            continue
        if os.path.isfile(path):
            try:
                Path(path).read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"--config {path}: not a YAML text file ({exc.reason} at byte {exc.start})") from None


def alias_short_callback_paths() -> None:
    """The dispatcher is the composition root: the one module of golf_lit that wires the callbacks in.

    Let configs say ``class_path: callbacks.EMA`` (the project folder's name) for ``golf_lit.callbacks.EMA``.

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


def run_lightning(argv: list[str]) -> int:
    """Run LightningCLI (``fit``/``validate``) with golf-lit's module and data module."""
    from golf_lit.train.cli import check_class_paths_in_args, run_fit
    check_config_files(argv)
    alias_short_callback_paths()
    check_class_paths_in_args(argv)
    # From the console, let LightningCLI read sys.argv itself: Lightning's DDP launcher re-runs sys.argv to start
    # the other ranks, so it must stay intact. Programmatic calls pass their own arguments.
    from_console = argv == sys.argv[1:]
    run_fit(None if from_console else argv)  # what train_gpt.py runs too (golf_lit.runs.pack.record)
    return 0


COMMANDS = {
    "eval": "golf_lit.eval.cli",
    "export": "golf_lit.runs.export",
    "data": "golf_lit.data.cli",
    "seeds": "golf_lit.runs.seeds",
    "submit": "golf_lit.runs.submit",
    "ablate": "golf_lit.runs.ablate",
    "plot": "golf_lit.runs.plot",
}
"""Command -> module with ``build_parser()`` (options from dataclasses, ``golf_lit.options``) and ``main(argv)``."""


INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}
"""Exit status of a command stopped by a signal (128 + the signal's number, as a shell reports it)."""


class _Signals:
    """SIGTERM raises KeyboardInterrupt like SIGINT does, so both stop a command the same clean way; remembers which
    signal came (for the message and the exit status). Installed only in the main thread, restored afterwards."""

    def __init__(self) -> None:
        self.received = "SIGINT"
        self._saved = None

    def _on_sigterm(self, signum, frame) -> None:
        self.received = "SIGTERM"
        raise KeyboardInterrupt

    def __enter__(self) -> _Signals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._saved = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._saved is not None:
            signal.signal(signal.SIGTERM, self._saved)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``golf-lit COMMAND ...``; bad input prints one line and exits with status 2, and SIGINT/SIGTERM stop
    the command cleanly (one line, status 130/143; partial outputs removed, a fit resumable from ``last.ckpt``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = argv[0]
    signals = _Signals()
    try:
        with signals:
            return _dispatch(command, argv)
    except KeyboardInterrupt:
        resume = " (resume with --ckpt_path last)" if command == "fit" else ""
        print(f"golf-lit {command}: interrupted by {signals.received}; partial outputs removed{resume}",
              file=sys.stderr)
        return INTERRUPTED[signals.received]


def _dispatch(command: str, argv: list[str]) -> int:
    rest = argv[1:]
    if command not in COMMANDS and command not in ("fit", "validate"):
        print(f"golf-lit: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    renamed: dict[str, str] = {}
    try:
        if command in ("fit", "validate"):
            return run_lightning(argv)
        from importlib import import_module

        module = import_module(COMMANDS[command])
        from golf_lit.options import option_names

        rest, renamed = normalize_options(rest, option_names(module.build_parser()))
        return module.main(rest)
    except (ValueError, FileNotFoundError) as exc:  # bad config or input: the message names the key/file
        print(f"golf-lit {command}: error: {as_typed(str(exc), renamed)}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable path, full disk: one line naming the file, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"golf-lit {command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
