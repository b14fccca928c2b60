"""Output directories are checked before work starts, so a read-only path fails in one line, not after training."""

from __future__ import annotations

import os
from pathlib import Path


def require_writable_dir(path: str | os.PathLike, option: str) -> Path:
    """Check that directory ``path`` exists and is writable, or could be created; nothing is created.

    Args:
        path: The output directory.
        option: The setting it came from, for the message (e.g. ``trainer.default_root_dir``).

    Raises:
        ValueError: One line naming ``option`` and the path, and what is wrong with it.
    """
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists():  # the nearest existing ancestor decides whether p can be created
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{option}: cannot create directory {str(p)!r}: {str(probe)!r} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == p else f"cannot be created ({str(probe)!r} is not writable)"
        raise ValueError(f"{option}: output directory {str(p)!r} {what}")
    return p
