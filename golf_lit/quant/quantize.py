"""Quantize a state dict into the seed's mixed int6/int5/int8/fp16 format and back (SPEC §9.1-9.2).

The output is a pair ``(w, m)``: ``w`` maps storage keys to tensors (``name`` for passthrough tensors,
``name.q`` and ``name.scale`` for quantized ones) and ``m`` maps each tensor name to its format
(``"passthrough"``, ``"passthrough_ctrl"`` or ``{"type": "int6" | "int5" | "int8"}``). With the default
options the tensors are bit-identical to the seed's ``mixed_quantize_int6`` (PR #761).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from golf_lit.model.names import is_control

PASSTHROUGH_MAX_NUMEL = 65_536
"""Float tensors with at most this many elements are stored as fp16 as they are."""

INT8_CLIP_QUANTILE = 99.99984 / 100.0
"""Per-row clip quantile of |W| for int8 matrices (computed as the seed does, as a percentage over 100)."""


INT6_CATEGORIES = frozenset({"mlp", "attn"})
"""Categories quantized per row to int6 (int5 in demoted layers); every other large matrix gets int8."""

GPTQ_LITE_PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
"""Clip quantiles of |W| per row that GPTQ-lite chooses among (2026-03-22 record)."""

INT6_QMAX = 31
INT5_QMAX = 15
INT8_QMAX = 127


class QuantStateError(ValueError):
    """Quantized weights that do not match their metadata or the target model (names the tensor)."""


@dataclass(kw_only=True)
class QuantConfig:
    """How the artifact is quantized, compressed and fitted into the size budget (SPEC §9)."""

    scale_floor_mult: float = 1.0
    """Per-row int6/int5 scales are at least scale_floor_mult / qmax. 1.0 is the seed's floor, which gives every row
    with max |w| < 1 the fixed step 1/qmax (SPEC §15.10); lowering it is an experiment, not the record."""
    zstd_levels: list[int] = field(default_factory=lambda: [16, 1, 17, 2])
    """zstd levels tried in this order for each quantization variant; the first blob that fits wins (seed)."""
    zstd_checksum: bool = False
    """Append zstd's 4-byte frame checksum (off, as in the seed, so the container is byte-identical to the seed's;
    torch.save's zip archive still carries a CRC-32 per tensor, so corruption is detected on load either way)."""
    int5_demotion: bool = True
    """If no level fits, demote block layers to int5 one at a time, outward from the middle, until one does."""
    gptq_lite: bool = False
    """Per int6/int5 matrix, choose the per-row clip quantile among GPTQ_LITE_PERCENTILES with the lowest
    reconstruction MSE, range [-qmax, qmax] (2026-03-22 record). Off in the seed (plain per-row amax)."""
    code_bytes: int | str = "auto"
    """Code size counted against the budget: 'auto' (UTF-8 bytes of the golf_lit files a scorer needs), a path to a
    file whose size is counted, or a number of bytes."""
    artifact_limit_bytes: int = 16_000_000
    """Challenge limit on code bytes + compressed model bytes (decimal bytes)."""

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> ValueError:
            return ValueError(f"quant.{key}: {msg}, got {getattr(self, key)!r}")

        if not (isinstance(self.scale_floor_mult, (int, float)) and math.isfinite(self.scale_floor_mult)):
            raise bad("scale_floor_mult", "must be a finite number")
        if not self.scale_floor_mult >= 1e-3:
            raise bad("scale_floor_mult", "must be >= 1e-3 (smaller floors underflow the fp16 scale)")
        levels = list(self.zstd_levels)
        if not levels:
            raise bad("zstd_levels", "must list at least one level")
        for level in levels:
            if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
                raise bad("zstd_levels", "every level must be an integer between 1 and 22")
        self.zstd_levels = levels
        if not isinstance(self.artifact_limit_bytes, int) or self.artifact_limit_bytes <= 0:
            raise bad("artifact_limit_bytes", "must be a positive integer")
        if isinstance(self.code_bytes, bool):
            raise bad("code_bytes", "must be 'auto', a file path or a number of bytes")
        if isinstance(self.code_bytes, int):
            if not 0 <= self.code_bytes < self.artifact_limit_bytes:
                raise bad("code_bytes", f"must be between 0 and artifact_limit_bytes={self.artifact_limit_bytes}")
        elif not isinstance(self.code_bytes, str) or not self.code_bytes:
            raise bad("code_bytes", "must be 'auto', a file path or a number of bytes")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (for reports)."""
        return asdict(self)


def classify_tensor(name: str) -> str:
    """Category of a state-dict entry by name, as the seed decides it.

    Args:
        name: State-dict key.

    Returns:
        ``"embed"``, ``"mlp"``, ``"attn"`` or ``"other"``.
    """
    if "tok_emb" in name or "lm_head" in name:
        return "embed"
    if ".mlp." in name:
        return "mlp"
    if ".attn." in name or ".proj." in name:  # ".proj." outside the MLP (the MLP case returned above)
        return "attn"
    return "other"


def block_index(name: str) -> int | None:
    """Block number of a ``blocks.<i>.`` key, else None."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def num_blocks(names: Collection[str]) -> int:
    """Number of transformer blocks: largest ``blocks.<i>`` index + 1 (0 when there are none)."""
    indices = [i for i in (block_index(n) for n in names) if i is not None]
    return max(indices) + 1 if indices else 0


