"""golf-lit data tokenize: JSONL documents -> challenge shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from golf_lit.cli import main as golf_lit_main
from golf_lit.data.encode import check_uint16_vocab, encode_chunk, tokenize_documents
from golf_lit.data.manifest import MANIFEST_NAME
from golf_lit.data.paths import resolve
from golf_lit.data.shards import load_shard, read_shard_header
from tests.conftest import TRAIN_DOCS, VAL_DOCS


def data_main(argv: list[str]) -> int:
    """``golf-lit data ...`` through the dispatcher (which also accepts hyphenated options: --data-dir)."""
    return golf_lit_main(["data", *argv])


SAMPLE_TOKENIZER = resolve("sample:tokenizers/fineweb_1024_bpe.model")


def _write_docs(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _stream(files: list[Path]) -> np.ndarray:
    return np.concatenate([np.asarray(load_shard(f)) for f in files]) if files else np.zeros(0, np.uint16)


TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Numbers 12345 and émigré café; tabs\tand\nnewlines.",
    "",  # an empty document is still a document: just its BOS
    "Unicode: 東京 🦜 — naïve façade.",
    "Short.",
    "A longer paragraph " * 20,
]


def _head(src: Path, n: int, dst: Path) -> Path:
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return dst


def test_val_docs_reproduce_the_bundled_shard_byte_for_byte(tmp_path: Path) -> None:
    """The bundled val shard is the first 36 of the 200 val docs, tokenized as the challenge does."""
    report = tokenize_documents(
        _head(VAL_DOCS, 36, tmp_path / "val36.jsonl"),
        SAMPLE_TOKENIZER,
        tmp_path / "out",
        num_val_docs=36,
        workers=2,
        progress=False,
    )
    assert [p.name for p in report.val_files] == ["fineweb_val_000000.bin"] and report.train_files == []
    assert report.num_val_docs == 36 and report.num_train_docs == 0
    expected = Path(resolve("sample:fineweb10B_sp1024/fineweb_val_000000.bin")).read_bytes()
    assert (tmp_path / "out" / "fineweb_val_000000.bin").read_bytes() == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fineweb_val_000000.bin", MANIFEST_NAME]


def test_train_docs_reproduce_the_bundled_train_shard(tmp_path: Path) -> None:
    """The bundled train shard is the first 280 train docs; their extra keys (id, url, ...) are ignored."""
    report = tokenize_documents(
        _head(TRAIN_DOCS, 280, tmp_path / "train280.jsonl"),
        SAMPLE_TOKENIZER,
        tmp_path / "out",
        num_val_docs=0,
        workers=2,
        progress=False,
    )
    assert (report.num_train_docs, report.train_tokens, report.val_files) == (280, 828_667, [])
    expected = Path(resolve("sample:fineweb10B_sp1024/fineweb_train_000000.bin")).read_bytes()
    assert (tmp_path / "out" / "fineweb_train_000000.bin").read_bytes() == expected


def test_each_document_is_bos_plus_its_encoding(tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "docs.jsonl", TEXTS)
    report = tokenize_documents(docs, SAMPLE_TOKENIZER, tmp_path / "out", num_val_docs=2, progress=False)
    sp = spm.SentencePieceProcessor(model_file=str(SAMPLE_TOKENIZER))
    want = [[1, *sp.encode(t)] for t in TEXTS]
    np.testing.assert_array_equal(_stream(report.val_files), np.concatenate(want[:2]))
    np.testing.assert_array_equal(_stream(report.train_files), np.concatenate(want[2:]))
    assert (report.num_val_docs, report.num_train_docs) == (2, len(TEXTS) - 2)
    assert report.val_tokens == sum(map(len, want[:2])) and report.train_tokens == sum(map(len, want[2:]))
    assert 2 not in _stream(report.val_files).tolist()  # no EOS


@pytest.mark.parametrize("workers", [1, 2])
def test_small_shards_split_the_stream_exactly(tmp_path: Path, workers: int) -> None:
    texts = [t + f" doc {i}" for i in range(40) for t in TEXTS[:2]]
    docs = _write_docs(tmp_path / "docs.jsonl", texts)
    whole = tokenize_documents(docs, SAMPLE_TOKENIZER, tmp_path / "whole", num_val_docs=0, progress=False)
    assert [p.name for p in whole.train_files] == ["fineweb_train_000000.bin"]
    total = whole.train_tokens
    shard = 97  # does not divide the doc lengths: documents spill across shard boundaries
    split = tokenize_documents(
        docs,
        SAMPLE_TOKENIZER,
        tmp_path / "split",
        num_val_docs=0,
        shard_tokens=shard,
        workers=workers,
        chunk_docs=7,
        progress=False,
    )
    sizes = [read_shard_header(f) for f in split.train_files]
    assert sizes == [shard] * (total // shard) + ([total % shard] if total % shard else [])
    assert [f.name for f in split.train_files] == [f"fineweb_train_{i:06d}.bin" for i in range(len(sizes))]
    np.testing.assert_array_equal(_stream(split.train_files), _stream(whole.train_files))
    # val + train streams of any split point concatenate to the same token stream
    both = tokenize_documents(
        docs,
        SAMPLE_TOKENIZER,
        tmp_path / "both",
        num_val_docs=13,
        shard_tokens=shard,
        workers=workers,
        chunk_docs=5,
        progress=False,
    )
    assert (both.num_val_docs, both.num_train_docs) == (13, len(texts) - 13)
    assert all(read_shard_header(f) == shard for f in both.val_files[:-1] + both.train_files[:-1])
    joined = np.concatenate([_stream(both.val_files), _stream(both.train_files)])
    np.testing.assert_array_equal(joined, _stream(whole.train_files))


def test_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "ok"}\n\n{"text": "fine"}\n{"txt": "typo"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"docs\.jsonl line 4: expected a JSON object with a \"text\" key"):
        tokenize_documents(docs, SAMPLE_TOKENIZER, tmp_path / "out", num_val_docs=1, progress=False)
    docs.write_text('{"text": "ok"}\n{"text": "unterminated}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"docs\.jsonl line 2: not valid JSON"):
        tokenize_documents(docs, SAMPLE_TOKENIZER, tmp_path / "out", num_val_docs=1, workers=2, progress=False)
    docs.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"docs\.jsonl line 1: \"text\" must be a string"):
        tokenize_documents(docs, SAMPLE_TOKENIZER, tmp_path / "out", num_val_docs=1, progress=False)


def test_token_ids_beyond_uint16_are_rejected() -> None:
    lines = [json.dumps({"text": "a"}).encode(), json.dumps({"text": "b"}).encode()]
    fake = lambda texts: [[5, 6] if t == "a" else [7, 70000] for t in texts]  # noqa: E731
    with pytest.raises(ValueError, match=r"docs\.jsonl line 11: token id 70000 does not fit the uint16"):
        encode_chunk(("docs.jsonl", 10, lines, 0), fake, bos_id=1)
    ok = encode_chunk(("docs.jsonl", 10, lines[:1], 0), fake, bos_id=1)
    assert ok.dtype == np.uint16 and ok.tolist() == [1, 5, 6]
    with pytest.raises(ValueError, match=r"tokenizer big\.model has 70000 pieces.*uint16"):
        check_uint16_vocab(70000, "big.model")
    check_uint16_vocab(65536, "ok.model")


def test_existing_shards_need_overwrite(tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "docs.jsonl", TEXTS)
    out = tmp_path / "out"
    first = tokenize_documents(docs, SAMPLE_TOKENIZER, out, num_val_docs=0, shard_tokens=20, progress=False)
    assert len(first.train_files) > 2
    first_stream = _stream(first.train_files)
    with pytest.raises(FileExistsError, match=r"already holds .* pass --overwrite"):
        tokenize_documents(docs, SAMPLE_TOKENIZER, out, num_val_docs=0, progress=False)
    second = tokenize_documents(docs, SAMPLE_TOKENIZER, out, num_val_docs=1, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_val_000000.bin", MANIFEST_NAME
    ]
    np.testing.assert_array_equal(
        np.concatenate([_stream(second.val_files), _stream(second.train_files)]), first_stream
    )


def test_cli_tokenize(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    docs = _write_docs(tmp_path / "docs.jsonl", TEXTS)
    argv = [
        "tokenize",
        "--docs",
        str(docs),
        "--tokenizer",
        str(SAMPLE_TOKENIZER),
        "--data-dir",
        str(tmp_path),
        "--num-val-docs",
        "3",
        "--workers",
        "1",
        "--no-progress",
    ]
    assert data_main(argv) == 0
    out = tmp_path / "datasets" / "fineweb10B_sp1024"  # default --out follows the challenge layout
    assert sorted(p.name for p in out.iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_val_000000.bin", MANIFEST_NAME
    ]
    assert "val:   3 docs" in capsys.readouterr().out
    assert data_main(argv) == 1  # shards exist, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert (
        data_main(
            [
                "tokenize",
                "--docs",
                str(tmp_path / "missing.jsonl"),
                "--tokenizer",
                str(SAMPLE_TOKENIZER),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "docs file not found" in capsys.readouterr().err
