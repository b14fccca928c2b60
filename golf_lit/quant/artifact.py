"""The scored artifact: serialize, compress, fit the 16,000,000-byte budget, write atomically, load (SPEC §9.3-9.4).

File format (the seed's, so records and golf-lit artifacts are the same kind of file):
``zstd(torch.save({"w": tensors, "m": meta}))`` with ``(w, m)`` from :func:`quantize_state_dict`.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import zstandard
from torch import Tensor

import golf_lit
from golf_lit.io import atomic_write_bytes
from golf_lit.quant.quantize import (
    QuantConfig,
    QuantStateError,
    dequantize_state_dict,
    num_blocks,
    quantize_tensor,
    tensor_format,
)

log = logging.getLogger(__name__)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZIP_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 20

SCORER_SOURCES = (
    "__init__.py",
    "cli.py",
    "paths.py",
    "config.py",
    "bpb.py",
    "io.py",
    "losses.py",
    "metrics.py",
    "parallelism.py",
    "model/*.py",
    "quant/*.py",
    "data/__init__.py",
    "data/shards.py",
    "data/tokenizer.py",
    "eval/*.py",
    "eval/strategies/*.py",
    "ranks.py",
)
"""Files (globs relative to the golf_lit package) a scorer needs to rebuild the model from the artifact and
evaluate it; their UTF-8 bytes are the default code bytes."""

RECORD_DROPPABLE = frozenset({"blocks.0.attn.vr_lambda"})
"""Record tensors golf-lit's model does not have: the seed's layer 0 owns value-residual lambdas it never uses."""


class ArtifactError(ValueError):
    """A bad artifact or checkpoint file; the message names the file and the tensor or byte offset."""


class ArtifactBudgetError(ArtifactError):
    """No quantization variant fits the budget; the last blob was kept under an over-budget name.

    Attributes:
        result: The last attempt (``result.fits`` is False).
        over_budget_path: Where that blob was written.
    """

    def __init__(self, message: str, result: ArtifactResult, over_budget_path: Path) -> None:
        super().__init__(message)
        self.result = result
        self.over_budget_path = over_budget_path


@dataclass(frozen=True)
class CodeBytes:
    """Code bytes counted against the budget and where the number came from.

    Attributes:
        total: Bytes.
        source: ``"auto"``, ``"file:<path>"`` or ``"number"``.
        files: ``(path, bytes)`` per counted file (empty for a given number).
    """

    total: int
    source: str
    files: tuple[tuple[str, int], ...] = ()


@dataclass
class ArtifactResult:
    """Outcome of :func:`build_artifact`.

    Attributes:
        blob: Compressed artifact bytes (the fitting one, or the last one tried if none fits).
        level: zstd level of ``blob``.
        int5_layers: Demoted block indices, in demotion order.
        fits: Whether code bytes + ``len(blob)`` <= the limit.
        limit_bytes: The challenge limit (16,000,000 by default).
        code_bytes: Code bytes counted against it.
        raw_bytes: Size of the uncompressed torch.save payload of ``blob``.
        sizes_tried: One dict per attempt: level, int5_layers, bytes, seconds.
        per_tensor: One dict per tensor: name, shape, dtype, format, stored_bytes (+ clip_quantile).
        timings: Seconds spent quantizing, serializing and compressing.
        code_files: ``(path, bytes)`` of the counted code files, when known.
    """

    blob: bytes
    level: int
    int5_layers: tuple[int, ...]
    fits: bool
    limit_bytes: int
    code_bytes: int
    raw_bytes: int
    sizes_tried: list[dict[str, Any]] = field(default_factory=list)
    per_tensor: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    code_files: tuple[tuple[str, int], ...] = ()

    @property
    def bytes_model(self) -> int:
        """Compressed model bytes."""
        return len(self.blob)

    @property
    def bytes_total(self) -> int:
        """Code bytes + compressed model bytes, the number the challenge limits."""
        return self.bytes_model + self.code_bytes

    def summary(self) -> dict[str, Any]:
        """JSON-ready report of everything but the blob itself."""
        return {
            "bytes_total": self.bytes_total,
            "bytes_model": self.bytes_model,
            "bytes_code": self.code_bytes,
            "limit_bytes": self.limit_bytes,
            "fits": self.fits,
            "zstd_level": self.level,
            "int5_layers": list(self.int5_layers),
            "raw_bytes": self.raw_bytes,
            "sizes_tried": self.sizes_tried,
            "timings": self.timings,
            "code_files": [{"path": p, "bytes": n} for p, n in self.code_files],
            "per_tensor": self.per_tensor,
        }


# ----------------------------------------------------------------------------------------------- code bytes


def count_code_bytes(spec: int | str | Path = "auto", package_root: Path | None = None) -> CodeBytes:
    """Resolve the code bytes counted against the budget.

    Args:
        spec: ``"auto"`` (SCORER_SOURCES that exist now, as UTF-8 bytes), a file path (its size), or a number.
        package_root: Directory of the golf_lit package for ``"auto"`` (default: the imported package).

    Returns:
        The count and the files it came from.

    Raises:
        ValueError: A negative number or a missing file, naming ``quant.code_bytes``.
    """
    if isinstance(spec, bool):
        raise ValueError(f"quant.code_bytes: expected 'auto', a file path or a number of bytes, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"quant.code_bytes: must be >= 0, got {spec}")
        return CodeBytes(spec, "number")
    if spec == "auto":
        root = Path(package_root) if package_root is not None else Path(golf_lit.__file__).resolve().parent
        paths = sorted({p for pattern in SCORER_SOURCES for p in root.glob(pattern) if p.is_file()})
        files = tuple((f"golf_lit/{p.relative_to(root).as_posix()}", len(p.read_bytes())) for p in paths)
        return CodeBytes(sum(n for _, n in files), "auto", files)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"quant.code_bytes: {str(spec)!r} is neither 'auto', a number, nor an existing file")
    size = len(path.read_bytes())
    return CodeBytes(size, f"file:{path}", ((str(path), size),))


# ---------------------------------------------------------------------------------------- bytes <-> (w, m)


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


def compress(raw: bytes, level: int, checksum: bool = False) -> bytes:
    """zstd-compress ``raw`` into one frame (single-threaded, content size in the header).

    Args:
        raw: Bytes to compress.
        level: zstd level (1-22).
        checksum: Append the frame's 4-byte content checksum.

    Returns:
        Compressed bytes.
    """
    return zstandard.ZstdCompressor(level=level, write_checksum=checksum).compress(raw)


def decompress(blob: bytes, source: str = "<bytes>") -> bytes:
    """Decompress one zstd frame, reporting where it fails.

    Args:
        blob: Compressed bytes.
        source: Name used in error messages (the file).

    Returns:
        Decompressed bytes.

    Raises:
        ArtifactError: Not zstd, corrupt (with the byte range where decoding failed), truncated, or trailing bytes.
    """
    if len(blob) < 4 or blob[:4] != ZSTD_MAGIC:
        raise ArtifactError(
            f"{source}: not a zstd artifact (byte offset 0: expected magic {ZSTD_MAGIC.hex()}, "
            f"found {blob[:4].hex()!r})"
        )
    dobj = zstandard.ZstdDecompressor().decompressobj()
    parts: list[bytes] = []
    for start in range(0, len(blob), _CHUNK):
        chunk = blob[start : start + _CHUNK]
        try:
            parts.append(dobj.decompress(chunk))
        except zstandard.ZstdError as e:
            end = start + len(chunk)
            raise ArtifactError(f"{source}: corrupt zstd data between byte offsets {start} and {end}: {e}") from e
        if dobj.eof:
            frame_end = start + len(chunk) - len(dobj.unused_data)
            if frame_end < len(blob):
                raise ArtifactError(
                    f"{source}: {len(blob) - frame_end} unexpected bytes after the zstd frame "
                    f"at byte offset {frame_end}"
                )
            break
    if not dobj.eof:
        raise ArtifactError(f"{source}: truncated zstd frame: the file ends at byte offset {len(blob)} mid-frame")
    return b"".join(parts)


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
    obj = _torch_load(raw, source, "decompressed payload")
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


def _torch_load(raw: bytes, source: str, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (RuntimeError, UnpicklingError, EOFError, ...)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(
            f"{source}: {what} is not a readable torch.save archive ({len(raw)} bytes): {first_line}"
        ) from e


# ---------------------------------------------------------------------------------------------- the budget


def demotion_order(num_layers: int) -> list[int]:
    """Layers in the order they are demoted to int5: the middle first, then alternately above and below.

    Args:
        num_layers: Number of blocks.

    Returns:
        E.g. ``[5, 6, 4, 7, 3, 8, 2, 9, 1, 10, 0]`` for 11 layers.
    """
    mid = num_layers // 2
    order = [mid] if num_layers else []
    for d in range(1, num_layers + 1):
        for layer in (mid + d, mid - d):
            if 0 <= layer < num_layers:
                order.append(layer)
    return order


def _per_tensor_table(
    state_dict: Mapping[str, Tensor], w: Mapping[str, Tensor], info: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for name, t in state_dict.items():
        keys = [name] if name in w else [f"{name}.q", f"{name}.scale"]
        fmt = info[name]["format"]
        if fmt == "passthrough":
            fmt = "fp16" if w[name].dtype == torch.float16 else str(w[name].dtype).removeprefix("torch.")
        elif fmt == "passthrough_ctrl":
            fmt = "fp32"
        row = {
            "name": name,
            "shape": list(t.shape),
            "dtype": str(t.dtype).removeprefix("torch."),
            "format": fmt,
            "stored_bytes": sum(w[k].numel() * w[k].element_size() for k in keys),
        }
        if "clip_quantile" in info[name]:
            row["clip_quantile"] = info[name]["clip_quantile"]
        rows.append(row)
    return rows


def build_artifact(
    state_dict: Mapping[str, Tensor],
    cfg: QuantConfig | None = None,
    code_bytes: int | CodeBytes = 0,
    compressor: Callable[[bytes, int], bytes] | None = None,
) -> ArtifactResult:
    """Quantize and compress until the artifact fits ``limit = artifact_limit_bytes - code_bytes`` (SPEC §9.3).

    All-int6 is tried at every level of ``cfg.zstd_levels`` in order; then (if ``cfg.int5_demotion``) layers
    are demoted to int5 cumulatively in :func:`demotion_order`, retrying every level after each. The first
    blob that fits wins. Pure: nothing is written.

    Args:
        state_dict: The model's state dict (EMA weights already swapped in).
        cfg: Options; defaults to QuantConfig().
        code_bytes: Code bytes counted against the limit.
        compressor: ``(raw, level) -> blob``; default zstd via :func:`compress` (tests inject fakes).

    Returns:
        The winning attempt, or the last one with ``fits=False``.
    """
    cfg = cfg or QuantConfig()
    code = code_bytes if isinstance(code_bytes, CodeBytes) else CodeBytes(int(code_bytes), "number")
    if compressor is None:

        def compressor(raw: bytes, level: int) -> bytes:
            return compress(raw, level, cfg.zstd_checksum)

    limit = cfg.artifact_limit_bytes - code.total
    names = list(state_dict)
    order = demotion_order(num_blocks(names)) if cfg.int5_demotion else []
    cache: dict[tuple[str, bool], tuple[dict[str, Tensor], Any, dict[str, Any]]] = {}
    timings = {"quantize_s": 0.0, "serialize_s": 0.0, "compress_s": 0.0}
    sizes_tried: list[dict[str, Any]] = []
    blob, level, raw_len = b"", cfg.zstd_levels[0], 0
    for n_demoted in range(len(order) + 1):
        int5 = tuple(order[:n_demoted])
        t0 = time.perf_counter()
        w: dict[str, Tensor] = {}
        m: dict[str, Any] = {}
        info: dict[str, dict[str, Any]] = {}
        for name, tensor in state_dict.items():
            key = (name, tensor_format(name, tensor, int5))
            if key not in cache:  # only the demoted layers' tensors are quantized again
                cache[key] = quantize_tensor(name, tensor, int5, cfg)
            entries, m[name], info[name] = cache[key]
            w.update(entries)
        t1 = time.perf_counter()
        raw = serialize(w, m)
        t2 = time.perf_counter()
        timings["quantize_s"] += t1 - t0
        timings["serialize_s"] += t2 - t1
        raw_len = len(raw)
        for level in cfg.zstd_levels:
            t3 = time.perf_counter()
            blob = compressor(raw, level)
            dt = time.perf_counter() - t3
            timings["compress_s"] += dt
            sizes_tried.append({"level": level, "int5_layers": list(int5), "bytes": len(blob), "seconds": round(dt, 4)})
            fits = len(blob) <= limit
            log.info(
                "artifact attempt: zstd-%d int5_layers=%s -> %d bytes (limit %d): %s",
                level,
                list(int5),
                len(blob),
                limit,
                "fits" if fits else "too big",
            )
            if fits:
                return ArtifactResult(
                    blob,
                    level,
                    int5,
                    True,
                    cfg.artifact_limit_bytes,
                    code.total,
                    raw_len,
                    sizes_tried,
                    _per_tensor_table(state_dict, w, info),
                    timings,
                    code.files,
                )
    return ArtifactResult(
        blob,
        level,
        int5,
        False,
        cfg.artifact_limit_bytes,
        code.total,
        raw_len,
        sizes_tried,
        _per_tensor_table(state_dict, w, info),
        timings,
        code.files,
    )


# ------------------------------------------------------------------------------------------------ files


def over_budget_path(path: str | Path) -> Path:
    """Name for a blob that does not fit: ``final_model.int6.ptz`` -> ``final_model.int6.OVER_BUDGET.ptz``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.OVER_BUDGET{p.suffix}")


