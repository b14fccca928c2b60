"""Scoring on original bytes (docs/top-stack.md §2.3): the byte source behind every bpb number."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from golf_lit.data.byte_source import (
    DOC_TOLERANCE,
    SidecarBytes,
    SidecarMismatchError,
    load_byte_source,
    surface_bytes,
    target_bytes,
    verify_sidecar,
)
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


def test_stray_sidecar_beside_plain_shards_is_refused_naming_it(tmp_path):
    """A sidecar claiming twice the bytes would halve the bpb (#24 item 8): with a plain tokenizer it is refused."""
    shard = Path(resolve(SAMPLE_VAL_FILES)).with_name("fineweb_val_000000.bin")
    shutil.copy(shard, tmp_path / shard.name)
    tokens = np.asarray(load_shard(shard))
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.full(tokens.size, 8, np.uint16))
    tok = resolve(SAMPLE_TOKENIZER)
    with pytest.raises(ValueError, match=r"byte sidecar .*fineweb_val_bytes_000000.bin lies beside .* tokenizer "
                                         r".*fineweb_1024_bpe.model is not a CaseOps tokenizer"):
        load_byte_source(str(tmp_path / "fineweb_val_*.bin"), load_tokenizer(tok), 1024, tokenizer_path=tok)
    dm = GolfDataModule(train_files=str(tmp_path / "fineweb_val_*.bin"), val_files=str(tmp_path / "fineweb_val_*.bin"),
                        tokenizer_path=tok, train_batch_tokens=8 * 64, train_seq_len=64, val_batch_tokens=8 * 64)
    with pytest.raises(ValueError, match="fineweb_val_bytes_000000.bin lies beside"):
        dm.setup("validate")


def _forged(caseops_data, tmp_path, forge) -> tuple[str, Path]:
    """The CaseOps val shards copied to ``tmp_path`` with the sidecar counts replaced by ``forge(counts)``."""
    tok, data, _ = caseops_data
    for f in data.glob("fineweb_val_*.bin"):
        shutil.copy(f, tmp_path / f.name)
    sides = sorted(tmp_path.glob("fineweb_val_bytes_*.bin"))
    counts = np.concatenate([np.asarray(load_shard(f)).astype(np.int64) for f in sides])
    tokens = np.concatenate([np.asarray(load_shard(f)) for f in sorted(tmp_path.glob("fineweb_val_0*.bin"))])
    new = forge(counts, tokens)
    at = 0
    for f in sides:
        n = int(load_shard(f).size)
        write_shard(f, new[at : at + n].astype(np.uint16))
        at += n
    return str(tmp_path / "fineweb_val_*.bin"), tok


def test_sidecar_claiming_twice_the_bytes_is_refused(caseops_data, tmp_path):
    pattern, tok = _forged(caseops_data, tmp_path, lambda c, t: 2 * c)
    with pytest.raises(SidecarMismatchError, match=r"fineweb_val_bytes_000000.bin: document 0 claims (\d+) original "
                                                   r"bytes but its tokens decode to"):
        load_byte_source(pattern, load_tokenizer(tok), 400)


def test_sidecar_verified_per_document_names_the_shard_and_document(caseops_data, tmp_path):
    """One late document given twice its bytes: its index and the sidecar shard it starts in are named."""
    tok, data, _ = caseops_data
    first = int(load_shard(data / "fineweb_val_000000.bin").size)

    def forge(counts, tokens):
        starts = np.flatnonzero(tokens == 1)
        k = int(np.searchsorted(starts, first))  # the first document starting in the second shard
        s, e = starts[k], starts[k + 1]
        counts = counts.copy()
        counts[s + 1 : e] *= 2
        forge.doc = k
        return counts

    pattern, _ = _forged(caseops_data, tmp_path, forge)
    with pytest.raises(SidecarMismatchError, match=rf"fineweb_val_bytes_000001.bin: document {forge.doc} claims"):
        load_byte_source(pattern, load_tokenizer(tok), 400)


