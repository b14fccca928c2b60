"""Where the byte count of a scored token comes from: the tokenizer's LUTs, or the CaseOps byte sidecar.

bpb divides by the bytes of the *original* text (docs/top-stack.md §2.3). For a plain tokenizer they follow from
the token ids (the LUTs of docs/record-stack.md §3, :class:`~golf_lit.data.tokenizer.ByteLUTs`). For CaseOps text the
marker
pieces stand for no bytes and an uppercase letter is one byte, so the ids cannot say it: the tokenize step writes
``fineweb_val_bytes_NNNNNN.bin`` beside every validation shard (same format, same length) holding each token's
original UTF-8 bytes, and the bytes of target position t (predicting token t + 1) are ``sidecar[t + 1]``.

Both sources answer ``bytes_at(positions, prev_ids, target_ids)``; every scorer (training-time validation,
export roundtrip, eval strategies) asks that and never the LUTs directly. :func:`load_byte_source` picks the
source: the sidecar whenever one lies beside the validation shards or the tokenizer is a CaseOps one (which
then *requires* it), else the LUTs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from golf_lit.data.shards import SIDECAR_PREFIX, find_shards, load_shard
from golf_lit.data.tokenizer import ByteLUTs, build_byte_luts


def is_sidecar(path: str | os.PathLike) -> bool:
    """True for a byte sidecar shard (never a token shard)."""
    return Path(path).name.startswith(SIDECAR_PREFIX)


def sidecar_path(token_shard: str | os.PathLike) -> Path:
    """The sidecar beside a validation token shard: ``fineweb_val_X.bin`` -> ``fineweb_val_bytes_X.bin``."""
    p = Path(token_shard)
    if "_val_" not in p.name:
        raise ValueError(f"{p}: cannot name its byte sidecar (expected a fineweb_val_NNNNNN.bin shard name)")
    return p.with_name(p.name.replace("_val_", "_val_bytes_", 1))


@dataclass
class SidecarBytes:
    """Per-token original UTF-8 byte counts of the whole validation stream (docs/top-stack.md §2.3).

    Attributes:
        counts: int32 (num_stream_tokens,); ``counts[i]`` = bytes accounted for by stream token ``i``.
        files: The sidecar shards they were read from (for messages).
    """

    counts: Tensor
    files: tuple[str, ...] = ()

    def to(self, device: torch.device | str) -> SidecarBytes:
        """Copy the counts to ``device``."""
        return SidecarBytes(self.counts.to(device), self.files)

    def bytes_at(self, positions: Tensor, prev_ids: Tensor | None = None, target_ids: Tensor | None = None) -> Tensor:
        """Bytes of the targets at target ``positions`` (any shape): ``counts[positions + 1]`` as int64."""
        return self.counts[positions + 1].to(torch.int64)

    def token_bytes(self, prev_ids: Tensor, target_ids: Tensor) -> Tensor:
        """Refused: CaseOps bytes depend on the position in the stream, not on the ids."""
        raise TypeError("CaseOps byte sidecar: bytes come from stream positions; call bytes_at(positions, ...)")


ByteSource = ByteLUTs | SidecarBytes
"""Anything with ``to(device)`` and ``bytes_at(positions, prev_ids, target_ids)``."""


def target_bytes(source: ByteSource, tokens: Tensor) -> Tensor:
    """Bytes of every target of a stream (``tokens[1:]``), int64 (N,): the eval's per-position byte vector."""
    positions = torch.arange(tokens.numel() - 1, device=tokens.device)
    return source.to(tokens.device).bytes_at(positions, tokens[:-1], tokens[1:])


def load_sidecar(val_files: str, num_tokens: int | None = None) -> SidecarBytes:
    """Read the byte sidecars of the validation shards matching ``val_files``, checked shard by shard.

    Args:
        val_files: Glob of validation token shards (sidecars matching it are skipped, not read as tokens).
        num_tokens: Keep the first this many counts (the truncated validation stream); None = all.

    Raises:
        FileNotFoundError: naming the first missing sidecar.
        ValueError: if a sidecar's token count differs from its token shard's.
    """
    counts = []
    files = []
    for shard in (f for f in find_shards(val_files) if not is_sidecar(f)):
        side = sidecar_path(shard)
        if not side.is_file():
            raise FileNotFoundError(
                f"byte sidecar {side} is missing: CaseOps validation shards need their original-byte counts "
                "(write them with golf-lit data tokenize --caseops)"
            )
        n_tok, data = int(load_shard(shard).size), np.asarray(load_shard(side))
        if data.size != n_tok:
            raise ValueError(f"byte sidecar {side} holds {data.size} counts but its token shard {shard} has {n_tok}")
        counts.append(data.astype(np.int32))
        files.append(str(side))
    arr = np.concatenate(counts) if counts else np.zeros(0, np.int32)
    if num_tokens is not None:
        arr = arr[:num_tokens]
    return SidecarBytes(torch.from_numpy(arr), tuple(files))


def load_byte_source(val_files: str, sp, vocab_size: int, num_tokens: int | None = None) -> ByteSource:
    """The byte source for scoring the validation shards ``val_files`` with tokenizer ``sp``.

    The sidecar when the tokenizer is a CaseOps one (refused with the missing file's name if absent) or when a
    sidecar lies beside the first validation shard; otherwise the tokenizer's LUTs (docs/record-stack.md §3).

    Args:
        val_files: Glob of validation token shards (already resolved).
        sp: The SentencePiece processor.
        vocab_size: Model vocabulary (LUT size).
        num_tokens: Length of the (truncated) validation stream the sidecar is cut to; None = all.
    """
    from golf_lit.data.caseops import is_caseops_tokenizer

    shards = [f for f in find_shards(val_files) if not is_sidecar(f)]
    has_sidecar = bool(shards) and "_val_" in shards[0].name and sidecar_path(shards[0]).is_file()
    if is_caseops_tokenizer(sp) or has_sidecar:
        return load_sidecar(val_files, num_tokens)
    return build_byte_luts(sp, vocab_size)
