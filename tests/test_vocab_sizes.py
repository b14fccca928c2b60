"""Vocabulary size end to end: tokenizers of 1024, 4096 and 8192 pieces trained and applied in the test.

For each size: the byte tables agree with SentencePiece's decoding, BigramHash and the model run, the artifact
roundtrips (the embedding becomes int8 once it is large enough), and evaluation gives a finite score.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from golf_lit.artifact import QuantConfig, load_artifact_state_dict
from golf_lit.artifact import save_artifact as export_artifact
from golf_lit.data.encode import tokenize_documents
from golf_lit.data.shards import load_shard, load_validation_tokens
from golf_lit.data.tokenizer import build_byte_luts, load_tokenizer
from golf_lit.data.train_tokenizer import train_tokenizer
from golf_lit.data.vocab import require_vocab_match
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from tests.conftest import TRAIN_DOCS, VAL_DOCS


def _check(vocab_size, path):
    """The vocabulary rule every command applies: the tokenizer's piece count must equal model.vocab_size."""
    pieces = int(load_tokenizer(path).vocab_size())
    require_vocab_match(vocab_size, pieces, path)
    return pieces


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """300 training documents and 20 validation documents of real FineWeb text."""
    tmp = tmp_path_factory.mktemp("vocab")
    with open(TRAIN_DOCS) as f:
        train = [json.loads(next(f))["text"] for _ in range(300)]
    with open(VAL_DOCS) as f:
        val = [json.loads(next(f))["text"] for _ in range(20)]
    train_path, all_path = tmp / "train.jsonl", tmp / "all.jsonl"
    train_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in train))
    all_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in val + train[:40]))
    return tmp, train_path, all_path


@pytest.mark.parametrize("vocab_size", [1024, 4096, 8192])
def test_vocab_size_end_to_end(corpus, vocab_size):
    tmp, train_path, all_path = corpus
    report = train_tokenizer(train_path, vocab_size, tmp / f"tok{vocab_size}", heldout_docs=10, num_threads=2)
    model_path = report.model_path
    assert _check(vocab_size, model_path) == vocab_size
    with pytest.raises(ValueError, match=f"model.vocab_size={vocab_size + 1}"):
        _check(vocab_size + 1, model_path)
    out = tmp / f"shards{vocab_size}"
    tokenize_documents(all_path, model_path, out, num_val_docs=20, workers=1, progress=False)

    sp = load_tokenizer(model_path)
    luts = build_byte_luts(sp, vocab_size)
    tokens = np.asarray(load_shard(out / "fineweb_val_000000.bin")).astype(np.int64)
    assert tokens.max() < vocab_size
    starts = np.flatnonzero(tokens == sp.bos_id()).tolist() + [tokens.size]
    assert len(starts) == 21
    for a, b in zip(starts[:-1], starts[1:]):
        doc = torch.from_numpy(tokens[a:b])
        assert int(luts.token_bytes(doc[:-1], doc[1:]).sum()) == len(sp.decode(doc[1:].tolist()).encode())

    cfg = ModelConfig(
        vocab_size=vocab_size,
        num_layers=2,
        model_dim=32,
        num_heads=4,
        num_kv_heads=2,
        rope_dims=4,
        xsa_last_n=2,
        bigram_vocab_size=vocab_size,
        bigram_dim=16,
    )
    torch.manual_seed(0)
    model = GPT(cfg)
    val = load_validation_tokens(str(out / "fineweb_val_*.bin"), 64)
    assert int(model.bigram.buckets(val[None, :-1]).max()) < vocab_size
    sums = Roundtrip(64, 8).score(EvalContext(model, val, luts))["model"]
    assert sums.val_loss == pytest.approx(np.log(vocab_size), rel=0.05)  # untrained: near uniform
    assert sums.byte_count == int(luts.token_bytes(val[:-1], val[1:]).sum())

    result = export_artifact(model.state_dict(), tmp / f"a{vocab_size}.ptz", QuantConfig(code_bytes=0))
    formats = {r["name"]: r["format"] for r in result.per_tensor}
    assert formats["tok_emb.weight"] == ("int8" if vocab_size * 32 > 65_536 else "fp16")
    fresh = GPT(cfg)
    fresh.load_state_dict(load_artifact_state_dict(tmp / f"a{vocab_size}.ptz", fresh.state_dict()), strict=True)
    again = Roundtrip(64, 8).score(EvalContext(fresh, val, luts))["model"]
    assert again.val_bpb == pytest.approx(sums.val_bpb, rel=0.02)
