"""The seed's container: ``torch.save({"w": tensors, "m": meta})`` bytes <-> ``(w, m)`` (docs/record-stack.md §9.3)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from golf_lit.artifact.errors import ArtifactError


def serialize(w: Mapping[str, Tensor], m: Mapping[str, Any]) -> bytes:
    """The seed's container: ``torch.save({"w": w, "m": m})`` into memory.

    Args:
        w: Storage tensors.
        m: Format metadata.

    Returns:
        Uncompressed bytes.
    """
    buf = io.BytesIO()
    torch.save({"w": dict(w), "m": dict(m)}, buf)
    return buf.getvalue()


def torch_load(raw: bytes, source: str, what: str) -> Any:
    """``torch.load`` with ``weights_only=True`` (never runs code from the file); errors name file and part."""
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (RuntimeError, UnpicklingError, EOFError, ...)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(
            f"{source}: {what} is not a readable torch.save archive ({len(raw)} bytes): {first_line}"
        ) from e


def deserialize(raw: bytes, source: str = "<bytes>") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Parse the container and check its shape: a dict with a tensor dict ``"w"`` and a meta dict ``"m"``.

    Args:
        raw: Uncompressed torch.save bytes.
        source: Name used in error messages.

    Returns:
        ``(w, m)``.

    Raises:
        ArtifactError: The bytes are not a torch.save archive or not the ``{"w", "m"}`` container.
    """
    obj = torch_load(raw, source, "decompressed payload")
    if not isinstance(obj, dict) or not {"w", "m"} <= obj.keys():
        found = sorted(map(str, obj.keys())) if isinstance(obj, dict) else type(obj).__name__
        raise ArtifactError(f"{source}: wrong container: expected a dict with keys 'w' and 'm', found {found}")
    w, m = obj["w"], obj["m"]
    if not isinstance(w, dict) or not isinstance(m, dict):
        raise ArtifactError(f"{source}: wrong container: 'w' and 'm' must be dicts")
    for key, value in w.items():
        if not isinstance(value, Tensor):
            raise ArtifactError(
                f"{source}: wrong container: entry {key!r} of 'w' is a {type(value).__name__}, not a tensor"
            )
    return w, m
