"""Code bytes counted against the 16,000,000-byte budget (docs/record-stack.md §9.4).

golf-lit has one definition of the counted code: the size of the run's generated ``train_gpt.py`` (the one file
that trains and scores, golf_lit.runs.pack), so ``bytes_total`` = that file + the model bytes. The export
(golf_lit.runs.export) generates the file and passes its size here; this module also takes a number or a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CodeBytes:
    """Code bytes counted against the budget and where the number came from.

    Attributes:
        total: Bytes.
        source: ``"auto"`` (the generated train_gpt.py), ``"file:<path>"`` or ``"number"``.
        files: ``(path, bytes)`` per counted file (empty for a given number).
    """

    total: int
    source: str
    files: tuple[tuple[str, int], ...] = ()


def count_code_bytes(spec: int | str | Path) -> CodeBytes:
    """Resolve the code bytes counted against the budget.

    Args:
        spec: A number of bytes or a file path (its size). ``"auto"`` (the generated ``train_gpt.py``) is resolved
            by the export, which writes that file; here it is an error.

    Returns:
        The count and the file it came from.

    Raises:
        ValueError: A negative number, a missing file, or ``"auto"``, naming ``quant.code_bytes``.
    """
    if isinstance(spec, bool):
        raise ValueError(f"quant.code_bytes: expected 'auto', a file path or a number of bytes, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"quant.code_bytes: must be >= 0, got {spec}")
        return CodeBytes(spec, "number")
    if spec == "auto":
        raise ValueError("quant.code_bytes: 'auto' is the size of the train_gpt.py that golf-lit export writes "
                         "(golf_lit.runs.export); give a number or a file when saving an artifact directly")
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"quant.code_bytes: {str(spec)!r} is neither 'auto', a number, nor an existing file")
    size = len(path.read_bytes())
    return CodeBytes(size, f"file:{path}", ((str(path), size),))