def test_sidecar_shifted_by_one_token_is_refused_at_a_bos(caseops_data, tmp_path):
    pattern, tok = _forged(caseops_data, tmp_path, lambda c, t: np.roll(c, 1))
    with pytest.raises(SidecarMismatchError, match=r"document \d+ gives BOS .* expected 0"):
        load_byte_source(pattern, load_tokenizer(tok), 400)


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


def test_sidecar_recomputation_is_exact_where_the_normalizer_changes_nothing(caseops_data):
    """The recomputed bytes are the decoded pieces' UTF-8 length without the control markers; per document they
    equal the sidecar's sum (the original text's length) wherever nmt_nfkc left the text unchanged."""
    from golf_lit.data import caseops

    tok, data, texts = caseops_data
    sp = load_tokenizer(tok)
    tokens = np.concatenate([np.asarray(load_shard(f)) for f in sorted(data.glob("fineweb_val_0*.bin"))])
    counts = np.concatenate([np.asarray(load_shard(f)).astype(np.int64)
                             for f in sorted(data.glob("fineweb_val_bytes_*.bin"))])
    starts = np.append(np.flatnonzero(tokens == 1), tokens.size)
    size, marker = surface_bytes(sp)
    exact, worst = 0, 0.0
    for d, text in enumerate(texts):
        ids = tokens[starts[d] + 1 : starts[d + 1]].astype(np.int64)
        decoded = caseops.decode(sp.decode(ids.tolist()))
        recomputed = int(size[ids].sum()) - 3 * int(marker[ids].sum())  # no literal marker characters here
        assert recomputed == len(decoded.encode("utf-8"))
        assert int(counts[starts[d] : starts[d + 1]].sum()) == len(text.encode("utf-8"))
        if decoded == text:
            assert recomputed == len(text.encode("utf-8"))
        exact += recomputed == len(text.encode("utf-8"))
        worst = max(worst, abs(recomputed - len(text.encode("utf-8"))) / len(text.encode("utf-8")))
    assert exact >= 0.75 * len(texts)  # 49 of 60; the rest differ by what the normalizer changed
    assert 0 < worst < DOC_TOLERANCE[1] / 10  # the tolerance is far above the normalizer's effect (1.3 %)


def test_sidecar_check_keeps_escaped_literal_markers_and_passes_honest_counts():
    """A literal marker character in the text is ESC + marker: the marker then carries its own 3 bytes."""
    from golf_lit.data.caseops import ESC, TITLE
    from golf_lit.data.encode import encode_chunk_caseops

    tok = resolve("sample:tokenizers/fineweb_1024_bpe_caseops.model")
    sp = load_tokenizer(tok)
    texts = [f"A literal {TITLE} and {ESC}{ESC} in Some Text.", "PLAIN words", f"{ESC}"]
    lines = [json.dumps({"text": t}) for t in texts]
    tokens, counts = encode_chunk_caseops(("docs.jsonl", 1, lines, 0), sp, int(sp.bos_id()))
    tokens, counts = tokens.astype(np.int64), counts.astype(np.int64)
    assert int(counts.sum()) == sum(len(t.encode("utf-8")) for t in texts)
    esc = int(sp.piece_to_id(ESC))
    assert int((tokens == esc).sum()) >= 4  # three escapes and one literal ESC
    verify_sidecar(tokens, counts, sp, int(sp.bos_id()), ("side.bin",))  # honest counts pass
    literal = np.flatnonzero((tokens[:-1] == esc) & (tokens[1:] == int(sp.piece_to_id(TITLE))))[0] + 1
    assert counts[literal] == 3
    moved = counts.copy()
    moved[literal], moved[literal - 1] = 0, 3  # the literal's bytes on its escaping ESC: a marker must count 0
    with pytest.raises(SidecarMismatchError, match=r"side.bin: document 0 gives a CaseOps marker"):
        verify_sidecar(tokens, moved, sp, int(sp.bos_id()), ("side.bin",))