def tensor_format(name: str, tensor: Tensor, int5_layers: Collection[int] = frozenset()) -> str:
    """Storage format the quantizer gives a tensor (works on meta tensors: uses only name, dtype and size).

    Args:
        name: State-dict key.
        tensor: The tensor (only dtype and numel are read).
        int5_layers: Block indices demoted from int6 to int5.

    Returns:
        ``"passthrough"`` (fp16 for floats, unchanged otherwise), ``"passthrough_ctrl"`` (fp32), ``"int6"``,
        ``"int5"`` or ``"int8"``.
    """
    if not tensor.is_floating_point() or tensor.numel() <= PASSTHROUGH_MAX_NUMEL:
        return "passthrough"
    if is_control(name):
        return "passthrough_ctrl"
    if classify_tensor(name) in INT6_CATEGORIES:
        return "int5" if block_index(name) in int5_layers else "int6"
    return "int8"


def quantize_rows_int6(t: Tensor, qmax: int = INT6_QMAX, scale_floor_mult: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-row symmetric quantization to [-qmax-1, qmax] with an fp16 scale (the seed's int6/int5 path).

    Args:
        t: Float tensor. 2-D: one scale per row with floor ``scale_floor_mult / qmax``; any other rank: one
            scale ``amax / qmax`` (1.0 when all zeros), as in the seed.
        qmax: 31 for int6, 15 for int5.
        scale_floor_mult: Multiplier of the 1/qmax row-scale floor (1.0 = seed).

    Returns:
        ``(q, scale)``: int8 codes of t's shape, fp16 scales of shape [rows] (or 0-dim).
    """
    t32 = t.float()
    if t32.ndim == 2:
        row_max = t32.abs().amax(dim=1)
        scale = (row_max / qmax).clamp_min(scale_floor_mult / qmax).to(torch.float16)
        q = torch.clamp(torch.round(t32 / scale.float()[:, None]), -(qmax + 1), qmax).to(torch.int8)
        return q.contiguous(), scale
    amax = t32.abs().max().item() if t32.numel() else 0.0
    scale = torch.tensor(amax / qmax if amax > 0 else 1.0, dtype=torch.float16)
    q = torch.clamp(torch.round(t32 / scale.float()), -(qmax + 1), qmax).to(torch.int8)
    return q.contiguous(), scale


def quantize_rows_gptq_lite(
    t: Tensor, qmax: int = INT6_QMAX, scale_floor_mult: float = 1.0
) -> tuple[Tensor, Tensor, float]:
    """GPTQ-lite: per-row clip at the quantile (shared by the matrix) with the lowest reconstruction MSE.

    One quantile is chosen per matrix among GPTQ_LITE_PERCENTILES (1.0 = row amax) by the mean squared error
    of ``q * scale`` against ``t`` over the whole matrix; ties keep the earlier quantile. Codes are symmetric,
    [-qmax, qmax]. Origin: 2026-03-22 record (SPEC §9.2, §15.8).

    Args:
        t: Float tensor; non-2-D tensors use one scale ``amax / qmax`` and no search.
        qmax: 31 for int6, 15 for int5.
        scale_floor_mult: Multiplier of the 1/qmax row-scale floor.

    Returns:
        ``(q, scale, quantile)``: int8 codes, fp16 scales per row, and the chosen quantile.
    """
    t32 = t.float()
    if t32.ndim != 2:
        amax = t32.abs().max().item() if t32.numel() else 0.0
        scale = torch.tensor(amax / qmax if amax > 0 else 1.0, dtype=torch.float16)
        q = torch.clamp(torch.round(t32 / scale.float()), -qmax, qmax).to(torch.int8)
        return q.contiguous(), scale, 1.0
    absw = t32.abs()
    best: tuple[float, Tensor, Tensor, float] | None = None
    for pct in GPTQ_LITE_PERCENTILES:
        clip = absw.amax(dim=1) if pct >= 1.0 else torch.quantile(absw, pct, dim=1)
        scale = (clip / qmax).clamp_min(scale_floor_mult / qmax).to(torch.float16)
        q = torch.clamp(torch.round(t32 / scale.float()[:, None]), -qmax, qmax)
        mse = (t32 - q * scale.float()[:, None]).pow(2).mean().item()
        if best is None or mse < best[0]:
            best = (mse, q.to(torch.int8).contiguous(), scale, pct)
    assert best is not None
    return best[1], best[2], best[3]


def quantize_rows_int8(t: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row int8 with percentile clipping (the seed's path for embeddings and other large matrices).

    2-D: clip each row at its INT8_CLIP_QUANTILE of |W|, scale = max(clip/127, 1/127) in fp32 for rounding
    and stored as fp16. Other ranks: one clip over the whole tensor and a 0-dim fp32 scale (1.0 if the clip is 0).

    Args:
        t: Float tensor.

    Returns:
        ``(q, scale)``: int8 codes in [-127, 127] and the stored scale.
    """
    t32 = t.float()
    if t32.ndim == 2:
        if t32.numel():
            clip = torch.quantile(t32.abs(), INT8_CLIP_QUANTILE, dim=1)
        else:
            clip = torch.empty((t32.shape[0],), dtype=torch.float32)
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        scale = (clip / INT8_QMAX).clamp_min(1.0 / INT8_QMAX)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -INT8_QMAX, INT8_QMAX).to(torch.int8)
        return q.contiguous(), scale.to(torch.float16).contiguous()
    clip_abs = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_QUANTILE).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip_abs / INT8_QMAX if clip_abs > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip_abs, clip_abs) / scale), -INT8_QMAX, INT8_QMAX)
    return q.to(torch.int8).contiguous(), scale


