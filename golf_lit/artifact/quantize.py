"""Quantize a state dict into the seed's mixed int6/int5/int8/fp16 format and back (docs/record-stack.md §9.1-9.2).

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

from golf_lit.artifact import lqer
from golf_lit.artifact.gptq import amax_scales, gptq_quantize, qmax_of, quantize_rtn, sdclip_scales
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


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
"""Dtypes a stored float tensor (passthrough, scale, LQER factor) may have."""


class QuantStateError(ValueError):
    """Quantized weights that do not match their metadata or the target model (names the tensor)."""


@dataclass(kw_only=True)
class QuantConfig:
    """How the artifact is quantized, compressed and fitted into the size budget (docs/record-stack.md §9)."""

    scale_floor_mult: float = 1.0
    """Per-row int6/int5 scales are at least scale_floor_mult / qmax. 1.0 is the seed's floor, which gives every row
    with max |w| < 1 the fixed step 1/qmax (docs/record-stack.md §15.10); lowering it is an experiment, not the
    record."""
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
    # --- leaderboard-top options (docs/top-stack.md §5); every default keeps the seed's artifact ---
    gptq: bool = False
    """Full-Hessian GPTQ for every matrix with a calibration Hessian (0329-GPTQ, PRs #634/#1019)."""
    gptq_calibration_batches: int = 16
    """Training micro-batches whose activations give the Hessians."""
    gptq_calibration_tokens: int = 98_304
    """Tokens per calibration batch (TOP: 48 x 2,048 per rank)."""
    gptq_block_size: int = 128
    """Columns per GPTQ lazy-update block."""
    gptq_damp: float = 0.01
    """Diagonal damping relative to mean(diag H)."""
    gptq_act_order: bool = True
    """Quantize columns by descending Hessian diagonal."""
    sdclip: bool = False
    """Row scale k * std(row) / q_max with k per kind (0405-SDClip, PR #1394) instead of the row max."""
    mlp_clip_sigmas: float = 11.5
    """SDClip k of MLP matrices (TOP)."""
    attn_clip_sigmas: float = 13.0
    """SDClip k of attention matrices (TOP)."""
    embed_clip_sigmas: float = 14.0
    """SDClip k of embeddings (TOP)."""
    matrix_clip_sigmas: float = 12.85
    """SDClip k of any other quantized matrix (TOP's fallback)."""
    matrix_bits: int = 6
    """Bits of the mlp/attn matrices (demoted layers get one bit less)."""
    embed_bits: int | None = None
    """None: the seed's int8 percentile path for embeddings; 7: the matrix path (GPTQ/SDClip) at int7 (PR #1586)."""
    lqer_rank: int = 0
    """LQER: rank of the low-rank correction of the quantization error (0 = off; TOP 4; PR #1797)."""
    lqer_top_k: int = 3
    """LQER: corrected tensors, those with the largest ||W - Q s||_F."""
    lqer_asym: bool = True
    """LQER packing: 2-bit A per matrix + 4-bit B per group of 64 (True) or lqer_factor_bits per row (False)."""
    lqer_factor_bits: int = 4
    """LQER symmetric packing bits; 0 keeps the factors in fp32 (a test/reference setting)."""
    quant_gate: bool = False
    """int8 per row for 2-D ``*.attn_gate_w`` with 32..8,192 elements instead of fp16 (0419-QGate, PR #1736)."""
    compressor: str = "zstd"
    """Packing, or several comma-separated, tried in order: zstd (the seed's file), brotli (quality 11, byte
    shuffle; extra golf-lit[compress]), lzma, pergroup (codes grouped by role, docs/top-stack.md §5.7)."""
    pergroup_backend: str = "auto"
    """pergroup code streams: auto (lrzip if on PATH, else the smallest of lzma/brotli/zstd), lrzip, lzma,
    brotli or zstd."""

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
        for key in ("gptq_calibration_batches", "gptq_calibration_tokens", "gptq_block_size", "lqer_top_k"):
            if isinstance(getattr(self, key), bool) or not isinstance(getattr(self, key), int) or getattr(self, key) < 1:  # noqa: E501
                raise bad(key, "must be a positive integer")
        for key in ("mlp_clip_sigmas", "attn_clip_sigmas", "embed_clip_sigmas", "matrix_clip_sigmas"):
            if not (isinstance(getattr(self, key), (int, float)) and getattr(self, key) > 0):
                raise bad(key, "must be a positive number")
        if not (isinstance(self.gptq_damp, (int, float)) and self.gptq_damp >= 0):
            raise bad("gptq_damp", "must be >= 0")
        if self.matrix_bits not in (6, 7, 8):
            raise bad("matrix_bits", "must be 6, 7 or 8")
        if self.embed_bits is not None and self.embed_bits not in (5, 6, 7, 8):
            raise bad("embed_bits", "must be null (seed int8 path) or 5-8")
        if isinstance(self.lqer_rank, bool) or not isinstance(self.lqer_rank, int) or self.lqer_rank < 0:
            raise bad("lqer_rank", "must be an integer >= 0")
        if self.lqer_factor_bits not in (0, 2, 3, 4, 5, 6, 7, 8):
            raise bad("lqer_factor_bits", "must be 0 (fp32 factors) or 2-8")
        from golf_lit.artifact.compression import check_compressors  # late: compression imports nothing from here

        try:
            check_compressors(self.compressor, self.pergroup_backend)
        except ValueError as e:
            raise ValueError(f"quant.compressor: {e}") from None

    @property
    def compressors(self) -> list[str]:
        """The packings tried, in order."""
        return [c.strip() for c in self.compressor.split(",") if c.strip()]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (for reports)."""
        return asdict(self)


_DEFAULT = QuantConfig()


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


def tensor_format(
    name: str, tensor: Tensor, int5_layers: Collection[int] = frozenset(), cfg: QuantConfig | None = None
) -> str:
    """Storage format the quantizer gives a tensor (works on meta tensors: uses only name, dtype and size).

    Args:
        name: State-dict key.
        tensor: The tensor (only dtype, rank and numel are read).
        int5_layers: Block indices demoted one bit (int6 -> int5).
        cfg: Options (matrix/embedding bits, quantized gates); defaults to QuantConfig() (the seed).

    Returns:
        ``"passthrough"`` (fp16 for floats, unchanged otherwise), ``"passthrough_ctrl"`` (fp32), ``"gate_int8"``,
        ``"int<b>"`` of the matrix path (mlp/attn, and embeddings with ``embed_bits``) or ``"int8"`` (the seed's
        percentile path).
    """
    cfg = cfg or _DEFAULT
    if cfg.quant_gate and is_quant_gate(name, tensor):
        return "gate_int8"
    if not tensor.is_floating_point() or tensor.numel() <= PASSTHROUGH_MAX_NUMEL:
        return "passthrough"
    if is_control(name):
        return "passthrough_ctrl"
    bits = matrix_bits(name, int5_layers, cfg)
    return f"int{bits}" if bits is not None else "int8"


def is_quant_gate(name: str, tensor: Tensor) -> bool:
    """A 2-D ``*.attn_gate_w`` with 32..8,192 elements (docs/top-stack.md §5.5; 0419-QGate/0423-PolarNS)."""
    return name.endswith(".attn_gate_w") and tensor.ndim == 2 and 32 <= tensor.numel() <= 8192


def matrix_bits(name: str, int5_layers: Collection[int], cfg: QuantConfig) -> int | None:
    """Bits of the matrix path for a large float tensor, or None for the seed's int8 percentile path."""
    kind = classify_tensor(name)
    if kind in INT6_CATEGORIES:
        return cfg.matrix_bits - 1 if block_index(name) in int5_layers else cfg.matrix_bits
    if kind == "embed" and cfg.embed_bits is not None:
        return cfg.embed_bits
    return None


def clip_sigmas(name: str, cfg: QuantConfig) -> float:
    """SDClip k of a tensor by kind (mlp / attn / embed / other)."""
    kind = classify_tensor(name)
    return {"mlp": cfg.mlp_clip_sigmas, "attn": cfg.attn_clip_sigmas, "embed": cfg.embed_clip_sigmas}.get(
        kind, cfg.matrix_clip_sigmas
    )


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
    [-qmax, qmax]. Origin: 2026-03-22 record (docs/record-stack.md §9.2, §15.8).

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
    name: str,
    tensor: Tensor,
    int5_layers: Collection[int] = frozenset(),
    cfg: QuantConfig | None = None,
    hessian: Tensor | None = None,
) -> tuple[dict[str, Tensor], str | dict[str, Any], dict[str, Any]]:
    """Quantize one state-dict entry.

    Args:
        name: State-dict key.
        tensor: The tensor.
        int5_layers: Block indices demoted from int6 to int5.
        cfg: Options (scale floor, GPTQ-lite, GPTQ, SDClip, bits); defaults to QuantConfig().
        hessian: Calibration Hessian of the tensor's input (used when ``cfg.gptq``).

    Returns:
        ``(entries, meta, info)``: storage entries for ``w``, the meta value for ``m`` and a small dict for
        reports (``format``, ``clip_quantile`` under GPTQ-lite, ``method`` on the top-stack paths).
    """
    cfg = cfg or _DEFAULT
    t = tensor.detach().cpu().contiguous()
    fmt = tensor_format(name, t, int5_layers, cfg)
    if fmt == "passthrough":
        stored = t.to(torch.float16) if t.is_floating_point() else t
        return {name: _own_storage(stored)}, "passthrough", {"format": "passthrough"}
    if fmt == "passthrough_ctrl":
        return {name: _own_storage(t.float())}, "passthrough_ctrl", {"format": fmt}
    info: dict[str, Any] = {"format": fmt}
    if fmt == "gate_int8":  # docs/top-stack.md §5.5 (0419-QGate, PR #1736)
        scale = (t.float().abs().amax(dim=1) / INT8_QMAX).clamp_min(1e-10).to(torch.float16)
        q = quantize_rtn(t, scale, INT8_QMAX)
        return {f"{name}.q": q, f"{name}.scale": scale}, {"type": "int8"}, info
    bits = matrix_bits(name, int5_layers, cfg)
    if bits is None:
        q, scale = quantize_rows_int8(t)
    else:
        qmax = qmax_of(bits)
        top = t.ndim == 2 and (cfg.sdclip or (cfg.gptq and hessian is not None))
        if top:
            scale = sdclip_scales(t, clip_sigmas(name, cfg), qmax) if cfg.sdclip else amax_scales(t, qmax)
            if cfg.gptq and hessian is not None:
                q = gptq_quantize(
                    t, hessian, scale, qmax,
                    block_size=cfg.gptq_block_size, damp=cfg.gptq_damp, act_order=cfg.gptq_act_order,
                )  # fmt: skip
                info["method"] = "gptq+sdclip" if cfg.sdclip else "gptq"
            else:
                q = quantize_rtn(t, scale, qmax)
                info["method"] = "sdclip"
        elif cfg.gptq_lite:
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
    hessians: Mapping[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Quantize a whole state dict in its own order (docs/record-stack.md §9.1; docs/top-stack.md §5).

    Args:
        state_dict: Name -> tensor, e.g. ``model.state_dict()``.
        int5_layers: Block indices whose int6 matrices are stored as int5.
        cfg: Options; defaults to QuantConfig() (the seed's behaviour).
        details: If given, filled with name -> per-tensor info (format, chosen GPTQ-lite quantile, method).
        cache: If given, ``(name, format) -> quantize_tensor output`` reused across calls (the budget search
            re-quantizes only the tensors whose format changed).
        hessians: Name -> calibration Hessian, for ``cfg.gptq``.

    Returns:
        ``(w, m)``: storage tensors and per-name format metadata, the seed's container contents.
    """
    cfg = cfg or _DEFAULT
    hessians = hessians or {}
    cache = {} if cache is None else cache
    w: dict[str, Tensor] = {}
    m: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        key = (name, tensor_format(name, tensor, int5_layers, cfg))
        if key not in cache:
            cache[key] = quantize_tensor(name, tensor, int5_layers, cfg, hessians.get(name))
        entries, meta, info = cache[key]
        w.update(entries)
        m[name] = meta
        if details is not None:
            details[name] = info
    if cfg.lqer_rank > 0:
        _add_lqer(state_dict, w, m, cfg, details)
    return w, m


def _add_lqer(
    state_dict: Mapping[str, Tensor],
    w: dict[str, Tensor],
    m: dict[str, Any],
    cfg: QuantConfig,
    details: dict[str, dict[str, Any]] | None,
) -> None:
    """Low-rank corrections of the ``lqer_top_k`` matrix-path tensors with the largest ||E||_F (in place)."""
    errors: dict[str, Tensor] = {}
    for name, tensor in state_dict.items():
        meta = m[name]
        if isinstance(meta, Mapping) and tensor.ndim == 2 and matrix_bits(name, (), cfg) is not None:
            errors[name] = tensor.detach().cpu().float() - dequantize_tensor(name, w, meta, tensor.float())
    norms = {n: float(torch.linalg.matrix_norm(e).item()) for n, e in errors.items()}
    for name in lqer.choose(norms, cfg.lqer_top_k):
        parts, info = lqer.correct(errors[name], cfg.lqer_rank, cfg.lqer_asym, cfg.lqer_factor_bits)
        w.update({f"{name}.lqer_{k}": v for k, v in parts.items()})
        m[name] = {**m[name], "lqer": info["packing"]}
        if details is not None:
            details[name] = {**details[name], "lqer_rank": info["rank"], "lqer_packing": info["packing"]}


def _stored(w: Mapping[str, Tensor], key: str, name: str, dtypes: Collection[torch.dtype] | None = None) -> Tensor:
    """The stored entry ``key`` of tensor ``name``: present, a tensor, of one of ``dtypes``, finite if float."""
    if key not in w:
        raise QuantStateError(f"tensor {name!r}: stored entry {key!r} is missing")
    value = w[key]
    if not isinstance(value, Tensor):
        raise QuantStateError(f"tensor {name!r}: stored entry {key!r} is a {type(value).__name__}, not a tensor")
    if dtypes is not None and value.dtype not in dtypes:
        expected = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise QuantStateError(
            f"tensor {name!r}: stored entry {key!r} is {str(value.dtype).removeprefix('torch.')}, expected {expected}"
        )
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise QuantStateError(f"tensor {name!r}: stored entry {key!r} holds NaN or infinite values")
    return value


def _lqer_parts(name: str, w: Mapping[str, Tensor], packing: Any, rows: int, cols: int) -> dict[str, Tensor]:
    """LQER factors of a ``rows x cols`` tensor, every shape and dtype checked before they are multiplied."""
    if packing not in ("asym", "sym", "fp32"):
        raise QuantStateError(f"tensor {name!r}: unknown LQER packing {packing!r} (expected asym, sym or fp32)")
    codes = FLOAT_DTYPES if packing == "fp32" else (torch.int8,)
    a, b = _stored(w, f"{name}.lqer_A", name, codes), _stored(w, f"{name}.lqer_B", name, codes)
    r = a.shape[1] if a.ndim == 2 else -1
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rows or b.shape != (r, cols) or not 1 <= r <= min(rows, cols):
        raise QuantStateError(
            f"tensor {name!r}: LQER factors of shapes {tuple(a.shape)} and {tuple(b.shape)} do not make a rank-r "
            f"({rows}, r) x (r, {cols}) correction with 1 <= r <= {min(rows, cols)}"
        )
    parts = {"A": a, "B": b}
    if packing == "fp32":
        return parts
    scale_shapes = {"asym": {"A": (), "B": (b.numel() // lqer.GROUP,)}, "sym": {"A": (rows,), "B": (r,)}}[packing]
    if packing == "asym" and b.numel() % lqer.GROUP:
        raise QuantStateError(f"tensor {name!r}: asym LQER factor B has {b.numel()} elements, not a multiple of 64")
    for k, shape in scale_shapes.items():
        parts[f"{k}_scale"] = s = _stored(w, f"{name}.lqer_{k}_scale", name, FLOAT_DTYPES)
        if tuple(s.shape) != shape:
            raise QuantStateError(f"tensor {name!r}: LQER {k}_scale has shape {tuple(s.shape)}, expected {shape}")
    return parts


def dequantize_tensor(name: str, w: Mapping[str, Tensor], meta: Any, like: Tensor) -> Tensor:
    """Rebuild one tensor from its stored entries.

    Every entry is checked before it is used: dtype (int8 codes; float16/bfloat16/float32 scales and passthrough
    floats), finite values, and shapes (codes as the template, one scale per row, LQER factors of a rank up to
    ``min(rows, cols)``), so a hostile file cannot make it allocate more than the template's size or score NaN.

    Args:
        name: State-dict key.
        w: Storage tensors.
        meta: The tensor's meta value.
        like: Template tensor giving the target shape and dtype (may be on the meta device).

    Returns:
        The dequantized tensor (template dtype; fp16 passthrough cast back only to fp32/bf16, as in the seed).

    Raises:
        QuantStateError: Missing entries, unknown format, wrong dtype, NaN/Inf, or a shape that does not match.
    """
    shape = tuple(like.shape)
    if isinstance(meta, str) and meta in ("passthrough", "passthrough_ctrl"):
        t = _stored(w, name, name, FLOAT_DTYPES if like.is_floating_point() else (like.dtype,))
        if tuple(t.shape) != shape:
            raise QuantStateError(f"tensor {name!r}: stored shape {tuple(t.shape)} does not match the model's {shape}")
        if t.dtype == torch.float16 and like.dtype in (torch.float32, torch.bfloat16):
            t = t.to(like.dtype)
        return t
    kind = meta.get("type") if isinstance(meta, Mapping) else None
    if kind not in ("int5", "int6", "int7", "int8"):
        raise QuantStateError(f"tensor {name!r}: unknown format {str(meta)[:80]} (expected passthrough or int5/int6/int7/int8)")  # noqa: E501
    q = _stored(w, f"{name}.q", name, (torch.int8,))
    scale = _stored(w, f"{name}.scale", name, FLOAT_DTYPES)
    if tuple(q.shape) != shape:
        raise QuantStateError(f"tensor {name!r}: stored shape {tuple(q.shape)} does not match the model's {shape}")
    if scale.ndim == 0:
        if "lqer" in meta:
            raise QuantStateError(f"tensor {name!r}: LQER needs one scale per row, found a single scale")
        out = q.float() * float(scale.item())
    else:
        if q.ndim == 0 or scale.ndim != 1 or scale.numel() != q.shape[0]:
            raise QuantStateError(f"tensor {name!r}: {scale.numel()} row scales for a tensor of shape "
                                  f"{tuple(q.shape)}")
        rows = scale.float().view(q.shape[0], *([1] * (q.ndim - 1)))
        out = q.float() * rows
        if "lqer" in meta:  # docs/top-stack.md §5.4
            if q.ndim != 2:
                raise QuantStateError(f"tensor {name!r}: LQER corrects 2-D tensors, this one has shape "
                                      f"{tuple(q.shape)}")
            parts = _lqer_parts(name, w, meta["lqer"], q.shape[0], q.shape[1])
            out = out + lqer.unpack(parts, meta["lqer"])
    out = out.to(like.dtype)
    if not bool(torch.isfinite(out).all()):  # finite parts can still overflow (huge fp32 LQER factors, bf16 cast)
        raise QuantStateError(f"tensor {name!r}: dequantizes to NaN or infinite values")
    return out


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
