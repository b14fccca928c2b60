"""Per-group packing: code matrices grouped by role, compressed per group (docs/top-stack.md §5.7).

Origin: TOP README ("this work"; its code credits PR #1586 via PRs #1667/#1729). Every 2-D int8 code matrix
``<name>.q`` is grouped by its role (the name without ``blocks.<i>.``: tok_emb, attn.c_q, mlp.fc, ...), in layer
order. Rows of the roles in ``REORDER`` are reordered by a greedy L1 nearest-neighbour chain (start at row 0,
append the closest unused row) and the permutation is stored as uint16; each matrix is written column-major; each
group is one stream, compressed by lrzip (ZPAQ, level 9) when it is on PATH, else by the smallest of lzma, brotli
and zstd-22. Everything else (scales, LQER factors, gates, passthrough tensors, metadata, the group manifest) is
one torch.save stream, the permutations another, both brotli-11 (lzma without brotli).

Streams: 0 = remainder, 1 = permutations, 2.. = one per group in manifest order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from golf_lit.artifact.compression import encode, have_brotli, have_lrzip
from golf_lit.artifact.container import deserialize, serialize
from golf_lit.artifact.errors import ArtifactError

REORDER = ("tok_emb.weight", "attn.c_q.weight", "mlp.fc.weight")
"""Roles whose rows are reordered (TOP: tok_emb, c_q, mlp.fc)."""
_BLOCK = re.compile(r"^blocks\.\d+\.")


def role(name: str) -> str:
    """``blocks.3.mlp.fc.weight`` -> ``mlp.fc.weight``."""
    return _BLOCK.sub("", name)


def nn_chain(q: Tensor) -> Tensor:
    """Greedy L1 nearest-neighbour order of the rows of ``q``: row 0 first, then the closest unused row each time
    (ties: lowest index). Returns the permutation (int64)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"  # O(rows^2 * cols): 8192 x 512 takes ~1 min on a CPU
    x = q.to(device=device, dtype=torch.int32)
    rows = x.shape[0]
    remaining = torch.arange(1, rows, device=device)
    order = [0]
    last = x[0]
    while remaining.numel():
        d = (x[remaining] - last).abs().sum(dim=1)
        j = int(torch.argmin(d))
        nxt = int(remaining[j])
        order.append(nxt)
        last = x[nxt]
        remaining = torch.cat([remaining[:j], remaining[j + 1 :]])
    return torch.tensor(order, dtype=torch.int64)


def _groups(w: Mapping[str, Tensor], m: Mapping[str, Any]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, meta in m.items():
        key = f"{name}.q"
        if isinstance(meta, Mapping) and key in w and w[key].ndim == 2 and w[key].dtype == torch.int8:
            groups.setdefault(role(name), []).append(key)
    return groups


def _best(raw: bytes, backend: str) -> tuple[str, bytes]:
    if backend == "auto":
        if have_lrzip():
            return "lrzip", encode("lrzip", raw)
        codecs = ["lzma", "zstd"] + (["brotli"] if have_brotli() else [])
        return min(((c, encode(c, raw)) for c in codecs), key=lambda cb: len(cb[1]))
    return backend, encode(backend, raw)


def pack(w: Mapping[str, Tensor], m: Mapping[str, Any], backend: str, remainder: str) -> list[tuple[str, int, bytes]]:
    """Streams ``(codec, flags, bytes)`` of the pergroup packing."""
    groups = _groups(w, m)
    grouped = {k for keys in groups.values() for k in keys}
    manifest: list[list[Any]] = []
    perms: list[np.ndarray] = []
    code_streams = []
    for group, keys in groups.items():
        entries, chunks = [], []
        for key in keys:
            q = w[key]
            permuted = group in REORDER and 1 < q.shape[0] <= 65_536
            if permuted:
                perm = nn_chain(q)
                q = q[perm]
                perms.append(perm.numpy().astype("<u2"))
            entries.append([key, int(q.shape[0]), int(q.shape[1]), permuted])
            chunks.append(q.T.contiguous().numpy().tobytes())
        manifest.append([group, entries])
        code_streams.append(_best(b"".join(chunks), backend))
    rest = {k: v for k, v in w.items() if k not in grouped}
    head = serialize_with_manifest(rest, m, manifest)
    perm_bytes = b"".join(p.tobytes() for p in perms)
    streams = [(remainder, 0, encode(remainder, head)), (remainder, 0, encode(remainder, perm_bytes))]
    return streams + [(codec, 0, data) for codec, data in code_streams]


def serialize_with_manifest(w: Mapping[str, Tensor], m: Mapping[str, Any], manifest: list[list[Any]]) -> bytes:
    """The remainder payload: the seed container plus the group manifest under ``"m"["__groups__"]``."""
    return serialize(w, {**m, "__groups__": manifest})


def _manifest(
    manifest: Any, source: str, n_streams: int, template: Mapping[str, Tensor] | None
) -> list[tuple[str, list[tuple[str, int, int, bool]]]]:
    """Check the group manifest's structure (and, with a template, every entry's name and shape)."""
    where = f"{source}: stream 0 (remainder): group manifest"
    if not isinstance(manifest, list) or len(manifest) != n_streams:
        raise ArtifactError(f"{where} does not match the {n_streams} code streams")
    out, seen = [], set()
    for i, group in enumerate(manifest):
        if not (isinstance(group, (list, tuple)) and len(group) == 2 and isinstance(group[0], str)
                and isinstance(group[1], (list, tuple))):  # fmt: skip
            raise ArtifactError(f"{where} entry {i}: expected [group name, entries]")
        entries = []
        for entry in group[1]:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 4 and isinstance(entry[0], str)
                    and all(type(v) is int and v >= 1 for v in entry[1:3]) and type(entry[3]) is bool):  # fmt: skip
                raise ArtifactError(f"{where} of group {group[0]!r}: expected [name, rows >= 1, cols >= 1, permuted], "
                                    f"found {str(entry)[:80]}")  # fmt: skip
            key, rows, cols, permuted = entry
            if key in seen or not key.endswith(".q"):
                raise ArtifactError(f"{where}: entry {key!r} is repeated or not a '<tensor>.q' code matrix")
            seen.add(key)
            if template is not None:
                like = template.get(key[:-2])
                if like is None or tuple(like.shape) != (rows, cols):
                    expected = "no such tensor" if like is None else f"the model's {tuple(like.shape)}"
                    raise ArtifactError(f"{where}: {key!r} is {rows}x{cols}, {expected}")
            if permuted and rows > 65_536:
                raise ArtifactError(f"{where}: {key!r} has {rows} rows, too many for a uint16 permutation")
            entries.append((key, rows, cols, permuted))
        out.append((group[0], entries))
    return out