def _own_storage(t: Tensor) -> Tensor:
    # A view into a larger storage would make torch.save write the whole storage.
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        return t.clone()
    return t


def quantize_tensor(
    name: str, tensor: Tensor, int5_layers: Collection[int] = frozenset(), cfg: QuantConfig | None = None
) -> tuple[dict[str, Tensor], str | dict[str, str], dict[str, Any]]:
    """Quantize one state-dict entry.

    Args:
        name: State-dict key.
        tensor: The tensor.
        int5_layers: Block indices demoted from int6 to int5.
        cfg: Options (scale floor, GPTQ-lite); defaults to QuantConfig().

    Returns:
        ``(entries, meta, info)``: storage entries for ``w``, the meta value for ``m`` and a small dict for
        reports (``format``, and ``clip_quantile`` under GPTQ-lite).
    """
    cfg = cfg or QuantConfig()
    t = tensor.detach().cpu().contiguous()
    fmt = tensor_format(name, t, int5_layers)
    if fmt == "passthrough":
        stored = t.to(torch.float16) if t.is_floating_point() else t
        return {name: _own_storage(stored)}, "passthrough", {"format": "passthrough"}
    if fmt == "passthrough_ctrl":
        return {name: _own_storage(t.float())}, "passthrough_ctrl", {"format": fmt}
    info: dict[str, Any] = {"format": fmt}
    if fmt == "int8":
        q, scale = quantize_rows_int8(t)
    else:
        qmax = INT5_QMAX if fmt == "int5" else INT6_QMAX
        if cfg.gptq_lite:
            q, scale, info["clip_quantile"] = quantize_rows_gptq_lite(t, qmax, cfg.scale_floor_mult)
        else:
            q, scale = quantize_rows_int6(t, qmax, cfg.scale_floor_mult)
    return {f"{name}.q": q, f"{name}.scale": scale}, {"type": fmt}, info


