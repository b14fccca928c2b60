"""Scoring on original bytes (docs/top-stack.md §2.3): the byte source behind every bpb number."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from golf_lit.data.byte_source import SidecarBytes, load_byte_source, target_bytes
from golf_lit.data.datamodule import GolfDataModule
from golf_lit.data.encode import tokenize_documents
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES, resolve
from golf_lit.data.shards import load_shard, load_validation_tokens, write_shard
from golf_lit.data.tokenizer import ByteLUTs, build_byte_luts, load_tokenizer
from golf_lit.data.train_tokenizer import train_tokenizer
from golf_lit.eval.scorer import Scorer
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.train.metrics import BitsPerByte

VAL_DOCS = Path(__file__).parent / "data" / "fineweb_val_docs.jsonl"


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """A CaseOps tokenizer (vocab 400) and 60 documents tokenized with it into 2 val shards + sidecars."""
    root = tmp_path_factory.mktemp("caseops")
    tok = train_tokenizer(VAL_DOCS, 400, root / "tok", heldout_docs=20, num_threads=1,
                          caseops=True).model_path
    texts = [json.loads(x)["text"] for x in VAL_DOCS.read_text(encoding="utf-8").splitlines()[:60]]
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tokenize_documents(docs, tok, root / "data", num_val_docs=60, shard_tokens=40_000, progress=False, caseops=True)
    return tok, root / "data", texts


def test_luts_answer_bytes_at_like_token_bytes(sample_luts):
    tokens = load_validation_tokens(resolve(SAMPLE_VAL_FILES), 1024)[:5000]
    pos = torch.arange(tokens.numel() - 1)
    assert torch.equal(sample_luts.bytes_at(pos, tokens[:-1], tokens[1:]),
                       sample_luts.token_bytes(tokens[:-1], tokens[1:]))
    sp = load_tokenizer(resolve(SAMPLE_TOKENIZER))
    assert isinstance(load_byte_source(resolve(SAMPLE_VAL_FILES), sp, 1024), ByteLUTs)  # no sidecar: LUTs


def test_caseops_source_is_the_sidecar_and_totals_original_bytes(caseops_data):
    tok, data, texts = caseops_data
    sp = load_tokenizer(tok)
    pattern = str(data / "fineweb_val_*.bin")  # matches the sidecars too: they must not be read as tokens
    tokens = load_validation_tokens(pattern, 64)
    src = load_byte_source(pattern, sp, 400)
    assert isinstance(src, SidecarBytes) and len(src.files) >= 2
    full = np.concatenate([np.asarray(load_shard(f)) for f in sorted(data.glob("fineweb_val_0*.bin"))])
    assert tokens.numel() <= full.size and np.array_equal(tokens.numpy(), full[: tokens.numel()])
    total = int(src.counts.sum())
    assert total == sum(len(t.encode("utf-8")) for t in texts)
    per_target = target_bytes(src, torch.from_numpy(full.astype(np.int64)))
    assert int(per_target.sum()) == total  # BOS at 0 has count 0: every byte is some target's
    with pytest.raises(TypeError, match="bytes_at"):
        src.token_bytes(tokens[:-1], tokens[1:])


def test_caseops_without_sidecar_is_refused_naming_the_file(caseops_data, tmp_path):
    tok, data, _ = caseops_data
    for f in data.glob("fineweb_val_0*.bin"):
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(FileNotFoundError, match="fineweb_val_bytes_000000.bin is missing"):
        load_byte_source(str(tmp_path / "fineweb_val_*.bin"), load_tokenizer(tok), 400)


def test_sidecar_of_the_wrong_length_is_refused(caseops_data, tmp_path):
    tok, data, _ = caseops_data
    for f in data.glob("fineweb_val_*.bin"):
        shutil.copy(f, tmp_path / f.name)
    side = tmp_path / "fineweb_val_bytes_000001.bin"
    write_shard(side, np.asarray(load_shard(side))[:-1])
    with pytest.raises(ValueError, match="fineweb_val_bytes_000001.bin holds .* counts but its token shard"):
        load_byte_source(str(tmp_path / "fineweb_val_*.bin"), load_tokenizer(tok), 400)
    # a sidecar beside plain shards is used even with a plain tokenizer, and checked the same way
    with pytest.raises(ValueError, match="holds"):
        load_byte_source(str(tmp_path / "fineweb_val_*.bin"), load_tokenizer(resolve(SAMPLE_TOKENIZER)), 1024)


class _Uniform(torch.nn.Module):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, 400)


def test_standard_eval_scorer_and_metric_divide_by_sidecar_bytes(caseops_data):
    tok, data, _ = caseops_data
    pattern = str(data / "fineweb_val_*.bin")
    seq = 64
    tokens = load_validation_tokens(pattern, seq)
    src = load_byte_source(pattern, load_tokenizer(tok), 400, tokens.numel())
    n = tokens.numel() - 1
    expected_bytes = int(src.counts[1 : n + 1].sum())
    sums = Roundtrip(seq, 7).score(EvalContext(_Uniform(), tokens, src))["model"]
    assert sums.byte_count == expected_bytes and sums.token_count == n
    expected_bpb = n * math.log(400) / (math.log(2) * expected_bytes)
    assert sums.val_bpb == pytest.approx(expected_bpb, rel=1e-6)  # fp32 log-softmax
    scorer = Scorer(tokens, src)
    scorer.score(torch.arange(100, 300), torch.zeros(200, 400))
    assert scorer.sums()["model"].byte_count == int(src.counts[101:301].sum())
    metric = BitsPerByte(src)
    with pytest.raises(ValueError, match="needs nbytes"):
        metric.update(torch.ones(3), tokens[:3], tokens[1:4])
    dm = GolfDataModule(train_files=pattern, val_files=pattern, tokenizer_path=str(tok), train_batch_tokens=8 * seq,
                        train_seq_len=seq, val_batch_tokens=8 * 3 * seq)
    dm.setup("validate")
    assert dm.luts.counts.numel() == tokens.numel()
    for x, y, nbytes in dm.val_dataloader():
        metric.update(torch.full(y.shape, math.log(400)), x, y, nbytes)
    out = metric.compute()
    assert float(out["val_bpb"]) == pytest.approx(sums.val_bpb, rel=1e-6)


def test_plain_metric_and_datamodule_unchanged(sample_luts):
    tokens = load_validation_tokens(resolve(SAMPLE_VAL_FILES), 1024)[:2049]
    m = BitsPerByte(sample_luts)
    m.update(torch.ones(2048), tokens[:-1], tokens[1:])
    assert float(m.byte_count) == float(sample_luts.token_bytes(tokens[:-1], tokens[1:]).sum())
    sp = load_tokenizer(resolve(SAMPLE_TOKENIZER))
    ref = build_byte_luts(sp, 1024)
    assert torch.equal(ref.base_bytes, sample_luts.base_bytes)
