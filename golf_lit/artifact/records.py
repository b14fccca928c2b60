"""Load artifacts and record checkpoints into a state dict for ``load_state_dict(strict=True)``
(docs/record-stack.md §9.3)."""

from __future__ import annotations

import logging
import lzma
import struct
import zlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from golf_lit.artifact import packing
from golf_lit.artifact.compression import MAX_DECOMPRESSED_BYTES, ZSTD_MAGIC, decompress
from golf_lit.artifact.container import deserialize, torch_load
from golf_lit.artifact.errors import ArtifactError
from golf_lit.artifact.quantize import FLOAT_DTYPES, QuantStateError, dequantize_state_dict

log = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"

RECORD_DROPPABLE = frozenset({"blocks.0.attn.vr_lambda"})
"""Record tensors golf-lit's model does not have: the seed's layer 0 owns value-residual lambdas it never uses."""


def read_bytes(path: str | Path, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """The file's bytes; ArtifactError naming it when it is missing, empty or larger than ``max_bytes``."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: artifact file not found")
    size = p.stat().st_size
    if size > max_bytes:
        raise ArtifactError(f"{p}: {size:,} bytes, more than the cap of {max_bytes:,} bytes (max_decompressed_bytes)")
    data = p.read_bytes()
    if not data:
        raise ArtifactError(f"{p}: empty file (byte offset 0)")
    return data


MALFORMED = (TypeError, KeyError, IndexError, AttributeError, OverflowError, RuntimeError, struct.error,
             lzma.LZMAError, zlib.error, MemoryError, RecursionError)  # fmt: skip
"""What a decoder may raise on bytes that pass every explicit check; turned into one ArtifactError line."""


def payload_bound(template: Mapping[str, Tensor]) -> int:
    """Most decompressed bytes an artifact of a model with this state dict can need.

    Per element at most 4 bytes (fp32 passthrough) plus 8 for LQER factors (fp32 packing at full rank: A and B
    together hold at most 2 elements per element); plus torch.save's per-entry overhead (generous 4 KiB per
    tensor for its up to 6 entries) and 1 MiB for the metadata.
    """
    return sum(12 * t.numel() + 4096 for t in template.values()) + (1 << 20)


def malformed(source: str, exc: BaseException) -> ArtifactError:
    """One-line ArtifactError for a decoder failure not caught by an explicit check."""
    text = str(exc).strip().splitlines()
    return ArtifactError(f"{source}: malformed artifact ({type(exc).__name__}: {text[0][:200] if text else ''})")


def parse_artifact(
    data: bytes,
    source: str,
    max_bytes: int = MAX_DECOMPRESSED_BYTES,
    template: Mapping[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Artifact bytes -> ``(w, m)``: the seed's zstd frame, or any golf-lit container (packing.py).

    ``max_bytes`` bounds the decompressed size of the whole file; with ``template`` (the declared model's state
    dict, e.g. on the meta device) it is lowered to :func:`payload_bound` and sizes are checked against its shapes.
    """
    if template is not None:
        max_bytes = min(max_bytes, payload_bound(template))
    try:
        return _parse(data, source, max_bytes, template)
    except MALFORMED as exc:
        raise malformed(source, exc) from exc


