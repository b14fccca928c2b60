"""CaseOps (docs/top-stack.md §2.2-2.3): exact inverse, marker pieces, BOS per document, and the byte sidecar."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from golf_lit.cli import main as golf_lit_main
from golf_lit.data import caseops
from golf_lit.data.caseops import ALLCAPS, CAPNEXT, ESC, TITLE
from golf_lit.data.encode import tokenize_documents
from golf_lit.data.paths import resolve
from golf_lit.data.shards import load_shard
from golf_lit.data.tokenizer import load_tokenizer
from golf_lit.data.train_tokenizer import train_tokenizer


def data_main(argv: list[str]) -> int:
    """``golf-lit data ...`` through the dispatcher (which also accepts hyphenated options: --data-dir)."""
    return golf_lit_main(["data", *argv])


VAL_DOCS = Path(__file__).parent / "data" / "fineweb_val_docs.jsonl"
VOCAB = 400


def _texts() -> list[str]:
    return [json.loads(line)["text"] for line in VAL_DOCS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def caseops_tokenizer(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    report = train_tokenizer(VAL_DOCS, VOCAB, out, heldout_docs=20, num_threads=1, caseops=True)
    assert report.model_path.name == f"fineweb_{VOCAB}_bpe_caseops.model"
    return report.model_path


@pytest.mark.parametrize(
    "text, encoded",
    [
        ("The NASA Launch", f"{TITLE}the {ALLCAPS}nasa {TITLE}launch"),
        ("I a", f"{TITLE}i a"),
        ("iPhone McDonald", f"i{CAPNEXT}phone {TITLE}mc{CAPNEXT}donald"),
        ("ABc aBC", f"{TITLE}a{CAPNEXT}bc a{CAPNEXT}b{CAPNEXT}c"),
        ("ÉCOLE 東京 x", f"É{ALLCAPS}cole 東京 x"),  # words are runs of ASCII letters only
        (f"a{TITLE}b{ESC}", f"a{ESC}{TITLE}b{ESC}{ESC}"),
        ("", ""),
    ],
)
def test_encode_hand_worked(text, encoded):
    assert caseops.encode(text) == encoded
    assert caseops.decode(encoded) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "lower only",
        "X",
        "A1B2c3D",
        f"{TITLE}{ALLCAPS}{CAPNEXT}{ESC}",  # every marker literally, back to back
        f"{ESC}{ESC}A{ESC}",
        f"WORD{ALLCAPS}word{CAPNEXT}W",
        "MiXeD CaSe wOrDs ALLCAPS Title ünïcödé ÀB Straße ﬁ 🦜\t\n  \x00",
        "aAaA" * 50,
    ],
)
def test_adversarial_roundtrip_and_byte_weights(text):
    enc = caseops.encode(text)
    assert caseops.decode(enc) == text
    assert int(caseops.original_byte_weights(enc).sum()) == len(text.encode("utf-8"))
    assert enc.lower() == enc or any(m in enc for m in caseops.MARKERS)  # no uppercase ASCII survives unmarked
    assert not any("A" <= ch <= "Z" for ch in enc)


def test_roundtrip_on_every_bundled_validation_document():
    texts = _texts()
    assert len(texts) == 200
    for i, t in enumerate(texts):
        assert caseops.decode(caseops.encode(t)) == t, i
    assert any(caseops.encode(t) != t for t in texts)


@pytest.mark.parametrize("bad", [TITLE, f"{TITLE}1", ALLCAPS + " ", "x" + ESC])
def test_decode_rejects_dangling_markers(bad):
    with pytest.raises(ValueError, match="CaseOps decode"):
        caseops.decode(bad)


def test_piece_byte_counts_charge_gaps_forward_and_trailing_to_last():
    w = np.array([1, 1, 3, 0, 1, 2], dtype=np.int64)
    # chars 0-1 dropped (charged to piece 0), piece 1 empty (byte-fallback head), trailing char 5 to the last
    assert caseops.piece_byte_counts(w, [(2, 3), (3, 3), (3, 5)]).tolist() == [5, 0, 1 + 2]
    # a dropped gap before a marker piece (weight 0) moves on to the next piece with bytes of its own
    assert caseops.piece_byte_counts(w, [(3, 4), (4, 5), (5, 6)]).tolist() == [0, (1 + 1 + 3) + 1, 2]
    assert caseops.piece_byte_counts(w, []).tolist() == []


def test_tokenizer_has_markers_as_pieces_4_to_7(caseops_tokenizer):
    sp = load_tokenizer(caseops_tokenizer)
    assert [sp.piece_to_id(m) for m in caseops.MARKERS] == [4, 5, 6, 7]
    assert sp.is_byte(8) and sp.is_byte(263)
    assert caseops.is_caseops_tokenizer(sp)
    assert not caseops.is_caseops_tokenizer(load_tokenizer(resolve("sample:tokenizers/fineweb_1024_bpe.model")))
    ids = sp.encode(caseops.encode("The NASA"), out_type=int)
    assert ids[0] == 4 and 5 in ids


def test_sidecar_bytes_equal_the_original_utf8_length(caseops_tokenizer, tmp_path):
    texts = _texts()
    extra = ["", "   ", "MIXED ünï 🦜 " + ESC + TITLE, "\n\n  Lead and trail  \n"]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts + extra), encoding="utf-8")
    r = tokenize_documents(docs, caseops_tokenizer, tmp_path / "out", num_val_docs=204, shard_tokens=50_000,
                           workers=2, progress=False, caseops=True)
    assert len(r.val_files) >= 2 and [p.name for p in r.val_byte_files] == [
        p.name.replace("fineweb_val_", "fineweb_val_bytes_") for p in r.val_files]
    toks = np.concatenate([np.asarray(load_shard(f)) for f in r.val_files])
    counts = np.concatenate([np.asarray(load_shard(f)) for f in r.val_byte_files]).astype(np.int64)
    for tf, bf in zip(r.val_files, r.val_byte_files):  # same length shard by shard
        assert load_shard(tf).size == load_shard(bf).size
    original = sum(len(t.encode("utf-8")) for t in texts + extra)
    assert int(counts.sum()) == original == r.val_bytes
    bos = np.flatnonzero(toks == 1)
    assert bos.size == 204 and bos[0] == 0  # every document starts with BOS
    # per document: the counts between BOS add up to that document's bytes; BOS and markers count 0
    bounds = [*bos.tolist(), toks.size]
    per_doc = [int(counts[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
    assert per_doc == [len(t.encode("utf-8")) for t in texts + extra]
    assert counts[bos].tolist() == [0] * 201 + [3, 0, 0]  # only the whitespace-only doc charges its BOS
    marker = (toks >= 4) & (toks <= 7)
    unescaped = marker & np.concatenate([[True], toks[:-1] != 7])
    assert marker.sum() > 200 and (counts[unescaped] == 0).all()  # markers are free ...
    # ... literal ones are not: ESC+TITLE in the text is encoded ESC ESC ESC TITLE -> 0, 3, 0, 3
    assert counts[marker & ~unescaped].tolist() == [3, 0, 3]
    sp = load_tokenizer(caseops_tokenizer)
    pieces_ok = [sp.is_byte(int(t)) for t in toks]
    assert any(pieces_ok)  # byte fallback really happens on this text (non-ASCII chars outside the vocab)
    # decoding the tokens of a document and inverting CaseOps gives back the (normalized) original
    first = sp.decode(toks[1 : bos[1]].tolist())
    assert caseops.decode(first).split() == unicodedata.normalize("NFKC", texts[0]).split()


def test_multibyte_char_is_charged_to_its_last_byte_piece(caseops_tokenizer, tmp_path):
    docs = tmp_path / "d.jsonl"
    docs.write_text(json.dumps({"text": "a🦜"}) + "\n", encoding="utf-8")
    r = tokenize_documents(docs, caseops_tokenizer, tmp_path / "o", num_val_docs=1, progress=False, caseops=True)
    sp = load_tokenizer(caseops_tokenizer)
    toks = np.asarray(load_shard(r.val_files[0])).tolist()
    counts = np.asarray(load_shard(r.val_byte_files[0])).tolist()
    assert toks[0] == 1 and counts[0] == 0
    assert [sp.id_to_piece(t) for t in toks[-4:]] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"]
    assert counts[-4:] == [0, 0, 0, 4] and sum(counts) == 5


def test_tokenize_refuses_mismatched_caseops_flag(caseops_tokenizer, tmp_path):
    from golf_lit.data.paths import SAMPLE_TOKENIZER, resolve

    docs = tmp_path / "d.jsonl"
    docs.write_text(json.dumps({"text": "Hi"}) + "\n")
    with pytest.raises(ValueError, match="--caseops needs a tokenizer"):
        tokenize_documents(docs, resolve(SAMPLE_TOKENIZER), tmp_path / "o", progress=False, caseops=True)
    with pytest.raises(ValueError, match="pass --caseops"):
        tokenize_documents(docs, caseops_tokenizer, tmp_path / "o", progress=False)


def test_cli_caseops(caseops_tokenizer, tmp_path, capsys):
    docs = tmp_path / "d.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Hello World", "NASA"]), encoding="utf-8")
    rc = data_main(["tokenize", "--docs", str(docs), "--tokenizer", str(caseops_tokenizer), "--out",
                    str(tmp_path / "o"), "--caseops", "--workers", "1", "--no-progress"])
    assert rc == 0
    assert "val byte sidecar: 1 shard(s), 15 original UTF-8 bytes" in capsys.readouterr().out
    assert (tmp_path / "o" / "fineweb_val_bytes_000000.bin").is_file()
