"""Fit the 16,000,000-byte budget: try zstd levels, then demote layers to int5 (docs/record-stack.md §9.3). Pure:
writes nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from golf_lit.artifact.code_bytes import CodeBytes
from golf_lit.artifact.compression import compress
from golf_lit.artifact.container import serialize
from golf_lit.artifact.errors import ArtifactError
from golf_lit.artifact.packing import pack
from golf_lit.artifact.quantize import QuantConfig, num_blocks, quantize_state_dict

log = logging.getLogger(__name__)


@dataclass
class ArtifactResult:
    """Outcome of :func:`build_artifact`.

    Attributes:
        blob: Compressed artifact bytes (the fitting one, or the last one tried if none fits).
        level: zstd level of ``blob`` (None for the other packings).
        int5_layers: Demoted block indices, in demotion order.
        fits: Whether code bytes + ``len(blob)`` <= the limit.
        limit_bytes: The challenge limit (16,000,000 by default).
        code_bytes: Code bytes counted against it.
        raw_bytes: Size of the uncompressed torch.save payload of ``blob``.
        sizes_tried: One dict per attempt: level, int5_layers, bytes, seconds.
        per_tensor: One dict per tensor: name, shape, dtype, format, stored_bytes (+ clip_quantile).
        timings: Seconds spent quantizing, serializing and compressing.
        code_files: ``(path, bytes)`` of the counted code files, when known.
        compressor: Packing of ``blob`` (zstd = the seed's file).
    """

    blob: bytes
    level: int | None
    int5_layers: tuple[int, ...]
    fits: bool
    limit_bytes: int
    code_bytes: int
    raw_bytes: int
    sizes_tried: list[dict[str, Any]] = field(default_factory=list)
    per_tensor: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    code_files: tuple[tuple[str, int], ...] = ()
    compressor: str = "zstd"

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
            "compressor": self.compressor,
            "zstd_level": self.level,
            "int5_layers": list(self.int5_layers),
            "raw_bytes": self.raw_bytes,
            "sizes_tried": self.sizes_tried,
            "timings": self.timings,
            "code_files": [{"path": p, "bytes": n} for p, n in self.code_files],
            "per_tensor": self.per_tensor,
        }


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


def per_tensor_table(
    state_dict: Mapping[str, Tensor], w: Mapping[str, Tensor], info: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One report row per tensor: name, shape, dtype, stored format and bytes (+ the chosen clip quantile)."""
    rows = []
    for name, t in state_dict.items():
        keys = [name] if name in w else [k for k in w if k.startswith(f"{name}.") and k[len(name) + 1 :] in _PARTS]
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
        row.update((k, v) for k, v in info[name].items() if k != "format")
        rows.append(row)
    return rows


_PARTS = frozenset({"q", "scale", "lqer_A", "lqer_B", "lqer_A_scale", "lqer_B_scale"})


def build_artifact(
    state_dict: Mapping[str, Tensor],
    cfg: QuantConfig | None = None,
    code_bytes: int | CodeBytes = 0,
    compressor: Callable[[bytes, int], bytes] | None = None,
    hessians: Mapping[str, Tensor] | None = None,
) -> ArtifactResult:
    """Quantize and compress until the artifact fits ``limit = artifact_limit_bytes - code_bytes``
    (docs/record-stack.md §9.3).

    All-int6 is tried with every packing of ``cfg.compressor`` in order (zstd at every level of
    ``cfg.zstd_levels``); then (if ``cfg.int5_demotion``) layers are demoted to int5 cumulatively in
    :func:`demotion_order`, retrying every packing after each. The first blob that fits wins; every size tried is
    reported. Pure: nothing is written.

    Args:
        state_dict: The model's state dict (EMA weights already swapped in).
        cfg: Options; defaults to QuantConfig().
        code_bytes: Code bytes counted against the limit.
        compressor: ``(raw, level) -> blob`` for the zstd packing; default :func:`compress` (tests inject fakes).
        hessians: Calibration Hessians for ``cfg.gptq`` (name -> matrix).

    Returns:
        The winning attempt, or the last one with ``fits=False``.
    """
    cfg = cfg or QuantConfig()
    code = code_bytes if isinstance(code_bytes, CodeBytes) else CodeBytes(int(code_bytes), "number")
    if compressor is None:

        def compressor(raw: bytes, level: int) -> bytes:
            return compress(raw, level, cfg.zstd_checksum)

    limit = cfg.artifact_limit_bytes - code.total
    order = demotion_order(num_blocks(list(state_dict))) if cfg.int5_demotion else []
    cache: dict[tuple[str, str], Any] = {}  # only the demoted layers' tensors are quantized again
    timings = {"quantize_s": 0.0, "serialize_s": 0.0, "compress_s": 0.0}
    sizes_tried: list[dict[str, Any]] = []
    fits = False
    for n_demoted in range(len(order) + 1):
        int5 = tuple(order[:n_demoted])
        t0 = time.perf_counter()
        info: dict[str, dict[str, Any]] = {}
        w, m = quantize_state_dict(state_dict, int5, cfg, details=info, cache=cache, hessians=hessians)
        t1 = time.perf_counter()
        raw = serialize(w, m)
        timings["quantize_s"] += t1 - t0
        timings["serialize_s"] += time.perf_counter() - t1
        attempts = [(p, lv) for p in cfg.compressors for lv in (cfg.zstd_levels if p == "zstd" else [None])]
        for packing_name, level in attempts:
            t3 = time.perf_counter()
            blob = compressor(raw, level) if packing_name == "zstd" else pack(w, m, packing_name, cfg.pergroup_backend)
            dt = time.perf_counter() - t3
            timings["compress_s"] += dt
            sizes_tried.append(
                {"compressor": packing_name, "level": level, "int5_layers": list(int5), "bytes": len(blob),
                 "seconds": round(dt, 4)}
            )  # fmt: skip
            fits = len(blob) <= limit
            log.info(
                "artifact attempt: %s int5_layers=%s -> %d bytes (limit %d): %s",
                attempt_name(packing_name, level),
                list(int5),
                len(blob),
                limit,
                "fits" if fits else "too big",
            )
            if fits:
                break
        if fits:
            break
    if fits and int5:
        log.warning(int5_warning(int5, cfg.matrix_bits))
    return ArtifactResult(
        blob=blob,
        level=level,
        int5_layers=int5,
        fits=fits,
        limit_bytes=cfg.artifact_limit_bytes,
        code_bytes=code.total,
        raw_bytes=len(raw),
        sizes_tried=sizes_tried,
        per_tensor=per_tensor_table(state_dict, w, info),
        timings=timings,
        code_files=code.files,
        compressor=packing_name,
    )


def attempt_name(packing_name: str, level: int | None) -> str:
    """``zstd-16``, ``brotli``, ``pergroup``."""
    return f"{packing_name}-{level}" if level is not None else packing_name


def int5_warning(int5_layers, matrix_bits: int) -> str | None:
    """The loud line of a demoted artifact, for the log and the report (None when nothing was demoted)."""
    if not int5_layers:
        return None
    return (f"WARNING: INT5 DEMOTION: the artifact fits only with block(s) {list(int5_layers)} quantized to "
            f"int{matrix_bits - 1} instead of int{matrix_bits}; expect a worse val_bpb than the configuration "
            "intends (check quant.compressor / quant.pergroup_backend and the code bytes counted)")