def quantize_state_dict(
    state_dict: Mapping[str, Tensor],
    int5_layers: Collection[int] = frozenset(),
    cfg: QuantConfig | None = None,
    details: dict[str, dict[str, Any]] | None = None,
    cache: dict[tuple[str, str], Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, str | dict[str, str]]]:
    """Quantize a whole state dict in its own order (SPEC §9.1).

    Args:
        state_dict: Name -> tensor, e.g. ``model.state_dict()``.
        int5_layers: Block indices whose int6 matrices are stored as int5.
        cfg: Options; defaults to QuantConfig() (the seed's behaviour).
        details: If given, filled with name -> per-tensor info (format, chosen GPTQ-lite quantile).
        cache: If given, ``(name, format) -> quantize_tensor output`` reused across calls (the budget search
            re-quantizes only the tensors whose format changed).

    Returns:
        ``(w, m)``: storage tensors and per-name format metadata, the seed's container contents.
    """
    cfg = cfg or QuantConfig()
    w: dict[str, Tensor] = {}
    m: dict[str, str | dict[str, str]] = {}
    cache = {} if cache is None else cache
    for name, tensor in state_dict.items():
        key = (name, tensor_format(name, tensor, int5_layers))
        if key not in cache:
            cache[key] = quantize_tensor(name, tensor, int5_layers, cfg)
        entries, meta, info = cache[key]
        w.update(entries)
        m[name] = meta
        if details is not None:
            details[name] = info
    return w, m


def _stored(w: Mapping[str, Tensor], key: str, name: str) -> Tensor:
    if key not in w:
        raise QuantStateError(f"tensor {name!r}: stored entry {key!r} is missing")
    value = w[key]
    if not isinstance(value, Tensor):
        raise QuantStateError(f"tensor {name!r}: stored entry {key!r} is a {type(value).__name__}, not a tensor")
    return value


def dequantize_tensor(name: str, w: Mapping[str, Tensor], meta: Any, like: Tensor) -> Tensor:
    """Rebuild one tensor from its stored entries.

    Args:
        name: State-dict key.
        w: Storage tensors.
        meta: The tensor's meta value.
        like: Template tensor giving the target shape and dtype.

    Returns:
        The dequantized tensor (template dtype; fp16 passthrough cast back only to fp32/bf16, as in the seed).

    Raises:
        QuantStateError: Missing entries, unknown format, or a shape that does not match the template.
    """
    shape = tuple(like.shape)
    if meta in ("passthrough", "passthrough_ctrl"):
        t = _stored(w, name, name)
        if tuple(t.shape) != shape:
            raise QuantStateError(f"tensor {name!r}: stored shape {tuple(t.shape)} does not match the model's {shape}")
        if t.dtype == torch.float16 and like.dtype in (torch.float32, torch.bfloat16):
            t = t.to(like.dtype)
        return t
    kind = meta.get("type") if isinstance(meta, Mapping) else None
    if kind not in ("int5", "int6", "int8"):
        raise QuantStateError(f"tensor {name!r}: unknown format {meta!r} (expected passthrough or int5/int6/int8)")
    q = _stored(w, f"{name}.q", name)
    scale = _stored(w, f"{name}.scale", name)
    if tuple(q.shape) != shape:
        raise QuantStateError(f"tensor {name!r}: stored shape {tuple(q.shape)} does not match the model's {shape}")
    if scale.ndim == 0:
        return (q.float() * float(scale.item())).to(like.dtype)
    if q.ndim == 0 or scale.numel() != q.shape[0]:
        raise QuantStateError(f"tensor {name!r}: {scale.numel()} row scales for a tensor of shape {tuple(q.shape)}")
    rows = scale.float().view(q.shape[0], *([1] * (q.ndim - 1)))
    return (q.float() * rows).to(like.dtype)


def dequantize_state_dict(
    w: Mapping[str, Tensor], m: Mapping[str, Any], template: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rebuild a state dict from ``(w, m)`` in the template's order (names absent from ``m`` are skipped).

    Args:
        w: Storage tensors.
        m: Per-name format metadata.
        template: Name -> tensor with the target shape and dtype (e.g. a fresh model's state dict).

    Returns:
        Name -> dequantized tensor.

    Raises:
        QuantStateError: Naming the tensor whose entries are missing, malformed or of the wrong shape.
    """
    out: dict[str, Tensor] = {}
    for name, like in template.items():
        if name in m:
            out[name] = dequantize_tensor(name, w, m[name], like)
    return out
