"""The scored artifact: mixed int6/int5/int8 quantization, compression, the size budget, loading
(docs/record-stack.md §9).

One job per module: quantize.py (tensor formats), container.py (torch.save container), compression.py (codecs),
budget.py (fit the budget), save.py (atomic writes), records.py (loading), code_bytes.py (counted code).
"""

from golf_lit.quant.budget import ArtifactBudgetError, ArtifactResult, build_artifact
from golf_lit.quant.code_bytes import CodeBytes, count_code_bytes
from golf_lit.quant.errors import ArtifactError
from golf_lit.quant.quantize import QuantConfig, QuantStateError, dequantize_state_dict, quantize_state_dict
from golf_lit.quant.records import load_artifact_state_dict, load_record_checkpoint, read_artifact
from golf_lit.quant.save import save_artifact, write_artifact

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
    "load_artifact_state_dict",
    "load_record_checkpoint",
    "quantize_state_dict",
    "read_artifact",
    "save_artifact",
    "write_artifact",
]
