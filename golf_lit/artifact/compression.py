"""zstd for the seed container: compress one frame, decompress it with a cap on the output (docs/record-stack.md §9.3).

Decompression is bounded: a small frame can expand to gigabytes (a "bomb"), so input is fed in 1 KiB pieces
(one zstd block of at most 128 KiB costs >= 3 input bytes, so a piece yields at most ~44 MiB) and reading stops
as soon as the output passes ``max_bytes``.
"""

from __future__ import annotations

import lzma
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import zstandard

try:
    import resource  # POSIX only: caps the size of what lrzip may write
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

from golf_lit.artifact.errors import ArtifactError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_DECOMPRESSED_BYTES = 256_000_000
"""Default cap on the decompressed size of a whole artifact, all its streams together (the record payload is
~20-30 MB)."""
MAX_DECODER_MEMORY = 1 << 27
"""Cap on the memory a decoder may reserve for its window/dictionary: 128 MiB (xz preset 9e needs 64 MiB, zstd's
default window limit is 128 MiB, brotli's window is at most 16 MiB)."""
_PIECE = 1 << 10


def compress(raw: bytes, level: int, checksum: bool = False) -> bytes:
    """zstd-compress ``raw`` into one frame (single-threaded, content size in the header).

    Args:
        raw: Bytes to compress.
        level: zstd level (1-22).
        checksum: Append the frame's 4-byte content checksum.

    Returns:
        Compressed bytes.
    """
    return zstandard.ZstdCompressor(level=level, write_checksum=checksum).compress(raw)


def too_big(source: str, stream: str, max_bytes: int) -> ArtifactError:
    """The error for a stream whose decompressed size passes the cap."""
    return ArtifactError(
        f"{source}: {stream} decompresses to more than the cap of {max_bytes:,} bytes "
        "(max_decompressed_bytes; a corrupt or malicious file?)"
    )


def decompress(
    blob: bytes, source: str = "<bytes>", max_bytes: int = MAX_DECOMPRESSED_BYTES, stream: str = "zstd frame"
) -> bytes:
    """Decompress one zstd frame, reporting where it fails and never producing more than ``max_bytes``.

    Args:
        blob: Compressed bytes.
        source: Name used in error messages (the file).
        max_bytes: Cap on the decompressed size.
        stream: Name of the stream in error messages (containers hold several).

    Returns:
        Decompressed bytes.

    Raises:
        ArtifactError: Not zstd, corrupt (with the byte range where decoding failed), truncated, trailing bytes,
            or larger than ``max_bytes`` once decompressed (naming the file and the cap).
    """
    if len(blob) < 4 or blob[:4] != ZSTD_MAGIC:
        raise ArtifactError(
            f"{source}: not a zstd artifact (byte offset 0: expected magic {ZSTD_MAGIC.hex()}, "
            f"found {blob[:4].hex()!r})"
        )
    try:
        declared = zstandard.get_frame_parameters(blob).content_size
    except zstandard.ZstdError as e:
        raise ArtifactError(f"{source}: corrupt {stream} header at byte offset 0: {e}") from e
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > max_bytes:
        raise too_big(source, stream, max_bytes)
    dobj = zstandard.ZstdDecompressor(max_window_size=MAX_DECODER_MEMORY).decompressobj()
    parts: list[bytes] = []
    total = 0
    for start in range(0, len(blob), _PIECE):
        piece = blob[start : start + _PIECE]
        try:
            out = dobj.decompress(piece)
        except zstandard.ZstdError as e:
            end = start + len(piece)
            raise ArtifactError(f"{source}: corrupt zstd data between byte offsets {start} and {end}: {e}") from e
        total += len(out)
        if total > max_bytes:
            raise too_big(source, stream, max_bytes)
        parts.append(out)
        if dobj.eof:
            frame_end = start + len(piece) - len(dobj.unused_data)
            if frame_end < len(blob):
                raise ArtifactError(
                    f"{source}: {len(blob) - frame_end} unexpected bytes after the {stream} "
                    f"at byte offset {frame_end}"
                )
            break
    if not dobj.eof:
        raise ArtifactError(f"{source}: truncated {stream}: the file ends at byte offset {len(blob)} mid-frame")
    return b"".join(parts)


