"""The dataset manifest: what ``golf-lit data tokenize`` wrote, so a half-written or mixed folder is refused.

``tokenize`` writes ``golf_lit_manifest.json`` last, listing every shard of the folder (token and sidecar
shards) with its token count, byte size and sha256, plus the tokenizer's sha256 and vocabulary size. Readers
(``fit``'s data module, ``eval``) call :func:`check_dataset` on the folders their globs match: where a manifest
is present, a listed file that is missing, a ``.bin`` file that is not listed (the leftover of another run) or a
size / header token count that differs from the listing is refused with one line naming the folder and the file.
These checks read only file sizes and the 1 KiB headers; the sha256 of every file is compared only on request
(``golf-lit data verify DIR``). Folders without a manifest (the challenge's downloads, the bundled sample) are
accepted as before.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from golf_lit.data.shards import ShardError, read_shard_header
from golf_lit.io import atomic_write_text

MANIFEST_NAME = "golf_lit_manifest.json"
MANIFEST_FORMAT = "golf-lit dataset manifest"
MANIFEST_VERSION = 1


class ManifestError(ShardError):
    """A dataset folder disagrees with its manifest; the message names the folder and the file."""


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest entry of one shard: ``{"tokens", "bytes", "sha256"}`` (the header is checked)."""
    p = Path(path)
    return {"tokens": read_shard_header(p), "bytes": p.stat().st_size, "sha256": file_sha256(p)}


def write_manifest(
    folder: str | os.PathLike, files: list[Path], tokenizer: str | os.PathLike, vocab_size: int, **settings: Any
) -> Path:
    """Write ``folder/golf_lit_manifest.json`` (atomically) listing ``files``, which must lie in ``folder``.

    Args:
        folder: The dataset folder.
        files: Every shard of the dataset (token shards and byte sidecars).
        tokenizer: The SentencePiece model the shards were encoded with (its sha256 is recorded).
        vocab_size: The tokenizer's number of pieces.
        **settings: Extra settings recorded as they are (e.g. ``shard_tokens``, ``num_val_docs``, ``caseops``).

    Returns:
        The manifest path.
    """
    folder = Path(folder)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tokenizer": {"name": Path(tokenizer).name, "sha256": file_sha256(tokenizer), "vocab_size": int(vocab_size)},
        "settings": settings,
        "files": {Path(f).name: file_entry(folder / Path(f).name) for f in sorted(files)},
    }
    return atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None if it has none.

    Raises:
        ManifestError: if the manifest is not a golf-lit manifest of a known version.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ManifestError(f"{folder}: {MANIFEST_NAME} is not valid JSON ({str(exc)[:200]})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("version") != MANIFEST_VERSION
        or not isinstance(manifest.get("files"), dict)
    ):
        raise ManifestError(
            f"{folder}: {MANIFEST_NAME} is not a {MANIFEST_FORMAT} of version {MANIFEST_VERSION} with a 'files' map"
        )
    return manifest


def verify_folder(folder: str | os.PathLike, checksums: bool = False) -> dict[str, Any] | None:
    """Check a dataset folder against its manifest (nothing to check without one).

    Args:
        folder: The dataset folder.
        checksums: Also compare every file's sha256 (reads every byte; sizes and header counts are always checked).

    Returns:
        The manifest, or None if the folder has none.

    Raises:
        ManifestError: naming the folder and the file for a listed file that is missing, a ``.bin`` file that is
            not listed, or a size, token count or sha256 that differs from the listing.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    listed: dict[str, Any] = manifest["files"]
    hint = "re-run golf-lit data tokenize --overwrite"
    for name in sorted(p.name for p in folder.glob("*.bin") if not p.name.startswith(".")):
        if name not in listed:
            raise ManifestError(
                f"{folder}: {name} is not listed in {MANIFEST_NAME} (a leftover of another run?); remove it or {hint}"
            )
    for name, entry in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise ManifestError(f"{folder}: {name} is listed in {MANIFEST_NAME} but missing; {hint}")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise ManifestError(
                f"{folder}: {name} has {size} bytes, {MANIFEST_NAME} lists {entry.get('bytes')}; {hint}"
            )
        try:
            count = read_shard_header(path)
        except ShardError as exc:
            raise ManifestError(f"{folder}: {name}: {exc}; {hint}") from None
        if count != entry.get("tokens"):
            raise ManifestError(
                f"{folder}: {name} holds {count} tokens, {MANIFEST_NAME} lists {entry.get('tokens')}; {hint}"
            )
        if checksums and file_sha256(path) != entry.get("sha256"):
            raise ManifestError(f"{folder}: {name} sha256 differs from {MANIFEST_NAME} (the file changed); {hint}")
    return manifest


def check_dataset(pattern: str, checksums: bool = False, tokenizer: str | os.PathLike | None = None) -> None:
    """Check every folder holding a file that the shard glob ``pattern`` matches (see :func:`verify_folder`).

    With ``tokenizer``, also that its sha256 is the one each folder's manifest records: shards scored or trained
    with another tokenizer than they were encoded with give a wrong bpb without any other sign.
    A pattern matching nothing is left to the shard loaders, which name it.
    """
    digest = None
    for folder in sorted({Path(p).parent for p in glob.glob(str(pattern))}):
        manifest = verify_folder(folder, checksums=checksums)
        recorded = manifest.get("tokenizer") if manifest else None
        if tokenizer is None or not isinstance(recorded, dict) or not recorded.get("sha256"):
            continue
        digest = digest or file_sha256(tokenizer)
        if digest != recorded["sha256"]:
            raise ManifestError(
                f"{folder}: the tokenizer {tokenizer} (sha256 {digest[:12]}...) is not the one {MANIFEST_NAME} "
                f"records ({recorded.get('name')}, sha256 {str(recorded['sha256'])[:12]}...): these shards were "
                "encoded with another tokenizer"
            )
