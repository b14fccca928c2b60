"""golf-lit data train-tokenizer, and the model/tokenizer vocabulary check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sentencepiece as spm

from golf_lit.cli import main as golf_lit_main
from golf_lit.data.paths import resolve
from golf_lit.data.train_tokenizer import train_tokenizer
from golf_lit.data.vocab import require_vocab_match
from tests.conftest import VAL_DOCS


def data_main(argv: list[str]) -> int:
    """``golf-lit data ...`` through the dispatcher (which also accepts hyphenated options: --data-dir)."""
    return golf_lit_main(["data", *argv])


CHALLENGE_TOKENIZER = resolve("sample:tokenizers/fineweb_1024_bpe.model")


def _check(vocab_size, path):
    """The vocabulary rule every command applies: the tokenizer's piece count must equal model.vocab_size."""
    from golf_lit.data.tokenizer import load_tokenizer

    pieces = int(load_tokenizer(path).vocab_size())
    require_vocab_match(vocab_size, pieces, path)
    return pieces


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tok")
    report = train_tokenizer(VAL_DOCS, vocab_size=512, out=out, heldout_docs=20, num_threads=1)
    return report, spm.SentencePieceProcessor(model_file=str(report.model_path)), out


def test_files_and_special_ids(trained) -> None:
    report, sp, out = trained
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_512_bpe.model", "fineweb_512_bpe.vocab"]  # no temp dir
    assert report.vocab_size == sp.vocab_size() == 512
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    byte_ids = [i for i in range(512) if sp.is_byte(i)]
    assert byte_ids == list(range(4, 260)) and sp.id_to_piece(4) == "<0x00>" and sp.id_to_piece(259) == "<0xFF>"
    assert len(report.vocab_path.read_text(encoding="utf-8").splitlines()) == 512
    assert report.train_docs == 180 and report.heldout_docs == 20


def test_challenge_flags(trained) -> None:
    _, sp, _ = trained
    challenge = spm.SentencePieceProcessor(model_file=str(CHALLENGE_TOKENIZER))
    # same normalizer (nmt_nfkc, whitespace handling, no dummy prefix) as the challenge tokenizer
    for text in _texts(VAL_DOCS)[-20:] + ["  ﬁ  １２ \t x\n\ny ", "café"]:
        assert sp.normalize(text) == challenge.normalize(text)
    assert not sp.encode_as_pieces("hello")[0].startswith("\u2581")  # add_dummy_prefix=False
    assert sp.encode_as_pieces("2024")[:4] == ["2", "0", "2", "4"]  # split_digits
    parrot = sp.encode("🦜")  # byte_fallback: an unseen character becomes its 4 UTF-8 byte pieces
    assert len(parrot) == 4 and all(sp.is_byte(i) for i in parrot) and sp.decode(parrot) == "🦜"
    assert sp.unk_id() not in sp.encode("🦜 東京 Ω")


def test_heldout_roundtrip_and_tokens_per_byte(trained) -> None:
    report, sp, _ = trained
    heldout = _texts(VAL_DOCS)[-20:]
    n_tokens = n_bytes = 0
    for text in heldout:
        ids = sp.encode(text)
        assert sp.decode(ids) == sp.normalize(text).replace("\u2581", " ")  # lossless up to normalization
        n_tokens += len(ids)
        n_bytes += len(text.encode("utf-8"))
    assert (report.heldout_tokens, report.heldout_bytes) == (n_tokens, n_bytes)
    assert report.tokens_per_byte == n_tokens / n_bytes
    assert 0.2 < report.tokens_per_byte < 1.0  # a 512-piece BPE compresses English somewhat


def test_cli_prints_tokens_per_byte(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(VAL_DOCS.read_text(encoding="utf-8").splitlines(keepends=True)[:120]), encoding="utf-8")
    argv = [
        "train-tokenizer",
        "--docs",
        str(docs),
        "--vocab-size",
        "400",
        "--data-dir",
        str(tmp_path),
        "--heldout-docs",
        "10",
        "--threads",
        "1",
    ]
    assert data_main(argv) == 0
    out = capsys.readouterr().out
    m = re.search(r"tokens/byte on 10 held-out docs: ([0-9.]+) \((\d+) tokens / (\d+) bytes\)", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(int(m.group(2)) / int(m.group(3)), abs=1e-6)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizers" / "fineweb_400_bpe.model"))
    held = _texts(docs)[-10:]
    assert int(m.group(2)) == sum(len(sp.encode(t)) for t in held)
    assert int(m.group(3)) == sum(len(t.encode("utf-8")) for t in held)


def test_bad_options_and_too_small_data(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"doc {i} with some words"}) + "\n" for i in range(5)))
    with pytest.raises(ValueError, match=r"--vocab-size must be in 261\.\.65536"):
        train_tokenizer(docs, vocab_size=200, out=tmp_path / "o")
    with pytest.raises(ValueError, match=r"has 5 documents; --heldout-docs 5 leaves none"):
        train_tokenizer(docs, vocab_size=300, out=tmp_path / "o", heldout_docs=5)
    with pytest.raises(ValueError, match=r"SentencePiece could not train a 60000-piece BPE on 4 documents"):
        train_tokenizer(docs, vocab_size=60000, out=tmp_path / "o", heldout_docs=1, num_threads=1)
    assert not any((tmp_path / "o").iterdir())  # the failed run left no files and no temp folder
    with pytest.raises(FileNotFoundError, match=r"docs file not found"):
        train_tokenizer(tmp_path / "nope.jsonl", vocab_size=300, out=tmp_path / "o")


def test_vocab_check_names_both_sides() -> None:
    assert _check(1024, CHALLENGE_TOKENIZER) == 1024
    with pytest.raises(
        ValueError, match=r"model\.vocab_size=4096 but tokenizer .*fineweb_1024_bpe\.model has 1024 pieces"
    ):
        _check(4096, CHALLENGE_TOKENIZER)
    with pytest.raises(FileNotFoundError, match=r"tokenizer model not found"):
        _check(1024, "no/such/tokenizer.model")