def unpack(
    streams: list[tuple[str, int, bytes]],
    source: str,
    max_bytes: int,
    decode_stream: Callable[[tuple[str, int, bytes], str, str, int], bytes],
    template: Mapping[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Streams -> ``(w, m)``; every inconsistency names the file and the stream.

    ``max_bytes`` bounds the whole file: the remainder is decoded within it, then the manifest's sizes (checked
    against ``template``'s shapes when given) must fit what is left before any code stream is decoded, and each
    code stream may decode to exactly its manifest size and no more.
    """
    if len(streams) < 2:
        raise ArtifactError(f"{source}: a pergroup container holds at least 2 streams, found {len(streams)}")
    head = decode_stream(streams[0], source, "stream 0 (remainder)", max_bytes)
    w, m = deserialize(head, source)
    manifest = _manifest(m.pop("__groups__", None), source, len(streams) - 2, template)
    sizes = [sum(rows * cols for _, rows, cols, _ in entries) for _, entries in manifest]
    perm_size = 2 * sum(rows for _, entries in manifest for _, rows, _, permuted in entries if permuted)
    left = max_bytes - len(head)
    if sum(sizes) + perm_size > left:
        raise ArtifactError(
            f"{source}: the group manifest declares {sum(sizes) + perm_size:,} bytes of codes, more than the "
            f"{left:,} left of the cap of {max_bytes:,} bytes (max_decompressed_bytes; a corrupt or malicious file?)"
        )
    clash = sorted(k for _, entries in manifest for k, *_ in entries if k in w)
    if clash:
        raise ArtifactError(f"{source}: stream 0 (remainder) also holds {clash[0]!r}, which the group manifest lists")
    perm_raw = decode_stream(streams[1], source, "stream 1 (permutations)", perm_size)
    if len(perm_raw) != perm_size:
        raise ArtifactError(f"{source}: stream 1 (permutations): {len(perm_raw)} bytes, the manifest says {perm_size}")
    perms = np.frombuffer(perm_raw, dtype="<u2")
    p = 0
    for i, ((group, entries), expected) in enumerate(zip(manifest, sizes, strict=True)):
        label = f"stream {i + 2} ({group} codes)"
        raw = decode_stream(streams[i + 2], source, label, expected)
        if len(raw) != expected:
            raise ArtifactError(f"{source}: {label}: {len(raw)} bytes, the manifest says {expected}")
        off = 0
        for key, rows, cols, permuted in entries:
            q = torch.from_numpy(np.frombuffer(raw, dtype=np.int8, count=rows * cols, offset=off).copy())
            q = q.reshape(cols, rows).T.contiguous()
            off += rows * cols
            if permuted:
                perm = torch.from_numpy(perms[p : p + rows].astype(np.int64))
                p += rows
                if not torch.equal(torch.sort(perm).values, torch.arange(rows)):
                    raise ArtifactError(f"{source}: stream 1 (permutations): the order of {key!r} is not a permutation")
                out = torch.empty_like(q)
                out[perm] = q
                q = out
            w[key] = q
    return w, m
