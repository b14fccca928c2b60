"""zstd for the seed container: compress one frame, decompress it with a cap on the output (SPEC §9.3).

Decompression is bounded: a small frame can expand to gigabytes (a "bomb"), so input is fed in 1 KiB pieces
(one zstd block of at most 128 KiB costs >= 3 input bytes, so a piece yields at most ~44 MiB) and reading stops
as soon as the output passes ``max_bytes``.
"""

from __future__ import annotations

import zstandard

from golf_lit.quant.errors import ArtifactError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_DECOMPRESSED_BYTES = 256_000_000
"""Default cap on the decompressed size of one stream (the record payload is ~20-30 MB)."""
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
    dobj = zstandard.ZstdDecompressor().decompressobj()
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