def write_artifact(path: str | Path, blob: bytes) -> Path:
    """Write the blob atomically (temp file + rename): an existing artifact is replaced only by a complete one.

    Args:
        path: Destination.
        blob: Compressed artifact bytes.

    Returns:
        The destination path.
    """
    return atomic_write_bytes(path, blob)


def export_artifact(
    state_dict: Mapping[str, Tensor],
    path: str | Path,
    cfg: QuantConfig | None = None,
    code_bytes: int | CodeBytes | None = None,
    compressor: Callable[[bytes, int], bytes] | None = None,
) -> ArtifactResult:
    """Build the artifact and write it: the one call an exporter needs.

    Args:
        state_dict: Weights to export.
        path: Artifact path, e.g. ``out/final_model.int6.ptz``.
        cfg: Options; defaults to QuantConfig().
        code_bytes: Code bytes; default ``count_code_bytes(cfg.code_bytes)``.
        compressor: See :func:`build_artifact`.

    Returns:
        The fitting result (its blob is now at ``path``).

    Raises:
        ArtifactBudgetError: Nothing fits; the last blob was written to :func:`over_budget_path` and ``path``
            was left untouched. The message lists every size reached.
    """
    cfg = cfg or QuantConfig()
    if code_bytes is None:
        code_bytes = count_code_bytes(cfg.code_bytes)
    result = build_artifact(state_dict, cfg, code_bytes, compressor)
    if result.fits:
        write_artifact(path, result.blob)
        return result
    over = write_artifact(over_budget_path(path), result.blob)
    tried = "; ".join(f"zstd-{s['level']} int5={s['int5_layers']}: {s['bytes']:,}" for s in result.sizes_tried)
    limit = result.limit_bytes - result.code_bytes
    raise ArtifactBudgetError(
        f"no artifact variant fits {result.limit_bytes:,} bytes - {result.code_bytes:,} code bytes = {limit:,} bytes "
        f"(sizes reached: {tried}); the last blob was kept at {over}, {path} was not written",
        result,
        over,
    )


