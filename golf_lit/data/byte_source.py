"""Where the byte count of a scored token comes from: the tokenizer's LUTs, or the CaseOps byte sidecar.

bpb divides by the bytes of the *original* text (docs/top-stack.md §2.3). For a plain tokenizer they follow from
the token ids (the LUTs of docs/record-stack.md §3, :class:`~golf_lit.data.tokenizer.ByteLUTs`). For CaseOps text the
marker
pieces stand for no bytes and an uppercase letter is one byte, so the ids cannot say it: the tokenize step writes
``fineweb_val_bytes_NNNNNN.bin`` beside every validation shard (same format, same length) holding each token's
original UTF-8 bytes, and the bytes of target position t (predicting token t + 1) are ``sidecar[t + 1]``.

Both sources answer ``bytes_at(positions, prev_ids, target_ids)``; every scorer (training-time validation,
export roundtrip, eval strategies) asks that and never the LUTs directly. :func:`load_byte_source` picks the
source: the sidecar when the tokenizer is a CaseOps one (which then *requires* it), else the LUTs; a sidecar
beside the shards of a plain tokenizer is refused, never used.

A sidecar is checked against its tokens before anything is scored (:func:`verify_sidecar`). CaseOps is exactly
invertible, so the original bytes of every document follow from its tokens: the UTF-8 length of the decoded
pieces minus 3 bytes for every marker that is not an escaped literal. Exact per token: BOS counts 0 (except a
document with no other token, which carries its text's bytes) and so does every marker that is not an escaped
literal. The sums are compared with the recomputed bytes within a tolerance, because the tokenizer's ``nmt_nfkc``
normalization (whitespace runs, compatibility characters such as full-width letters) is not invertible and the
sidecar counts the text before it: on 60 tests/data documents 49 agree exactly and the largest difference is
1.3 % of a document; over the challenge's whole validation set the two accountings differ by 0.0025 %
(docs/top-stack.md §2.3). The whole stream's total, which is what bpb divides by, must agree to 0.2 %
(:data:`TOTAL_TOLERANCE`); each document to 50 % (:data:`DOC_TOLERANCE`, loose so that a document of, say,
full-width text is not refused; it still catches a document given twice its bytes or another document's).
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

DOC_TOLERANCE = (16, 0.5)
"""A document's sidecar sum may differ from its recomputed bytes by at most ``16 + 50 %`` of them."""
TOTAL_TOLERANCE = (64, 0.002)
"""The whole stream's sidecar total may differ from the recomputed total by at most ``64 + 0.2 %``."""


class SidecarMismatchError(ValueError):
    """A byte sidecar does not belong to its tokens; the message names the file and the document."""


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


