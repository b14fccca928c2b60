"""Stage 5, the artifact: quantization, compression, the size budget, writing and reading it back
(docs/record-stack.md §9).

One job per module:
    quantize.py     tensor formats (int6/int5/int7/int8, per-row scales), ``QuantConfig``
    gptq.py         GPTQ, SDClip and round-to-nearest codes
    lqer.py         LQER low-rank error correction
    calibrate.py    Hessians from training batches (GPTQ calibration)
    container.py    the torch.save container
    compression.py  codecs (zstd, brotli, lzma, lrzip) and bounded decompression
    packing.py      the versioned multi-stream file (CRC per stream)
    pergroup.py     per-group packing (row chains, column-major)
    budget.py       fitting the 16,000,000-byte budget (int5 demotion)
    save.py         atomic writes of the artifact
    records.py      reading artifacts and record checkpoints back
    code_bytes.py   the counted code bytes
    errors.py       ``ArtifactError``

Imports data and model; knows nothing of the training module, eval or later stages.
"""

from golf_lit.artifact.budget import ArtifactBudgetError, ArtifactResult, build_artifact
from golf_lit.artifact.code_bytes import CodeBytes, count_code_bytes
from golf_lit.artifact.errors import ArtifactError
from golf_lit.artifact.quantize import QuantConfig, QuantStateError, dequantize_state_dict, quantize_state_dict
from golf_lit.artifact.records import load_artifact_state_dict, load_record_checkpoint, read_artifact
from golf_lit.artifact.save import save_artifact, write_artifact

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
