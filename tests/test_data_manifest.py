"""Half-written datasets: tokenize builds aside and moves into place; readers check the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.fabric import Fabric

from golf_lit.artifact.errors import ArtifactError
from golf_lit.cli import main as golf_lit_main
from golf_lit.data.datamodule import GolfDataModule
from golf_lit.data.encode import tokenize_documents
from golf_lit.data.manifest import MANIFEST_NAME, ManifestError, file_sha256, verify_folder
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES, resolve
from golf_lit.data.shards import read_shard_header, write_shard
from golf_lit.eval.config import EvalConfig
from golf_lit.eval.evaluator import RankEvaluation
from golf_lit.eval.strategies.sliding import SlidingConfig
from golf_lit.model.config import ModelConfig


def data_main(argv: list[str]) -> int:
    """``golf-lit data ...`` through the dispatcher (which also accepts hyphenated options: --data-dir)."""
    return golf_lit_main(["data", *argv])


TOKENIZER = resolve(SAMPLE_TOKENIZER)
TEXTS = [f"Document number {i}: the quick brown fox jumps over the lazy dog {i * 7}." for i in range(24)]


def _docs(path: Path, texts: list[str], bad_at: int | None = None) -> Path:
    lines = [json.dumps({"text": t}) for t in texts]
    if bad_at is not None:
        lines[bad_at] = '{"text": "unterminated}'
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _tokenize(docs: Path, out: Path, **kw):
    return tokenize_documents(docs, TOKENIZER, out, num_val_docs=8, shard_tokens=40, progress=False, **kw)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != "docs.jsonl")


def test_a_bad_line_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    docs = _docs(tmp_path / "docs.jsonl", TEXTS, bad_at=20)
    out = tmp_path / "out"
    for workers in (1, 2):
        with pytest.raises(ValueError, match=r"docs\.jsonl line 21: not valid JSON"):
            _tokenize(docs, out, workers=workers, chunk_docs=2)
        assert _siblings(out) == []  # no output folder, no temporary folder
    # not vacuous: the lines before the bad one fill several shards, which the old code left in `out`
    good = _tokenize(_docs(tmp_path / "docs.jsonl", TEXTS[:20]), out)
    assert len(good.val_files) >= 2 and len(good.train_files) >= 2
    assert _siblings(out) == ["out"]


def test_a_failed_overwrite_leaves_the_old_dataset_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _tokenize(_docs(tmp_path / "docs.jsonl", TEXTS), out)
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    assert MANIFEST_NAME in before and len(before) > 5
    bad = _docs(tmp_path / "docs.jsonl", TEXTS[::-1], bad_at=18)  # different text, fails after some shards
    with pytest.raises(ValueError, match=r"line 19: not valid JSON"):
        _tokenize(bad, out, overwrite=True, chunk_docs=1)
    assert _snapshot(out) == before and _siblings(out) == ["out"]
    # a successful overwrite replaces every shard (fewer now: the stale ones go) and keeps other files
    report = _tokenize(_docs(tmp_path / "docs.jsonl", TEXTS[:10]), out, overwrite=True)
    names = sorted(p.name for p in report.val_files + report.train_files)
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, MANIFEST_NAME, "notes.txt"])
    assert (out / "notes.txt").read_text() == "mine" and _siblings(out) == ["out"]
    assert all(f.parent == out.resolve() for f in report.val_files + report.train_files)
    verify_folder(out, checksums=True)


def test_the_manifest_lists_every_file_with_its_count_size_and_checksum(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = _tokenize(_docs(tmp_path / "docs.jsonl", TEXTS), out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    files = report.val_files + report.train_files
    assert sorted(manifest["files"]) == sorted(f.name for f in files)
    for f in files:
        entry = manifest["files"][f.name]
        assert entry == {"tokens": read_shard_header(f), "bytes": f.stat().st_size, "sha256": file_sha256(f)}
    assert sum(manifest["files"][f.name]["tokens"] for f in report.val_files) == report.val_tokens
    assert manifest["tokenizer"] == {"name": Path(TOKENIZER).name, "sha256": file_sha256(TOKENIZER), "vocab_size": 1024}


def _data(folder: Path) -> GolfDataModule:
    return GolfDataModule(
        train_files=str(folder / "fineweb_train_*.bin"), val_files=str(folder / "fineweb_val_*.bin"),
        tokenizer_path=SAMPLE_TOKENIZER, train_batch_tokens=64, train_seq_len=16, grad_accum_steps=1,
        val_batch_tokens=64,
    )


def _eval_setup(folder: Path) -> None:
    cfg = EvalConfig(artifact=str(folder / "missing.ptz"), model=ModelConfig(),
                     val_files=str(folder / "fineweb_val_*.bin"), tokenizer=SAMPLE_TOKENIZER,
                     sliding=SlidingConfig(seq_len=16, stride=8), accelerator="cpu", progress=False)
    RankEvaluation(cfg, Fabric(accelerator="cpu", devices=1)).setup()


def _damage(out: Path, how: str) -> str:
    if how == "stale":  # a leftover shard of another run
        write_shard(out / "fineweb_val_000009.bin", [1, 2, 3])
        return r"fineweb_val_000009\.bin is not listed in golf_lit_manifest\.json"
    if how == "truncated":
        victim = out / "fineweb_val_000001.bin"
        victim.write_bytes(victim.read_bytes()[:-2])
        return r"fineweb_val_000001\.bin has \d+ bytes, golf_lit_manifest\.json lists \d+"
    if how == "recounted":  # a shard rewritten whole with fewer tokens: sizes agree with its header, not the listing
        victim = out / "fineweb_val_000000.bin"
        write_shard(victim, [1] * (read_shard_header(victim) - 1))
        return r"fineweb_val_000000\.bin has \d+ bytes"
    (out / "fineweb_val_000000.bin").unlink()
    return r"fineweb_val_000000\.bin is listed in golf_lit_manifest\.json but missing"


@pytest.mark.parametrize("how", ["stale", "truncated", "recounted", "missing"])
def test_fit_and_eval_refuse_a_folder_that_disagrees_with_its_manifest(tmp_path: Path, how: str) -> None:
    out = tmp_path / "out"
    _tokenize(_docs(tmp_path / "docs.jsonl", TEXTS), out)
    _data(out).setup("fit")  # the intact folder loads
    with pytest.raises(ArtifactError, match="artifact file not found"):  # eval's data loads; then the artifact fails
        _eval_setup(out)
    pattern = _damage(out, how)
    where = rf"^{out.resolve()}: {pattern}"
    with pytest.raises(ManifestError, match=where):
        _data(out).setup("fit")
    with pytest.raises(ManifestError, match=where):
        _eval_setup(out)
    (out / MANIFEST_NAME).unlink()  # not vacuous: without the manifest the damage goes unnoticed, as before
    if how in ("stale", "recounted"):
        _data(out).setup("fit")


def test_folders_without_a_manifest_load_as_before() -> None:
    dm = GolfDataModule(train_files=SAMPLE_TRAIN_FILES, val_files=SAMPLE_VAL_FILES, tokenizer_path=SAMPLE_TOKENIZER,
                        train_batch_tokens=64, train_seq_len=16, grad_accum_steps=1, val_batch_tokens=64,
                        val_max_tokens=256)
    dm.setup("fit")
    assert dm.val_tokens.numel() == 257


def test_data_verify_catches_a_flipped_byte(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    _tokenize(_docs(tmp_path / "docs.jsonl", TEXTS), out)
    assert data_main(["verify", str(out)]) == 0
    assert "ok" in capsys.readouterr().out
    victim = out / "fineweb_train_000001.bin"
    raw = bytearray(victim.read_bytes())
    raw[-3] ^= 0x01  # a payload byte: size and header count still agree
    victim.write_bytes(bytes(raw))
    _data(out).setup("fit")  # the cheap checks at fit time do not read payloads
    assert data_main(["verify", str(out), "--no-checksums"]) == 0
    capsys.readouterr()
    assert data_main(["verify", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"golf-lit data verify: error: {out}: fineweb_train_000001.bin sha256 differs from "
                   f"{MANIFEST_NAME} (the file changed); re-run golf-lit data tokenize --overwrite")
    assert data_main(["verify", str(tmp_path)]) == 1  # no manifest
    assert f"no {MANIFEST_NAME}" in capsys.readouterr().err
