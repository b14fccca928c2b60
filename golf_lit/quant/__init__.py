"""The scored artifact: mixed int6/int5/int8 quantization, zstd, the size budget, loading records (SPEC §9)."""

from golf_lit.quant.artifact import (
    ArtifactBudgetError,
    ArtifactError,
    ArtifactResult,
    CodeBytes,
    build_artifact,
    count_code_bytes,
    export_artifact,
    load_artifact_state_dict,
    load_record_checkpoint,
    read_artifact,
    write_artifact,
)
from golf_lit.quant.quantize import QuantConfig, QuantStateError, dequantize_state_dict, quantize_state_dict

__all__ = [
    "ArtifactBudgetError",
    "ArtifactError",
    "ArtifactResult",
    "CodeBytes",
    "QuantConfig",
    "QuantStateError",
    "build_artifact",
    "count_code_bytes",
    "dequantize_state_dict",
    "export_artifact",
    "load_artifact_state_dict",
    "load_record_checkpoint",
    "quantize_state_dict",
    "read_artifact",
    "write_artifact",
]
