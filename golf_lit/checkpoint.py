"""Checkpoint files: loaded as tensors and plain data only, written whole or not at all, ``last`` resolved.

Every checkpoint golf-lit reads goes through :func:`load_checkpoint` (``torch.load(weights_only=True)``), so a
checkpoint cannot run code when it is opened. See docs/safety.md for exactly what loading allows.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from golf_lit.io import atomic_write

SAFE_GLOBALS: tuple[Any, ...] = ()
"""Types a golf-lit checkpoint may hold beyond what ``weights_only=True`` already allows (tensors, dicts, lists,
tuples, strings, numbers, None, ``collections.OrderedDict``, torch dtypes/devices/sizes). golf-lit's Lightning
checkpoints (module, optimizers, loops, callbacks, hyperparameters) need nothing more, so this is empty."""

LAST = "last"
LAST_IF_PRESENT = "last-if-present"


class CheckpointError(ValueError):
    """A checkpoint that is missing its parts, corrupt, truncated, or needs more than plain data to load."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True`` (plus :data:`SAFE_GLOBALS`).

    Raises:
        FileNotFoundError: No such file.
        CheckpointError: The file is corrupt or truncated, is not a dict, or needs globals outside the allow-list;
            the one-line message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(p)!r}")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global: GLOBAL|Trying to call reduce for) ([\w.]+)", str(exc))
        what = found.group(1) if found else "an object that is not plain data"
        raise CheckpointError(
            f"{p}: refused to load: it needs {what}, and golf-lit loads checkpoints as tensors and plain data "
            "only (see docs/safety.md)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure is a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable checkpoint (corrupt or truncated?): {first}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p}: not a Lightning checkpoint (holds a {type(ckpt).__name__}, expected a dict)")
    return ckpt


def _keep_storage(storage, location):
    return storage


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with safe loading and whole-or-nothing writes.

    ``save_checkpoint`` writes into a temporary file in the checkpoint's directory, fsyncs it and renames it
    over the target (``golf_lit.io.atomic_write``): after a crash or a full disk the previous checkpoint is
    still there, whole. ``load_checkpoint`` is :func:`load_checkpoint`, whatever ``weights_only`` asks for.
    The ``golf-lit`` CLI installs it on every trainer; pass ``Trainer(plugins=[SafeCheckpointIO()])`` yourself.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint: storage_options is not supported")
        try:
            atomic_write(path, lambda f: torch.save(checkpoint, f))
        except OSError as exc:
            raise OSError(exc.errno, f"could not write checkpoint ({exc.strerror or exc})", str(path)) from exc

    @override
    def load_checkpoint(
        self, path, map_location: Callable | None = _keep_storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location)


def find_last_checkpoint(dirpaths: list[Path]) -> Path | None:
    """The newest ``last.ckpt`` among ``dirpaths`` (None when there is none)."""
    found = [d / "last.ckpt" for d in dirpaths if (d / "last.ckpt").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_resume_path(ckpt_path: str | None, dirpaths: list[Path]) -> str | None:
    """Turn ``--ckpt_path`` into a file to resume from.

    ``last`` must find a ``last.ckpt`` in one of the checkpoint directories (else an error naming them: a resume
    that silently starts from scratch is worse than none); ``last-if-present`` resumes from it when there is one
    and starts fresh otherwise. Any other value is returned unchanged.
    """
    if ckpt_path not in (LAST, LAST_IF_PRESENT):
        return ckpt_path
    last = find_last_checkpoint(dirpaths)
    if last is not None:
        return str(last)
    if ckpt_path == LAST_IF_PRESENT:
        return None
    where = ", ".join(repr(str(d)) for d in dirpaths) or "(no ModelCheckpoint callback is configured)"
    raise FileNotFoundError(
        f"ckpt_path: 'last' found no last.ckpt in {where}; pass '{LAST_IF_PRESENT}' to start fresh when there is none"
    )
