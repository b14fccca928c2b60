"""Option spellings and config-file checks shared by the ``golf-lit`` commands (kept apart from the dispatcher,
so that the code packed into ``train_gpt.py`` does not pull in every command)."""

from __future__ import annotations

import os
from pathlib import Path


def normalize_options(argv: list[str], known: set[str]) -> list[str]:
    """Rewrite ``--some-option`` / ``--some_option`` (also ``=value`` forms) to the spelling in ``known``."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and name not in known:
            for candidate in (name[:2] + name[2:].replace("-", "_"), name[:2] + name[2:].replace("_", "-")):
                if candidate in known:
                    arg = candidate + eq + value
                    break
        out.append(arg)
    return out


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