def surface_bytes(sp) -> tuple[np.ndarray, np.ndarray]:
    """Per id: the UTF-8 length of the piece's surface text, and whether it is one of the four CaseOps markers.

    Byte-fallback pieces are 1 byte, control and unknown ids 0, "▁" a space (the CaseOps tokenizers have no dummy
    prefix), markers their 3 UTF-8 bytes (subtracted again by :func:`recomputed_bytes` unless escaped).
    """
    from golf_lit.data.caseops import MARKERS

    n = int(sp.vocab_size())
    size = np.zeros(n, dtype=np.int64)
    marker = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        if sp.is_byte(i):
            size[i] = 1
            continue
        piece = sp.id_to_piece(i)
        size[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
        marker[i] = piece in MARKERS
    return size, marker


def _escaped(tokens: np.ndarray, is_marker: np.ndarray, esc_id: int) -> np.ndarray:
    """True at every marker token that is an escaped literal (the marker right after an escaping ESC)."""
    out = np.zeros(tokens.size, dtype=np.bool_)
    for i in np.flatnonzero(tokens[:-1] == esc_id):  # ESC is rare (a literal marker character in the text)
        i = int(i)
        if not out[i] and is_marker[i + 1]:  # an ESC that is itself a literal escapes nothing
            out[i + 1] = True
    return out


def verify_sidecar(tokens: np.ndarray, counts: np.ndarray, sp, bos_id: int, files: tuple[str, ...] = (),
                   shard_sizes: tuple[int, ...] = ()) -> None:
    """Check a CaseOps byte sidecar against the bytes recomputed from its tokens (see the module docstring).

    Args:
        tokens: The validation token stream (as many as ``counts``).
        counts: The sidecar's per-token original byte counts.
        sp: The CaseOps SentencePiece processor the tokens come from.
        bos_id: The document-start id.
        files: The sidecar shards, in stream order (named in the error).
        shard_sizes: Their token counts, to name the shard a document starts in (else all files are named).

    Raises:
        SidecarMismatchError: naming the sidecar file and the document (0-based index in the validation stream)
            where the counts cannot be the original bytes of the tokens.
    """
    from golf_lit.data.caseops import ESC

    tokens = np.asarray(tokens, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if tokens.size != counts.size:
        raise SidecarMismatchError(f"byte sidecar {', '.join(files)}: {counts.size} counts for {tokens.size} tokens")
    if tokens.size == 0:
        return
    size, marker = surface_bytes(sp)
    if int(tokens.max()) >= size.size:
        raise SidecarMismatchError(f"validation token id {int(tokens.max())} is outside the CaseOps tokenizer's "
                                   f"{size.size} pieces: byte sidecar {', '.join(files)} cannot be checked")
    is_marker = marker[tokens]
    control = is_marker & ~_escaped(tokens, is_marker, int(sp.piece_to_id(ESC)))
    per_token = size[tokens] - 3 * control
    starts = np.flatnonzero(tokens == bos_id)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    ends = np.append(starts[1:], tokens.size)
    doc = np.repeat(np.arange(starts.size), ends - starts)  # document index of every token (starts[0] == 0)
    lone_bos = (ends - starts) == 1  # an empty document: its BOS carries the text's bytes

    def where(i: int) -> str:
        """The sidecar shard holding the start of the document of stream position ``i``."""
        pos = int(starts[doc[i]])
        if len(shard_sizes) == len(files):
            for f, n in zip(files, shard_sizes):
                if pos < n:
                    return f
                pos -= n
        return ", ".join(files) or "(in memory)"

    bad = np.flatnonzero(((tokens == bos_id) & ~lone_bos[doc] | control) & (counts != 0))
    if bad.size:
        i = int(bad[0])
        what = "BOS" if tokens[i] == bos_id else "a CaseOps marker"
        raise SidecarMismatchError(
            f"byte sidecar {where(i)}: document {int(doc[i])} gives {what} (stream position {i}) {int(counts[i])} "
            "bytes, expected 0: the sidecar does not belong to these validation shards")
    side = np.bincount(doc, weights=counts, minlength=starts.size).astype(np.int64)
    recomputed = np.bincount(doc, weights=per_token, minlength=starts.size).astype(np.int64)
    recomputed[lone_bos] = side[lone_bos]  # nothing to recompute from: the text yielded no piece
    diff = np.abs(side - recomputed)
    slack, rel = DOC_TOLERANCE
    over = np.flatnonzero(diff > slack + rel * recomputed)
    total_slack, total_rel = TOTAL_TOLERANCE
    total_off = abs(int(side.sum()) - int(recomputed.sum())) > total_slack + total_rel * int(recomputed.sum())
    if over.size or total_off:
        d = int(over[0]) if over.size else int(np.argmax(diff))
        raise SidecarMismatchError(
            f"byte sidecar {where(int(starts[d]))}: document {d} claims {int(side[d])} original bytes but its tokens "
            f"decode to {int(recomputed[d])} (stream total {int(side.sum())} vs {int(recomputed.sum())}): the sidecar "
            "does not belong to these validation shards")


def load_sidecar(val_files: str, num_tokens: int | None = None, sp=None) -> SidecarBytes:
    """Read the byte sidecars of the validation shards matching ``val_files``, checked shard by shard.

    Args:
        val_files: Glob of validation token shards (sidecars matching it are skipped, not read as tokens).
        num_tokens: Keep the first this many counts (the truncated validation stream); None = all.
        sp: The CaseOps tokenizer: when given, the counts are checked against the tokens (:func:`verify_sidecar`).

    Raises:
        FileNotFoundError: naming the first missing sidecar.
        ValueError: if a sidecar's token count differs from its token shard's.
        SidecarMismatchError: if the counts cannot be the original bytes of the tokens.
    """
    counts = []
    files = []
    tokens = []
    for shard in (f for f in find_shards(val_files) if not is_sidecar(f)):
        side = sidecar_path(shard)
        if not side.is_file():
            raise FileNotFoundError(
                f"byte sidecar {side} is missing: CaseOps validation shards need their original-byte counts "
                "(write them with golf-lit data tokenize --caseops)"
            )
        tok, data = load_shard(shard), np.asarray(load_shard(side))
        n_tok = int(tok.size)
        if data.size != n_tok:
            raise ValueError(f"byte sidecar {side} holds {data.size} counts but its token shard {shard} has {n_tok}")
        counts.append(data.astype(np.int32))
        files.append(str(side))
        if sp is not None:
            tokens.append(np.asarray(tok))
    arr = np.concatenate(counts) if counts else np.zeros(0, np.int32)
    if sp is not None and tokens:
        verify_sidecar(np.concatenate(tokens), arr, sp, int(sp.bos_id()), tuple(files), tuple(t.size for t in tokens))
    if num_tokens is not None:
        arr = arr[:num_tokens]
    return SidecarBytes(torch.from_numpy(arr), tuple(files))


def load_byte_source(val_files: str, sp, vocab_size: int, num_tokens: int | None = None,
                     tokenizer_path: str | os.PathLike | None = None) -> ByteSource:
    """The byte source for scoring the validation shards ``val_files`` with tokenizer ``sp``.

    The sidecar when the tokenizer is a CaseOps one (refused with the missing file's name if absent; checked
    against the tokens, :func:`verify_sidecar`); otherwise the tokenizer's LUTs (docs/record-stack.md §3), and a
    sidecar beside the validation shards is refused: it would replace the tokenizer's byte counts.

    Args:
        val_files: Glob of validation token shards (already resolved).
        sp: The SentencePiece processor.
        vocab_size: Model vocabulary (LUT size).
        num_tokens: Length of the (truncated) validation stream the sidecar is cut to; None = all.
        tokenizer_path: The tokenizer's file, named in errors.

    Raises:
        ValueError: a sidecar beside the shards of a plain tokenizer; see also :func:`load_sidecar`.
    """
    from golf_lit.data.caseops import is_caseops_tokenizer

    if is_caseops_tokenizer(sp):
        return load_sidecar(val_files, num_tokens, sp=sp)
    shards = [f for f in find_shards(val_files) if not is_sidecar(f)]
    stray = [sidecar_path(f) for f in shards if "_val_" in f.name and sidecar_path(f).is_file()]
    if stray:
        tok = f"tokenizer {tokenizer_path}" if tokenizer_path is not None else "the tokenizer"
        raise ValueError(
            f"byte sidecar {stray[0]} lies beside the validation shards but {tok} is not a CaseOps tokenizer (it "
            "lacks the four marker pieces): its byte counts would replace the tokenizer's; remove the sidecar or "
            "use the CaseOps tokenizer it was written for")
    return build_byte_luts(sp, vocab_size)
