"""Download the challenge's published FineWeb shards and tokenizer from the Hugging Face hub.

The export lives in the dataset repo ``willdepueoai/parameter-golf`` under a remote root (``datasets``).
Inside that root the layout mirrors the local one, so a file's local path is ``<data_dir>/<path under the
root>``:

- ``manifest.json`` -> ``./data/manifest.json``
- ``datasets/fineweb10B_<variant>/fineweb_{val,train}_NNNNNN.bin`` -> ``./data/datasets/fineweb10B_<variant>/...``
- ``tokenizers/<file>`` -> ``./data/tokenizers/<file>``

Assumed manifest schema (the one the challenge's own downloader reads; other plausible shapes are accepted)::

    {
      "datasets": [
        {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
         "stats": {"files_train": 195, "files_val": 1, ...}, ...}
      ],
      "tokenizers": [
        {"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
         "vocab_path": "tokenizers/fineweb_1024_bpe.vocab", ...}
      ]
    }

Also accepted: ``datasets`` / ``tokenizers`` as objects keyed by name; a dataset entry named by the variant
(``sp1024``) instead of the directory; shard counts as ``train_shards`` / ``val_shards`` (or ``num_...``) on
the entry or in ``stats``; tokenizer files given inline on the dataset entry as ``tokenizer_files`` (a list) or
``tokenizer`` (an entry with ``model_path`` / ``vocab_path`` / ``path``). Tokenizer paths without a folder are
taken to live under ``tokenizers/``. Anything else fails with an error naming the manifest and the missing key.

Every file is downloaded into a hidden ``.golf-lit-partial`` folder beside its destination, checked (shards:
header and size; SentencePiece models: they load), and only then moved onto its final name with
``os.replace``, so an interrupted or corrupt download never sits under a name that later passes for a whole
file. Files already present and valid are skipped. ``huggingface_hub`` is an optional extra
(``pip install 'golf-lit[hub]'``) and is imported only when a download actually starts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from golf_lit.data.shards import ShardError, read_shard_header

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_REMOTE_ROOT = "datasets"
DEFAULT_DATA_DIR = "./data"
DEFAULT_TRAIN_SHARDS = 80  # the record runs train on 80 shards = 8B tokens (docs/record-stack.md §2.1)
MANIFEST_NAME = "manifest.json"
PARTIAL_DIR_NAME = ".golf-lit-partial"

# (repo_id, filename in the repo, local folder to download into) -> path of the downloaded file.
Fetcher = Callable[[str, str, Path], Path]

_TRAIN_COUNT_KEYS = ("files_train", "train_shards", "num_train_shards", "train_files")
_VAL_COUNT_KEYS = ("files_val", "val_shards", "num_val_shards", "val_files")
_TOKENIZER_PATH_KEYS = ("model_path", "vocab_path", "path")


class ManifestError(ValueError):
    """The manifest does not have the expected shape; the message names the manifest and the missing key."""


class DownloadError(RuntimeError):
    """A download could not be completed (missing dependency, or the hub served an invalid file)."""


@dataclass(frozen=True)
class VariantFiles:
    """What the manifest says about one tokenizer variant.

    Attributes:
        variant: The variant name, e.g. ``sp1024``.
        dataset_dir: The dataset folder, e.g. ``fineweb10B_sp1024``.
        num_train_shards: Train shards published for this variant.
        num_val_shards: Validation shards published for this variant.
        tokenizer_files: Tokenizer files, as paths under the remote root (e.g. ``tokenizers/x.model``).
    """

    variant: str
    dataset_dir: str
    num_train_shards: int
    num_val_shards: int
    tokenizer_files: tuple[str, ...]


@dataclass
class DownloadReport:
    """What a download run did.

    Attributes:
        downloaded: Local files fetched in this run.
        skipped: Local files already present and valid.
    """

    downloaded: list[Path]
    skipped: list[Path]


def hf_fetch(repo_id: str, filename: str, local_dir: Path) -> Path:
    """Download one file of a Hugging Face dataset repo into ``local_dir`` (the default :data:`Fetcher`).

    Args:
        repo_id: Dataset repo, e.g. ``willdepueoai/parameter-golf``.
        filename: Path of the file inside the repo.
        local_dir: Folder to download into; the file lands at ``local_dir / filename``.

    Returns:
        The path of the downloaded file.
    """
    hub = require_huggingface_hub()
    return Path(hub.hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", local_dir=local_dir))


def require_huggingface_hub() -> Any:
    """Import ``huggingface_hub``, or fail with a message saying how to install it.

    Returns:
        The ``huggingface_hub`` module.

    Raises:
        DownloadError: if the package is not installed.
    """
    try:
        import huggingface_hub
    except ImportError as exc:
        raise DownloadError(
            "golf-lit data download needs the optional huggingface_hub package; "
            "install it with: pip install 'golf-lit[hub]'"
        ) from exc
    return huggingface_hub


def _entries(manifest: dict, key: str, manifest_path: Path) -> list[dict]:
    """The list of entries under ``key``, accepting a list of objects or an object keyed by name."""
    value = manifest.get(key)
    if isinstance(value, list) and all(isinstance(e, dict) for e in value):
        return value
    if isinstance(value, dict) and all(isinstance(e, dict) for e in value.values()):
        return [{"name": name, **entry} for name, entry in value.items()]
    raise ManifestError(
        f"manifest {manifest_path}: missing key {key!r} (expected a list of entries with a 'name', "
        f"or an object keyed by name)"
    )


def _count(entry: dict, keys: tuple[str, ...], what: str, manifest_path: Path) -> int:
    """A shard count from the entry or its ``stats``, trying each of ``keys``."""
    stats = entry.get("stats") if isinstance(entry.get("stats"), dict) else {}
    for source in (stats, entry):
        for key in keys:
            if source.get(key) is not None:
                try:
                    count = int(source[key])
                except (TypeError, ValueError):
                    raise ManifestError(
                        f"manifest {manifest_path}: dataset {entry.get('name')!r} key {key!r} = {source[key]!r} "
                        f"is not a shard count"
                    ) from None
                if count < 0:
                    raise ManifestError(f"manifest {manifest_path}: dataset {entry.get('name')!r} {key} < 0")
                return count
    raise ManifestError(
        f"manifest {manifest_path}: dataset {entry.get('name')!r} has no {what} shard count "
        f"(looked for {', '.join('stats.' + k for k in keys)} and the same keys on the entry)"
    )


def _tokenizer_paths(entry: dict) -> list[str]:
    """Tokenizer file paths of a tokenizer entry, in manifest order."""
    return [str(entry[k]) for k in _TOKENIZER_PATH_KEYS if entry.get(k)]


def _remote_tokenizer_path(path: str) -> str:
    """Normalize a manifest tokenizer path to a path under the remote root (``tokenizers/<name>``)."""
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or len(p.parts) == 1:
        return f"tokenizers/{p.name}"
    return p.as_posix()


def parse_manifest(manifest: dict, variant: str, manifest_path: Path) -> VariantFiles:
    """Find a variant's shard counts and tokenizer files in a parsed manifest (schema in the module docstring).

    Args:
        manifest: The parsed ``manifest.json``.
        variant: Variant name, e.g. ``sp1024`` (dataset folder ``fineweb10B_sp1024``).
        manifest_path: Where the manifest came from, for error messages.

    Returns:
        The variant's files.

    Raises:
        ManifestError: if the manifest lacks a required key.
        ValueError: if the variant is not in the manifest (the message lists the known variants).
    """
    if not isinstance(manifest, dict):
        raise ManifestError(f"manifest {manifest_path}: expected a JSON object at the top level")
    dataset_dir = f"fineweb10B_{variant}"
    datasets = _entries(manifest, "datasets", manifest_path)
    entry = next((e for e in datasets if e.get("name") in (dataset_dir, variant)), None)
    if entry is None:
        known = sorted(str(e.get("name", "?")).removeprefix("fineweb10B_") for e in datasets)
        raise ValueError(f"unknown variant {variant!r}: {manifest_path} lists {', '.join(known) or 'no variants'}")
    num_train = _count(entry, _TRAIN_COUNT_KEYS, "train", manifest_path)
    num_val = _count(entry, _VAL_COUNT_KEYS, "validation", manifest_path)

    if isinstance(entry.get("tokenizer_files"), list):
        paths = [str(p) for p in entry["tokenizer_files"]]
    elif isinstance(entry.get("tokenizer"), dict):
        paths = _tokenizer_paths(entry["tokenizer"])
    elif entry.get("tokenizer_name") is not None:
        name = entry["tokenizer_name"]
        tokenizers = _entries(manifest, "tokenizers", manifest_path)
        tok_entry = next((t for t in tokenizers if t.get("name") == name), None)
        if tok_entry is None:
            raise ManifestError(
                f"manifest {manifest_path}: dataset {dataset_dir!r} names tokenizer {name!r}, "
                f"which is not among its 'tokenizers' entries"
            )
        paths = _tokenizer_paths(tok_entry)
    else:
        raise ManifestError(
            f"manifest {manifest_path}: dataset {entry.get('name')!r} has no tokenizer "
            f"(looked for 'tokenizer_name', 'tokenizer_files' and 'tokenizer')"
        )
    if not paths:
        raise ManifestError(
            f"manifest {manifest_path}: the tokenizer of {entry.get('name')!r} lists no files "
            f"(looked for {', '.join(_TOKENIZER_PATH_KEYS)})"
        )
    return VariantFiles(variant, dataset_dir, num_train, num_val, tuple(_remote_tokenizer_path(p) for p in paths))


def is_valid_file(path: Path) -> bool:
    """Whether ``path`` holds a whole file: shards pass the header check, ``.model`` files load, JSON parses.

    Args:
        path: Local file.

    Returns:
        True if the file exists and passes the check for its kind (other kinds: non-empty).
    """
    if not path.is_file():
        return False
    if path.suffix == ".bin":
        try:
            read_shard_header(path)
        except (ShardError, OSError):
            return False
        return True
    if path.suffix == ".model":
        import sentencepiece as spm

        try:
            spm.SentencePieceProcessor(model_file=str(path))
        except Exception:  # sentencepiece raises bare RuntimeError/OSError on a bad file
            return False
        return True
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return False
        return True
    return path.stat().st_size > 0


def _install(fetch: Fetcher, repo_id: str, remote: str, dest: Path) -> None:
    """Fetch ``remote`` into the partial folder beside ``dest``, check it, then move it onto ``dest``."""
    partial = dest.parent / PARTIAL_DIR_NAME
    partial.mkdir(parents=True, exist_ok=True)
    got = Path(fetch(repo_id, remote, partial))
    staged = partial / f"staged-{dest.name}"  # keeps the suffix that picks the check
    if not got.is_symlink() and got.resolve().is_relative_to(partial.resolve()):
        os.replace(got, staged)  # downloaded into the partial folder: a rename
    else:
        shutil.copyfile(got, staged)  # served from elsewhere (a cache): copy, leave the source alone
    if not is_valid_file(staged):
        detail = ""
        if dest.suffix == ".bin":
            try:
                read_shard_header(staged)
            except (ShardError, OSError) as exc:
                detail = f": {exc}"
        staged.unlink(missing_ok=True)
        raise DownloadError(f"{repo_id}/{remote} downloaded but failed the validity check for {dest.name}{detail}")
    os.replace(staged, dest)


def _load_manifest(path: Path) -> dict:
    """Read a local manifest, with an error naming it if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ManifestError(f"manifest {path}: not valid JSON ({exc})") from exc


