"""Write the artifact: atomically, and never over a good one with a blob that does not fit
(docs/record-stack.md §9.3)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from torch import Tensor

from golf_lit.artifact.budget import ArtifactBudgetError, ArtifactResult, attempt_name, build_artifact
from golf_lit.artifact.code_bytes import CodeBytes, count_code_bytes
from golf_lit.artifact.quantize import QuantConfig
from golf_lit.io import atomic_write_bytes


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


def save_artifact(
    state_dict: Mapping[str, Tensor],
    path: str | Path,
    cfg: QuantConfig | None = None,
    code_bytes: int | CodeBytes | None = None,
    compressor: Callable[[bytes, int], bytes] | None = None,
    hessians: Mapping[str, Tensor] | None = None,
) -> ArtifactResult:
    """Build the artifact and write it: the one call an exporter needs.

    Args:
        state_dict: Weights to export.
        path: Artifact path, e.g. ``out/final_model.int6.ptz``.
        cfg: Options; defaults to QuantConfig().
        code_bytes: Code bytes; default ``count_code_bytes(cfg.code_bytes)``.
        compressor: See :func:`golf_lit.artifact.budget.build_artifact`.
        hessians: Calibration Hessians for ``cfg.gptq``.

    Returns:
        The fitting result (its blob is now at ``path``).

    Raises:
        ArtifactBudgetError: Nothing fits; the last blob was written to :func:`over_budget_path` and ``path``
            was left untouched. The message lists every size reached.
    """
    cfg = cfg or QuantConfig()
    if code_bytes is None:
        code_bytes = count_code_bytes(cfg.code_bytes)
    result = build_artifact(state_dict, cfg, code_bytes, compressor, hessians)
    if result.fits:
        write_artifact(path, result.blob)
        return result
    over = write_artifact(over_budget_path(path), result.blob)
    tried = "; ".join(
        f"{attempt_name(s['compressor'], s['level'])} int5={s['int5_layers']}: {s['bytes']:,}" for s in result.sizes_tried  # noqa: E501
    )
    limit = result.limit_bytes - result.code_bytes
    raise ArtifactBudgetError(
        f"no artifact variant fits {result.limit_bytes:,} bytes - {result.code_bytes:,} code bytes = {limit:,} bytes "
        f"(sizes reached: {tried}); the last blob was kept at {over}, {path} was not written",
        result,
        over,
    )
