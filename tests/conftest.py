"""Shared fixtures: tiny model configs, the bundled sample, and the real FineWeb text slice under tests/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from golf_lit.data.paths import SAMPLE_TOKENIZER, resolve
from golf_lit.data.tokenizer import build_byte_luts, load_tokenizer
from golf_lit.model.config import ModelConfig

# Real FineWeb text shipped with the tests (provenance: tests/data/NOTICE.md).
TEST_DATA = Path(__file__).resolve().parent / "data"
VAL_DOCS = TEST_DATA / "fineweb_val_docs.jsonl"
TRAIN_DOCS = TEST_DATA / "fineweb_train_docs.jsonl"

# The tests use tiny tensors: one intra-op thread avoids oversubscribing the CI machine's two shared cores.
torch.set_num_threads(1)


def tiny_config(**overrides) -> ModelConfig:
    """A 2-layer, width-32 model with every trick on (vocab 64 unless overridden)."""
    kw = dict(
        vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4,
        bigram_vocab_size=32, bigram_dim=16, xsa_last_n=2,
    )
    kw.update(overrides)
    return ModelConfig(**kw)


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def sample_luts():
    sp = load_tokenizer(resolve(SAMPLE_TOKENIZER))
    return build_byte_luts(sp, 1024)


def write_artifact(folder: Path, cfg: ModelConfig, seed: int = 0) -> Path:
    """A golf-lit artifact of a freshly initialised GPT(cfg) (seeded), with a config.json naming its model."""
    from golf_lit.artifact import save_artifact
    from golf_lit.model.gpt import GPT
    from golf_lit.runs.export import ARTIFACT_NAME

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    save_artifact(GPT(cfg).state_dict(), folder / ARTIFACT_NAME, code_bytes=0)
    (folder / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    return folder / ARTIFACT_NAME
