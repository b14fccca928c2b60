"""Byte look-up tables and bits per byte (docs/record-stack.md §3): by hand and against sentencepiece's own decoding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES, resolve
from golf_lit.data.shards import load_shard
from golf_lit.data.tokenizer import build_byte_luts, load_tokenizer
from golf_lit.train.metrics import BitsPerByte, bpb_from_sums
from tests.conftest import VAL_DOCS


def test_luts_on_known_pieces(sample_luts):
    sp_ids = {"<s>": 1, "<unk>": 3}
    assert sample_luts.is_boundary[0] and sample_luts.is_boundary[sp_ids["<s>"]] and sample_luts.is_boundary[3]
    assert sample_luts.base_bytes[1] == 0
    byte_piece = 4 + 0x41  # byte-fallback pieces follow the 4 specials: <0x41> is one byte
    assert sample_luts.base_bytes[byte_piece] == 1 and not sample_luts.is_boundary[byte_piece]


def test_token_bytes_rule(sample_luts):
    sp = load_tokenizer(resolve(SAMPLE_TOKENIZER))
    the = sp.piece_to_id("\u2581the")
    assert sample_luts.has_leading_space[the] and sample_luts.base_bytes[the] == 3
    prev = torch.tensor([1, 100])  # after BOS the leading space is not counted; after a normal piece it is
    tgt = torch.tensor([the, the])
    assert sample_luts.token_bytes(prev, tgt).tolist() == [3, 4]


def test_bpb_by_hand_on_ten_tokens(sample_luts):
    sp = load_tokenizer(resolve(SAMPLE_TOKENIZER))
    ids = [1] + sp.encode("The cat sat. A dog ran")[:9]
    assert len(ids) == 10
    x, y = torch.tensor(ids[:-1]), torch.tensor(ids[1:])
    pieces = [sp.id_to_piece(i) for i in ids[1:]]
    # by hand: UTF-8 bytes of each piece, "▁" counted as one space byte unless the previous token is BOS
    expected = 0
    for prev, piece in zip(ids[:-1], pieces):
        stripped = piece[1:] if piece.startswith("\u2581") else piece
        expected += len(stripped.encode()) + (piece.startswith("\u2581") and prev != 1)
    assert expected == len(sp.decode(ids[1:]).encode())
    nll = torch.full((9,), 2.0)
    metric = BitsPerByte(sample_luts)
    metric.update(nll, x, y)
    out = metric.compute()
    assert out["val_loss"].dtype == torch.float64
    assert out["val_loss"].item() == pytest.approx(2.0)
    assert out["val_bpb"].item() == pytest.approx(18.0 / (math.log(2) * expected), rel=1e-12)
    assert bpb_from_sums(18.0, 9, expected) == pytest.approx((2.0, 18.0 / (math.log(2) * expected)))


def test_metric_accumulates_across_updates(sample_luts):
    metric = BitsPerByte(sample_luts)
    ids = torch.randint(4, 1024, (2, 17))
    nll = torch.rand(2, 16)
    metric.update(nll[0], ids[0, :-1], ids[0, 1:])
    metric.update(nll[1], ids[1, :-1], ids[1, 1:])
    whole = BitsPerByte(sample_luts)
    whole.update(nll, ids[:, :-1], ids[:, 1:])
    assert metric.compute()["val_bpb"].item() == pytest.approx(whole.compute()["val_bpb"].item(), rel=1e-12)
    assert metric.token_count.item() == 32


def test_lut_bytes_equal_sentencepiece_decoding_on_real_val():
    """Every val document's LUT byte total equals the UTF-8 length of sentencepiece's decoding of it.

    (The decoded text is the NFKC-normalised text, so it can differ from the raw document: the byte count
    is of what the tokens encode, which is what bpb measures.) Runs on the bundled 36-document val shard.
    """
    sp = load_tokenizer(resolve(SAMPLE_TOKENIZER))
    luts = build_byte_luts(sp, 1024)
    tokens = np.asarray(load_shard(resolve(SAMPLE_VAL_FILES).replace("*", "000000"))).astype(np.int64)
    starts = np.flatnonzero(tokens == 1).tolist() + [tokens.size]
    assert len(starts) - 1 == 36
    for a, b in zip(starts[:-1], starts[1:]):
        doc = torch.from_numpy(tokens[a:b])
        lut_bytes = int(luts.token_bytes(doc[:-1], doc[1:]).sum())
        assert lut_bytes == len(sp.decode(doc[1:].tolist()).encode("utf-8")), f"document at token {a}"
    with open(VAL_DOCS, encoding="utf-8") as f:
        first = json.loads(f.readline())["text"]
    assert sp.decode(tokens[1 : starts[1]].tolist()) == sp.decode(sp.encode(first))


def test_missing_tokenizer_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        load_tokenizer(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.model"):
        load_tokenizer(bad)