def _parse(
    data: bytes, source: str, max_bytes: int, template: Mapping[str, Tensor] | None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if data[:4] == packing.MAGIC:
        return packing.unpack(data, source, max_bytes, template)
    if data[:4] != ZSTD_MAGIC:
        raise ArtifactError(
            f"{source}: not a zstd artifact or a golf-lit container (byte offset 0: expected magic "
            f"{ZSTD_MAGIC.hex()} or {packing.MAGIC.hex()}, found {data[:4].hex()!r})"
        )
    return deserialize(decompress(data, source, max_bytes), source)


def read_artifact(
    path: str | Path, max_bytes: int = MAX_DECOMPRESSED_BYTES
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an artifact (ours or a record's ``final_model.int6.ptz``).

    Args:
        path: Artifact file.
        max_bytes: Cap on the decompressed size of any stream in it.

    Returns:
        ``(w, m)``.

    Raises:
        ArtifactError: Missing, unknown format, corrupt, truncated, over the cap, or the wrong container.
    """
    return parse_artifact(read_bytes(path, max_bytes), str(path), max_bytes)


def _match_template(
    state_dict: Mapping[str, Tensor],
    template: Mapping[str, Tensor],
    source: str,
    droppable: Collection[str] = frozenset(),
    check_values: bool = True,
) -> dict[str, Tensor]:
    """Same names as the template (dropping and logging ``droppable`` extras), shapes checked, template dtypes.

    ``check_values``: also refuse a float tensor stored in another dtype or holding NaN/Inf. Off for dequantized
    artifacts, whose every stored and dequantized tensor :func:`dequantize_tensor` has already checked."""
    for name in state_dict:
        if name not in template:
            if name in droppable:
                log.info(
                    "%s: dropped %s (golf-lit's model has no such parameter; the seed never used it)", source, name
                )
                continue
            raise ArtifactError(f"{source}: unexpected tensor {name!r}: the model has no parameter of that name")
    out: dict[str, Tensor] = {}
    for name, like in template.items():
        if name not in state_dict:
            raise ArtifactError(f"{source}: tensor {name!r} is missing from the file")
        t = state_dict[name]
        if tuple(t.shape) != tuple(like.shape):
            raise ArtifactError(
                f"{source}: tensor {name!r} has shape {tuple(t.shape)} but the model expects {tuple(like.shape)}"
            )
        if like.is_floating_point():
            if check_values and t.dtype not in FLOAT_DTYPES:
                raise ArtifactError(
                    f"{source}: tensor {name!r} is {str(t.dtype).removeprefix('torch.')}, expected a floating-point "
                    "tensor (float16, bfloat16 or float32)"
                )
            if check_values and not bool(torch.isfinite(t).all()):
                raise ArtifactError(f"{source}: tensor {name!r} holds NaN or infinite values")
        elif t.dtype != like.dtype:
            raise ArtifactError(
                f"{source}: tensor {name!r} is {str(t.dtype).removeprefix('torch.')}, expected "
                f"{str(like.dtype).removeprefix('torch.')}"
            )
        out[name] = t.to(like.dtype) if t.dtype != like.dtype else t
    return out


def _dequantize_file(
    w: Mapping[str, Tensor],
    m: Mapping[str, Any],
    template: Mapping[str, Tensor],
    source: str,
    droppable: Collection[str],
) -> dict[str, Tensor]:
    try:
        sd = dequantize_state_dict(w, m, template)
    except QuantStateError as e:
        raise ArtifactError(f"{source}: {e}") from e
    except MALFORMED as e:
        raise malformed(source, e) from e
    extras = {name: w.get(name, torch.empty(0)) for name in m if name not in template}
    return _match_template({**sd, **extras}, template, source, droppable, check_values=False)


def load_artifact_state_dict(
    path: str | Path, template: Mapping[str, Tensor], max_bytes: int = MAX_DECOMPRESSED_BYTES
) -> dict[str, Tensor]:
    """Read, decompress and dequantize an artifact into a state dict for ``load_state_dict(strict=True)``.

    Args:
        path: Artifact file.
        template: The target model's state dict (names, shapes, dtypes).
        max_bytes: Cap on the decompressed size.

    Returns:
        Name -> tensor in the template's order and dtypes.

    Raises:
        ArtifactError: Bad file, or a tensor missing, unexpected or of the wrong shape (named).
    """
    w, m = parse_artifact(read_bytes(path, max_bytes), str(path), max_bytes, template)
    return _dequantize_file(w, m, template, str(path), frozenset())


def load_record_checkpoint(
    path: str | Path, template: Mapping[str, Tensor], max_bytes: int = MAX_DECOMPRESSED_BYTES
) -> dict[str, Tensor]:
    """Load any artifact golf-lit writes, a record's ``final_model.int6.ptz`` or its ``final_model.pt``.

    The file kind is recognised by its first bytes. ``blocks.0.attn.vr_lambda`` (present in the seed, absent
    from golf-lit's model) is dropped with a log line.

    Args:
        path: Record file.
        template: The target model's state dict.
        max_bytes: Cap on the decompressed size of any stream.

    Returns:
        A state dict loadable with ``strict=True`` into golf-lit's GPT.

    Raises:
        ArtifactError: Unreadable file, or a tensor missing, unexpected or of the wrong shape (named).
    """
    data = read_bytes(path, max_bytes)
    source = str(path)
    if data[:4] != ZIP_MAGIC:
        if data[:4] not in (ZSTD_MAGIC, packing.MAGIC):
            raise ArtifactError(
                f"{source}: neither a zstd artifact nor a torch.save checkpoint (byte offset 0: found {data[:4].hex()})"
            )
        w, m = parse_artifact(data, source, max_bytes, template)
        return _dequantize_file(w, m, template, source, RECORD_DROPPABLE)
    obj = torch_load(data, source, "checkpoint")
    if not isinstance(obj, dict):
        raise ArtifactError(f"{source}: expected a state dict (name -> tensor), found a {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise ArtifactError(
                f"{source}: expected a state dict (name -> tensor), but entry {key!r} is a {type(value).__name__}"
            )
    return _match_template(obj, template, source, RECORD_DROPPABLE)