def download(
    variant: str = "sp1024",
    train_shards: int = DEFAULT_TRAIN_SHARDS,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    repo_id: str = DEFAULT_REPO_ID,
    remote_root: str = DEFAULT_REMOTE_ROOT,
    refresh_manifest: bool = False,
    progress: bool = True,
    fetch: Fetcher | None = None,
) -> DownloadReport:
    """Download a variant's validation shards, its first ``train_shards`` train shards and its tokenizer.

    Args:
        variant: Tokenizer variant, e.g. ``sp1024`` (dataset folder ``fineweb10B_sp1024``).
        train_shards: How many train shards to fetch (a prefix of the published ones).
        data_dir: Local data root; the layout below it is the challenge's.
        repo_id: Hugging Face dataset repo.
        remote_root: Folder inside the repo that holds ``manifest.json``, ``datasets/`` and ``tokenizers/``.
        refresh_manifest: Fetch the manifest again even if a valid local copy exists.
        progress: Show a progress bar over files.
        fetch: Download function (defaults to :func:`hf_fetch`); tests substitute a local fake.

    Returns:
        Which files were downloaded and which were already present.

    Raises:
        ValueError: for a negative ``train_shards``, an unknown variant or more train shards than published.
        ManifestError: if the manifest lacks a required key.
        DownloadError: if ``huggingface_hub`` is missing or a downloaded file fails its check.
    """
    if train_shards < 0:
        raise ValueError(f"--train-shards must be >= 0, got {train_shards}")
    if fetch is None:
        require_huggingface_hub()
        fetch = hf_fetch
    root = Path(data_dir)
    prefix = remote_root.strip("/")

    def remote(rel: str) -> str:
        return f"{prefix}/{rel}" if prefix else rel

    manifest_path = root / MANIFEST_NAME
    report = DownloadReport(downloaded=[], skipped=[])
    if refresh_manifest or not is_valid_file(manifest_path):
        _install(fetch, repo_id, remote(MANIFEST_NAME), manifest_path)
        report.downloaded.append(manifest_path)
    fresh = manifest_path in report.downloaded
    stale_hint = "" if fresh else "; pass --refresh-manifest if that local copy may be out of date"
    try:
        files = parse_manifest(_load_manifest(manifest_path), variant, manifest_path)
    except ManifestError:
        raise
    except ValueError as exc:  # unknown variant
        raise ValueError(f"{exc}{stale_hint}") from None
    if train_shards > files.num_train_shards:
        raise ValueError(
            f"--train-shards {train_shards} is more than the {files.num_train_shards} train shards published "
            f"for {variant} (per {manifest_path}{stale_hint})"
        )

    plan: list[tuple[str, Path]] = []
    for split, count in (("val", files.num_val_shards), ("train", train_shards)):
        for i in range(count):
            rel = f"datasets/{files.dataset_dir}/fineweb_{split}_{i:06d}.bin"
            plan.append((rel, root / rel))
    for rel in files.tokenizer_files:
        plan.append((rel, root / "tokenizers" / PurePosixPath(rel).name))

    bar = _progress_bar(len(plan), f"{variant} files", enabled=progress)
    try:
        for rel, dest in plan:
            if is_valid_file(dest):
                report.skipped.append(dest)
            else:
                _install(fetch, repo_id, remote(rel), dest)
                report.downloaded.append(dest)
            bar.set_postfix(downloaded=len(report.downloaded), skipped=len(report.skipped))
            bar.update(1)
    finally:
        bar.close()
    for partial in {dest.parent / PARTIAL_DIR_NAME for _, dest in plan} | {root / PARTIAL_DIR_NAME}:
        shutil.rmtree(partial, ignore_errors=True)
    return report


def _progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar (tqdm ships with lightning); disabled bars keep the same interface."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file", disable=not enabled)
