"""Code bytes counted against the 16,000,000-byte budget (docs/record-stack.md §9.4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import golf_lit

SCORER_SOURCES = (
    "__init__.py",
    "cli.py",
    "bpb.py",
    "ranks.py",
    "io.py",
    "train/metrics.py",
    "model/*.py",
    "artifact/*.py",
    "data/paths.py",
    "data/__init__.py",
    "data/shards.py",
    "data/tokenizer.py",
    "data/vocab.py",
    "data/byte_source.py",
    "data/caseops.py",
    "eval/*.py",
    "eval/strategies/*.py",
)
"""Files (globs relative to the golf_lit package) a scorer needs to rebuild the model from the artifact and
evaluate it; their UTF-8 bytes are the default code bytes."""


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
