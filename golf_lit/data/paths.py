"""Where data lives: the challenge layout by default, the bundled sample under the ``sample:`` prefix."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_PREFIX = "sample:"

DEFAULT_DATASET_DIR = "./data/datasets/fineweb10B_sp1024"
DEFAULT_TRAIN_FILES = f"{DEFAULT_DATASET_DIR}/fineweb_train_*.bin"
DEFAULT_VAL_FILES = f"{DEFAULT_DATASET_DIR}/fineweb_val_*.bin"
DEFAULT_TOKENIZER = "./data/tokenizers/fineweb_1024_bpe.model"

SAMPLE_TRAIN_FILES = "sample:fineweb10B_sp1024/fineweb_train_*.bin"
SAMPLE_VAL_FILES = "sample:fineweb10B_sp1024/fineweb_val_*.bin"
SAMPLE_TOKENIZER = "sample:tokenizers/fineweb_1024_bpe.model"


def resolve(path: str) -> str:
    """Resolve a data path or glob: ``sample:REL`` points into the bundled sample, anything else is kept."""
    if path.startswith(SAMPLE_PREFIX):
        return str(ASSETS_DIR / path[len(SAMPLE_PREFIX) :])
    return path