def _read_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: artifact file not found")
    data = p.read_bytes()
    if not data:
        raise ArtifactError(f"{p}: empty file (byte offset 0)")
    return data


def read_artifact(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an artifact (ours or a record's ``final_model.int6.ptz``).

    Args:
        path: Artifact file.

    Returns:
        ``(w, m)``.

    Raises:
        ArtifactError: Missing, not zstd, corrupt, truncated, or the wrong container.
    """
    return deserialize(decompress(_read_bytes(path), str(path)), str(path))


def _match_template(
    state_dict: Mapping[str, Tensor],
    template: Mapping[str, Tensor],
    source: str,
    droppable: Collection[str] = frozenset(),
) -> dict[str, Tensor]:
    """Same names as the template (dropping and logging ``droppable`` extras), shapes checked, template dtypes."""
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
        out[name] = t.to(like.dtype) if t.dtype != like.dtype and t.is_floating_point() else t
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
    extras = {name: w.get(name, torch.empty(0)) for name in m if name not in template}
    return _match_template({**sd, **extras}, template, source, droppable)


def load_artifact_state_dict(path: str | Path, template: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Read, decompress and dequantize an artifact into a state dict for ``load_state_dict(strict=True)``.

    Args:
        path: Artifact file.
        template: The target model's state dict (names, shapes, dtypes).

    Returns:
        Name -> tensor in the template's order and dtypes.

    Raises:
        ArtifactError: Bad file, or a tensor missing, unexpected or of the wrong shape (named).
    """
    w, m = read_artifact(path)
    return _dequantize_file(w, m, template, str(path), frozenset())


def load_record_checkpoint(path: str | Path, template: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Load a record's ``final_model.pt`` (a plain torch.save state dict) or ``final_model.int6.ptz``.

    The file kind is recognised by its first bytes. ``blocks.0.attn.vr_lambda`` (present in the seed, absent
    from golf-lit's model) is dropped with a log line.

    Args:
        path: Record file.
        template: The target model's state dict.

    Returns:
        A state dict loadable with ``strict=True`` into golf-lit's GPT.

    Raises:
        ArtifactError: Unreadable file, or a tensor missing, unexpected or of the wrong shape (named).
    """
    data = _read_bytes(path)
    source = str(path)
    if data[:4] == ZSTD_MAGIC:
        w, m = deserialize(decompress(data, source), source)
        return _dequantize_file(w, m, template, source, RECORD_DROPPABLE)
    if data[:4] != ZIP_MAGIC:
        raise ArtifactError(
            f"{source}: neither a zstd artifact nor a torch.save checkpoint (byte offset 0: found {data[:4].hex()})"
        )
    obj = _torch_load(data, source, "checkpoint")
    if not isinstance(obj, dict):
        raise ArtifactError(f"{source}: expected a state dict (name -> tensor), found a {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise ArtifactError(
                f"{source}: expected a state dict (name -> tensor), but entry {key!r} is a {type(value).__name__}"
            )
    return _match_template(obj, template, source, RECORD_DROPPABLE)
