"""Packings of ``(w, m)`` other than the seed's single zstd frame, in one multi-stream container (top-stack §5.7).

Container (little-endian): magic ``GLQZ``, version (u8), packing id (u8), stream count (u16), then per stream
codec id (u8), flags (u8; bit 0 = stride-2 byte shuffle), length (u64) and the CRC-32 of its compressed bytes
(u32; zstd without checksum and brotli would decode some corruptions silently), then the streams back to back.

- ``brotli``: one stream, the torch.save payload byte-shuffled (stride 2) and compressed with brotli quality 11
  (0401-V4096 from PR #1089; 0427-1851).
- ``lzma``: one stream, the torch.save payload compressed with xz preset 9e (stdlib).
- ``pergroup``: see :mod:`golf_lit.artifact.pergroup`.

A stream that fails to decode is named in the error with the file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from golf_lit.artifact import pergroup
from golf_lit.artifact.compression import (
    CODEC_IDS,
    CODEC_NAMES,
    MAX_DECOMPRESSED_BYTES,
    decode,
    encode,
    have_brotli,
    shuffle2,
    unshuffle2,
)
from golf_lit.artifact.container import deserialize, serialize
from golf_lit.artifact.errors import ArtifactError

MAGIC = b"GLQZ"
VERSION = 1
PACKING_IDS = {"brotli": 1, "lzma": 2, "pergroup": 3}
PACKING_NAMES = {v: k for k, v in PACKING_IDS.items()}
SHUFFLED = 1
_HEAD = struct.Struct("<4sBBH")
_STREAM = struct.Struct("<BBQI")

Stream = tuple[str, int, bytes]
"""(codec, flags, compressed bytes)."""


def write_container(packing: str, streams: list[Stream]) -> bytes:
    """Header + streams."""
    head = _HEAD.pack(MAGIC, VERSION, PACKING_IDS[packing], len(streams))
    table = b"".join(
        _STREAM.pack(CODEC_IDS[codec], flags, len(data), zlib.crc32(data)) for codec, flags, data in streams
    )
    return head + table + b"".join(data for _, _, data in streams)


def read_container(blob: bytes, source: str) -> tuple[str, list[Stream]]:
    """Split a container into its streams, checking the header and every length against the file size."""
    if len(blob) < _HEAD.size or blob[:4] != MAGIC:
        raise ArtifactError(f"{source}: not a golf-lit container (byte offset 0: expected magic {MAGIC!r})")
    _, version, packing_id, count = _HEAD.unpack_from(blob)
    if version != VERSION:
        raise ArtifactError(f"{source}: container version {version} is not supported (this golf-lit reads {VERSION})")
    if packing_id not in PACKING_NAMES:
        raise ArtifactError(f"{source}: unknown packing id {packing_id} at byte offset 5")
    table_end = _HEAD.size + count * _STREAM.size
    if len(blob) < table_end:
        raise ArtifactError(f"{source}: truncated container header: {len(blob)} bytes, the stream table needs {table_end}")  # noqa: E501
    streams: list[Stream] = []
    pos = table_end
    for i in range(count):
        codec_id, flags, length, crc = _STREAM.unpack_from(blob, _HEAD.size + i * _STREAM.size)
        if codec_id not in CODEC_NAMES:
            raise ArtifactError(f"{source}: stream {i}: unknown codec id {codec_id}")
        if flags & ~SHUFFLED:
            raise ArtifactError(
                f"{source}: stream {i}: unknown flags 0x{flags:02x} (this golf-lit knows only 0x{SHUFFLED:02x}, "
                "the byte shuffle)"
            )
        if pos + length > len(blob):
            raise ArtifactError(
                f"{source}: truncated stream {i}: it needs bytes {pos}..{pos + length} but the file has {len(blob)}"
            )
        data = blob[pos : pos + length]
        if zlib.crc32(data) != crc:
            raise ArtifactError(
                f"{source}: corrupt stream {i} (bytes {pos}..{pos + length}): CRC-32 {zlib.crc32(data):08x}, "
                f"the header says {crc:08x}"
            )
        streams.append((CODEC_NAMES[codec_id], flags, data))
        pos += length
    if pos != len(blob):
        raise ArtifactError(f"{source}: {len(blob) - pos} unexpected bytes after the last stream at byte offset {pos}")
    return PACKING_NAMES[packing_id], streams


def decode_stream(stream: Stream, source: str, label: str, max_bytes: int) -> bytes:
    """Decompress (and unshuffle) one stream; errors name ``label``."""
    codec, flags, data = stream
    raw = decode(codec, data, source, label, max_bytes)
    return unshuffle2(raw) if flags & SHUFFLED else raw


def remainder_codec() -> str:
    """brotli when installed (TOP), else lzma."""
    return "brotli" if have_brotli() else "lzma"


def pack(w: Mapping[str, Tensor], m: Mapping[str, Any], packing: str, backend: str = "auto") -> bytes:
    """``(w, m)`` -> container bytes for ``packing`` in brotli, lzma, pergroup."""
    if packing == "brotli":
        return write_container("brotli", [("brotli", SHUFFLED, encode("brotli", shuffle2(serialize(w, m))))])
    if packing == "lzma":
        return write_container("lzma", [("lzma", 0, encode("lzma", serialize(w, m)))])
    if packing == "pergroup":
        return write_container("pergroup", pergroup.pack(w, m, backend, remainder_codec()))
    raise ValueError(f"unknown packing {packing!r}")


def unpack(
    blob: bytes,
    source: str,
    max_bytes: int = MAX_DECOMPRESSED_BYTES,
    template: Mapping[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Container bytes -> ``(w, m)``, decompressing at most ``max_bytes`` over all streams together.

    ``template`` (the declared model's state dict, e.g. on the meta device) lets the pergroup manifest be checked
    against the model's shapes before any code stream is decompressed.
    """
    packing, streams = read_container(blob, source)
    if packing in ("brotli", "lzma"):
        if len(streams) != 1:
            raise ArtifactError(f"{source}: a {packing} container holds one stream, found {len(streams)}")
        return deserialize(decode_stream(streams[0], source, "stream 0 (payload)", max_bytes), source)
    return pergroup.unpack(streams, source, max_bytes, decode_stream, template)
