"""golf-lit data download against a local fake of the Hugging Face hub."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from golf_lit.cli import main as golf_lit_main
from golf_lit.data import download as dl
from golf_lit.data.paths import resolve
from golf_lit.data.shards import load_shard, read_shard_header, write_shard


def data_main(argv: list[str]) -> int:
    """``golf-lit data ...`` through the dispatcher (which also accepts hyphenated options: --data-dir)."""
    return golf_lit_main(["data", *argv])


REPO = "willdepueoai/parameter-golf"
NUM_VAL, NUM_TRAIN = 1, 3


def _shard_tokens(split: str, i: int) -> np.ndarray:
    return (np.arange(100 + 10 * i) * (7 if split == "train" else 3) + i) % 1024


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    """A fake hub repo on disk: <hub>/datasets/{manifest.json, datasets/fineweb10B_sp1024/*.bin, tokenizers/*}."""
    root = tmp_path / "hub" / "datasets"
    manifest = {
        "datasets": [
            {
                "name": "fineweb10B_sp1024",
                "tokenizer_name": "sp_bpe_1024",
                "stats": {"files_train": NUM_TRAIN, "files_val": NUM_VAL, "docs_val": 50000},
            },
            {"name": "fineweb10B_sp4096", "tokenizer_name": "sp_bpe_4096", "stats": {"files_train": 2, "files_val": 1}},
        ],
        "tokenizers": [
            {
                "name": "sp_bpe_1024",
                "kind": "sentencepiece_bpe",
                "model_path": "tokenizers/fineweb_1024_bpe.model",
                "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
            },
        ],
    }
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(manifest))
    for split, n in (("val", NUM_VAL), ("train", NUM_TRAIN)):
        for i in range(n):
            write_shard(
                root / "datasets" / "fineweb10B_sp1024" / f"fineweb_{split}_{i:06d}.bin", _shard_tokens(split, i)
            )
    (root / "tokenizers").mkdir()
    shutil.copyfile(resolve("sample:tokenizers/fineweb_1024_bpe.model"), root / "tokenizers" / "fineweb_1024_bpe.model")
    (root / "tokenizers" / "fineweb_1024_bpe.vocab").write_text("<pad>\t0\n<s>\t0\n")
    return tmp_path / "hub"


class FakeHub:
    """Serves files from the fake hub the way hf_hub_download(local_dir=...) does; records calls."""

    def __init__(self, hub_dir: Path) -> None:
        self.hub_dir = hub_dir
        self.calls: list[str] = []

    def __call__(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        assert repo_id == REPO
        self.calls.append(filename)
        src = self.hub_dir / filename
        if not src.is_file():
            raise FileNotFoundError(f"404 {filename}")
        dst = Path(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return dst


def _expected_files(data: Path, train_shards: int) -> list[Path]:
    d = data / "datasets" / "fineweb10B_sp1024"
    return (
        [data / "manifest.json"]
        + [d / f"fineweb_val_{i:06d}.bin" for i in range(NUM_VAL)]
        + [d / f"fineweb_train_{i:06d}.bin" for i in range(train_shards)]
        + [data / "tokenizers" / "fineweb_1024_bpe.model", data / "tokenizers" / "fineweb_1024_bpe.vocab"]
    )


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_fresh_download_has_challenge_layout(hub: Path, tmp_path: Path) -> None:
    fake, data = FakeHub(hub), tmp_path / "data"
    report = dl.download("sp1024", train_shards=2, data_dir=data, progress=False, fetch=fake)
    expected = _expected_files(data, 2)
    assert _all_files(data) == set(expected)  # nothing else: no partial folders, no train shard 2
    assert set(report.downloaded) == set(expected) and report.skipped == []
    assert fake.calls[0] == "datasets/manifest.json"
    assert "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin" in fake.calls
    assert "datasets/tokenizers/fineweb_1024_bpe.model" in fake.calls
    for i in range(2):
        got = load_shard(data / "datasets" / "fineweb10B_sp1024" / f"fineweb_train_{i:06d}.bin")
        np.testing.assert_array_equal(got, _shard_tokens("train", i))
    assert (data / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == (
        hub / "datasets" / "tokenizers" / "fineweb_1024_bpe.model"
    ).read_bytes()


def test_second_run_skips_valid_files(hub: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    dl.download("sp1024", train_shards=2, data_dir=data, progress=False, fetch=FakeHub(hub))
    again = FakeHub(hub)
    report = dl.download("sp1024", train_shards=3, data_dir=data, progress=False, fetch=again)
    assert again.calls == ["datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin"]
    assert report.downloaded == [data / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000002.bin"]
    assert len(report.skipped) == len(_expected_files(data, 3)) - 2  # all but the manifest and the new shard


def test_corrupt_existing_files_are_downloaded_again(hub: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    dl.download("sp1024", train_shards=2, data_dir=data, progress=False, fetch=FakeHub(hub))
    shard = data / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])  # truncated: fails the size check
    model = data / "tokenizers" / "fineweb_1024_bpe.model"
    model.write_bytes(b"not a sentencepiece model")
    again = FakeHub(hub)
    dl.download("sp1024", train_shards=2, data_dir=data, progress=False, fetch=again)
    assert sorted(again.calls) == sorted(
        ["datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin", "datasets/tokenizers/fineweb_1024_bpe.model"]
    )
    assert read_shard_header(shard) == _shard_tokens("train", 1).size
    assert model.read_bytes() == (hub / "datasets" / "tokenizers" / "fineweb_1024_bpe.model").read_bytes()


class InterruptedHub(FakeHub):
    """Writes the first half of one shard into the download folder, then the connection drops."""

    def __init__(self, hub_dir: Path, victim: str) -> None:
        super().__init__(hub_dir)
        self.victim = victim

    def __call__(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        if filename.endswith(self.victim):
            self.calls.append(filename)
            data = (self.hub_dir / filename).read_bytes()
            dst = Path(local_dir) / filename
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data[: len(data) // 2])
            raise ConnectionError("connection reset by peer")
        return super().__call__(repo_id, filename, local_dir)


def test_interrupted_download_leaves_no_final_file_and_rerun_completes(hub: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    victim = data / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin"
    with pytest.raises(ConnectionError):
        dl.download(
            "sp1024",
            train_shards=3,
            data_dir=data,
            progress=False,
            fetch=InterruptedHub(hub, "fineweb_train_000001.bin"),
        )
    assert not victim.exists()
    assert not any(p.name.startswith("fineweb_train_000001") for p in victim.parent.iterdir())
    # the shards before the failure are in place and whole
    assert read_shard_header(victim.parent / "fineweb_train_000000.bin") == _shard_tokens("train", 0).size
    again = FakeHub(hub)
    dl.download("sp1024", train_shards=3, data_dir=data, progress=False, fetch=again)
    assert sorted(again.calls) == sorted(
        [
            "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
            "datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin",
            "datasets/tokenizers/fineweb_1024_bpe.model",
            "datasets/tokenizers/fineweb_1024_bpe.vocab",
        ]
    )
    assert _all_files(data) == set(_expected_files(data, 3))
    np.testing.assert_array_equal(load_shard(victim), _shard_tokens("train", 1))


def test_a_truncated_download_is_rejected_not_installed(hub: Path, tmp_path: Path) -> None:
    remote = hub / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin"
    remote.write_bytes(remote.read_bytes()[:-10])  # the "hub" serves a broken shard
    data = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match=r"fineweb_val_000000\.bin.*file size check failed"):
        dl.download("sp1024", train_shards=1, data_dir=data, progress=False, fetch=FakeHub(hub))
    assert not (data / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin").exists()


def test_unknown_variant_lists_known_ones(hub: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown variant 'sp999'.*sp1024, sp4096"):
        dl.download("sp999", train_shards=1, data_dir=tmp_path / "data", progress=False, fetch=FakeHub(hub))


def test_too_many_train_shards_says_how_many_exist(hub: Path, tmp_path: Path) -> None:
    fake = FakeHub(hub)
    with pytest.raises(ValueError, match=r"--train-shards 4 is more than the 3 train shards published for sp1024"):
        dl.download("sp1024", train_shards=4, data_dir=tmp_path / "data", progress=False, fetch=fake)
    assert fake.calls == ["datasets/manifest.json"]  # failed before fetching any shard


def test_missing_huggingface_hub_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` raise ImportError
    with pytest.raises(dl.DownloadError, match=r"pip install 'golf-lit\[hub\]'"):
        dl.download("sp1024", train_shards=1, data_dir=tmp_path / "data", progress=False)
    assert data_main(["download", "--data-dir", str(tmp_path / "data"), "--no-progress"]) == 1
    assert "pip install 'golf-lit[hub]'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_cli_download_goes_through_the_injectable_fetch(
    monkeypatch: pytest.MonkeyPatch, hub: Path, tmp_path: Path
) -> None:
    fake = FakeHub(hub)
    monkeypatch.setattr(dl, "hf_fetch", fake)
    monkeypatch.setattr(dl, "require_huggingface_hub", lambda: None)
    data = tmp_path / "data"
    assert (
        data_main(["download", "--variant", "sp1024", "--train-shards", "1", "--data-dir", str(data), "--no-progress"])
        == 0
    )
    assert _all_files(data) == set(_expected_files(data, 1))
    assert data_main(["download", "--train-shards", "9", "--data-dir", str(data), "--no-progress"]) == 1


@pytest.mark.parametrize(
    "manifest",
    [
        # datasets and tokenizers keyed by name, counts on the entry
        {
            "datasets": {"fineweb10B_sp1024": {"train_shards": 5, "val_shards": 2, "tokenizer_name": "t"}},
            "tokenizers": {"t": {"model_path": "tokenizers/a.model", "vocab_path": "tokenizers/a.vocab"}},
        },
        # entry named by the variant, tokenizer files inline and bare
        {
            "datasets": [
                {
                    "name": "sp1024",
                    "stats": {"files_train": 5, "files_val": 2},
                    "tokenizer_files": ["a.model", "a.vocab"],
                }
            ]
        },
        # inline tokenizer entry with an absolute path from the exporter's machine
        {
            "datasets": [
                {
                    "name": "fineweb10B_sp1024",
                    "num_train_shards": 5,
                    "num_val_shards": 2,
                    "tokenizer": {"model_path": "/export/out/tokenizers/a.model", "vocab_path": "tokenizers/a.vocab"},
                }
            ]
        },
    ],
)
def test_parse_manifest_accepts_plausible_shapes(manifest: dict) -> None:
    files = dl.parse_manifest(manifest, "sp1024", Path("m.json"))
    assert files == dl.VariantFiles("sp1024", "fineweb10B_sp1024", 5, 2, ("tokenizers/a.model", "tokenizers/a.vocab"))


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"tokenizers": []}, r"m\.json: missing key 'datasets'"),
        (
            {"datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "t", "stats": {"files_val": 1}}]},
            r"m\.json: dataset 'fineweb10B_sp1024' has no train shard count \(looked for stats\.files_train",
        ),
        (
            {"datasets": [{"name": "fineweb10B_sp1024", "stats": {"files_train": 1, "files_val": 1}}]},
            r"m\.json: dataset 'fineweb10B_sp1024' has no tokenizer",
        ),
        (
            {
                "datasets": [
                    {"name": "fineweb10B_sp1024", "tokenizer_name": "t", "stats": {"files_train": 1, "files_val": 1}}
                ],
                "tokenizers": [{"name": "u"}],
            },
            r"m\.json: dataset 'fineweb10B_sp1024' names tokenizer 't', which is not among",
        ),
        ([1, 2], r"m\.json: expected a JSON object"),
    ],
)
def test_parse_manifest_errors_name_manifest_and_key(manifest: object, message: str) -> None:
    with pytest.raises(dl.ManifestError, match=message):
        dl.parse_manifest(manifest, "sp1024", Path("m.json"))


def test_hf_fetch_asks_the_hub_for_a_dataset_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict = {}

    def fake_hf_hub_download(**kwargs) -> str:
        seen.update(kwargs)
        return str(Path(kwargs["local_dir"]) / kwargs["filename"])

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=fake_hf_hub_download))
    got = dl.hf_fetch(REPO, "datasets/manifest.json", tmp_path)
    assert seen == {
        "repo_id": REPO,
        "filename": "datasets/manifest.json",
        "repo_type": "dataset",
        "local_dir": tmp_path,
    }
    assert got == tmp_path / "datasets" / "manifest.json"


def test_stale_local_manifest_hint(hub: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    dl.download("sp1024", train_shards=0, data_dir=data, progress=False, fetch=FakeHub(hub))
    with pytest.raises(ValueError, match=r"more than the 3 train shards.*pass --refresh-manifest"):
        dl.download("sp1024", train_shards=5, data_dir=data, progress=False, fetch=FakeHub(hub))
    manifest = json.loads((hub / "datasets" / "manifest.json").read_text())
    manifest["datasets"][0]["stats"]["files_train"] = 5  # the hub published more shards since
    (hub / "datasets" / "manifest.json").write_text(json.dumps(manifest))
    for i in (3, 4):
        write_shard(hub / "datasets" / "datasets" / "fineweb10B_sp1024" / f"fineweb_train_{i:06d}.bin", [1, 2, i])
    fake = FakeHub(hub)
    dl.download("sp1024", train_shards=5, data_dir=data, progress=False, fetch=fake, refresh_manifest=True)
    assert fake.calls[0] == "datasets/manifest.json" and len(fake.calls) == 1 + 5  # manifest + train shards 0..4
    assert _all_files(data) == set(_expected_files(data, 5))