# ------------------------------------------------------------------ codecs of the multi-stream container


PACKINGS = ("zstd", "brotli", "lzma", "pergroup")
"""Packings ``QuantConfig.compressor`` may list (docs/top-stack.md §5.7)."""
BACKENDS = ("auto", "lrzip", "lzma", "brotli", "zstd")
"""``QuantConfig.pergroup_backend`` values."""
CODEC_IDS = {"zstd": 1, "brotli": 2, "lzma": 3, "lrzip": 4}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}


def _brotli():
    try:
        import brotli
    except ImportError:
        return None
    return brotli


def have_brotli() -> bool:
    """Whether the optional ``brotli`` package (extra ``golf-lit[compress]``) is installed."""
    return _brotli() is not None


def have_lrzip() -> bool:
    """Whether the ``lrzip`` binary is on PATH (never required)."""
    return shutil.which("lrzip") is not None


def check_compressors(spec: str, backend: str = "auto") -> None:
    """Validate a compressor list and that what it names explicitly is installed.

    Raises:
        ValueError: Unknown packing/back-end, brotli requested without the package, lrzip without the binary.
    """
    names = [c.strip() for c in str(spec).split(",") if c.strip()]
    if not names:
        raise ValueError(f"expected one or more of {', '.join(PACKINGS)} (comma-separated), got {spec!r}")
    for name in names:
        if name not in PACKINGS:
            raise ValueError(f"unknown packing {name!r}; expected one of {', '.join(PACKINGS)}")
    if "brotli" in names and not have_brotli():
        raise ValueError("brotli is not installed: pip install 'golf-lit[compress]' (or pip install brotli)")
    if backend not in BACKENDS:
        raise ValueError(f"pergroup_backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if "pergroup" in names and backend == "brotli" and not have_brotli():
        raise ValueError("pergroup_backend brotli: brotli is not installed: pip install 'golf-lit[compress]'")
    if "pergroup" in names and backend == "lrzip" and not have_lrzip():
        raise ValueError("pergroup_backend lrzip: the lrzip binary is not on PATH (e.g. apt-get install lrzip)")


def shuffle2(raw: bytes) -> bytes:
    """Stride-2 byte shuffle: even-offset bytes, then odd-offset bytes (0401-V4096, PR #1089)."""
    return raw[0::2] + raw[1::2]


def unshuffle2(data: bytes) -> bytes:
    """Inverse of :func:`shuffle2`."""
    half = (len(data) + 1) // 2
    out = bytearray(len(data))
    out[0::2], out[1::2] = data[:half], data[half:]
    return bytes(out)


def encode(codec: str, raw: bytes, level: int | None = None) -> bytes:
    """Compress with one back-end: zstd (level, default 22), brotli (quality 11, window 24), lzma (preset 9e),
    lrzip (``-z -L 9``, ZPAQ)."""
    if codec == "zstd":
        return compress(raw, level or 22)
    if codec == "brotli":
        brotli = _brotli()
        if brotli is None:
            raise ValueError("brotli is not installed: pip install 'golf-lit[compress]' (or pip install brotli)")
        return brotli.compress(raw, quality=11, lgwin=24)
    if codec == "lzma":
        return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    if codec == "lrzip":
        return _lrzip(raw, ["-z", "-L", "9"], "compress")
    raise ValueError(f"unknown codec {codec!r}")


def decode(codec: str, blob: bytes, source: str, stream: str, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress one stream, never producing more than ``max_bytes``.

    Raises:
        ArtifactError: Naming the file and the stream: corrupt, truncated, trailing bytes, over the cap, or a
            back-end that is not installed.
    """
    if codec == "zstd":
        return decompress(blob, source, max_bytes, stream)
    if codec == "brotli":
        return _decode_brotli(blob, source, stream, max_bytes)
    if codec == "lzma":
        return _decode_lzma(blob, source, stream, max_bytes)
    if codec == "lrzip":
        if not have_lrzip():
            raise ArtifactError(f"{source}: {stream} is lrzip-compressed but the lrzip binary is not on PATH")
        try:
            out = _lrzip(blob, ["-d"], "decompress", max_bytes)
        except ValueError as e:
            raise ArtifactError(f"{source}: corrupt {stream}: {e}") from e
        if out is None:
            raise too_big(source, stream, max_bytes)
        return out
    raise ArtifactError(f"{source}: {stream}: unknown codec {codec!r}")


def _decode_brotli(blob: bytes, source: str, stream: str, max_bytes: int) -> bytes:
    brotli = _brotli()
    if brotli is None:
        raise ArtifactError(
            f"{source}: {stream} is brotli-compressed but brotli is not installed: pip install 'golf-lit[compress]'"
        )
    d = brotli.Decompressor()
    parts: list[bytes] = []
    limit = 1 << 20

    def take(out: bytes) -> None:
        parts.append(out)
        if sum(map(len, parts)) > max_bytes:
            raise too_big(source, stream, max_bytes)

    start = 0
    try:
        for start in range(0, len(blob), _PIECE * 64):
            if d.is_finished():
                raise ArtifactError(f"{source}: unexpected bytes after the {stream} at byte offset {start}")
            take(d.process(blob[start : start + _PIECE * 64], output_buffer_limit=limit))
            while not d.can_accept_more_data():
                take(d.process(b"", output_buffer_limit=limit))
        while not d.is_finished():  # drain output held back by the limit
            out = d.process(b"", output_buffer_limit=limit)
            if not out:
                break
            take(out)
    except brotli.error as e:
        raise ArtifactError(f"{source}: corrupt {stream} (brotli) after byte offset {start}: {e}") from e
    if not d.is_finished():
        raise ArtifactError(f"{source}: truncated {stream} (brotli): it ends at byte offset {len(blob)} mid-stream")
    return b"".join(parts)


def _decode_lzma(blob: bytes, source: str, stream: str, max_bytes: int) -> bytes:
    # Only the .xz format encode() writes; memlimit refuses a header declaring a huge dictionary before it is
    # allocated (a 77-byte stream can ask for GiBs).
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=MAX_DECODER_MEMORY)
    parts: list[bytes] = []
    total = 0
    data = blob
    try:
        while not d.eof:
            out = d.decompress(data, max_length=1 << 20)
            data = b""
            total += len(out)
            if total > max_bytes:
                raise too_big(source, stream, max_bytes)
            parts.append(out)
            if d.needs_input and not d.eof:
                raise ArtifactError(f"{source}: truncated {stream} (lzma): it ends at byte offset {len(blob)}")
    except lzma.LZMAError as e:
        raise ArtifactError(f"{source}: corrupt {stream} (lzma): {e}") from e
    if d.unused_data:
        raise ArtifactError(f"{source}: {len(d.unused_data)} unexpected bytes after the {stream} (lzma)")
    return b"".join(parts)


def _lrzip(data: bytes, flags: list[str], what: str, max_bytes: int | None = None) -> bytes | None:
    exe = shutil.which("lrzip")
    if exe is None:
        raise ValueError("the lrzip binary is not on PATH (e.g. apt-get install lrzip)")
    def cap_output() -> None:  # in the child: it cannot write a file past the cap (SIGXFSZ/EFBIG instead)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes + 1, max_bytes + 1))

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        src.write_bytes(data)
        proc = subprocess.run([exe, "-q", "-f", *flags, "-o", str(dst), str(src)], capture_output=True,
                              preexec_fn=cap_output if max_bytes is not None and resource else None)  # fmt: skip
        if max_bytes is not None and (proc.returncode == -signal.SIGXFSZ
                                      or (dst.is_file() and dst.stat().st_size > max_bytes)):
            return None  # killed at the cap, or past it whether lrzip failed or not
        if proc.returncode != 0 or not dst.is_file():
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ValueError(f"lrzip {what} failed: {msg[-1] if msg else proc.returncode}")
        return dst.read_bytes()
