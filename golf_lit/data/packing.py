"""Document packing: segment boundaries (``cu_seqlens``) of one packed training row (docs/top-stack.md §2.4-2.5).

Origin: record 0410-VarLen (parameter-golf PR #1530). A packed row is a contiguous slice of the token stream;
attention is restricted to segments, which start

- at every BOS token in the row (every document starts with BOS, docs/record-stack.md §2.1),
- at position 0 (the row may start in the middle of a document),
- every ``max_segment_len`` tokens inside a longer segment (counted from the segment's start),

and ``cu_seqlens`` lists the segment starts followed by the row length, as int32, the layout of
FlashAttention's variable-length kernels. The list is then padded with the row length to a multiple of
``CU_SEQLENS_MULTIPLE`` entries: the number of segments changes from row to row, and a compiled
``dynamic=False`` graph specializes on every tensor shape, so without padding almost every step would see a new
shape and recompile. Padding leaves a handful of shapes (64, 128, 192, ... entries). The padded entries describe
empty segments (start == end == row length): they hold no token, so they change no attention output.
"""

from __future__ import annotations

import numpy as np
import torch

CU_SEQLENS_MULTIPLE = 64
"""``cu_seqlens`` is padded to a multiple of this many entries (the record's value)."""


def document_cu_seqlens(
    tokens: torch.Tensor | np.ndarray, bos_id: int, max_segment_len: int, pad_multiple: int = CU_SEQLENS_MULTIPLE
) -> torch.Tensor:
    """Segment starts of one packed row, ending with its length and padded with it.

    Args:
        tokens: 1-D token ids of the row (the model's inputs).
        bos_id: Id of the beginning-of-document token.
        max_segment_len: Longest segment; longer documents are cut every ``max_segment_len`` tokens.
        pad_multiple: Pad to a multiple of this many entries with the row length (1 = no padding).

    Returns:
        A 1-D int32 tensor ``[0, s_1, ..., s_k, n, n, ...]``, strictly increasing up to the first ``n``.

    Example:
        >>> document_cu_seqlens(torch.tensor([5, 1, 7, 7, 7, 1]), bos_id=1, max_segment_len=2, pad_multiple=1)
        tensor([0, 1, 3, 5, 6], dtype=torch.int32)
    """
    ids = tokens.cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"document_cu_seqlens: needs a non-empty 1-D row of tokens, got shape {ids.shape}")
    if max_segment_len <= 0 or pad_multiple <= 0:
        raise ValueError(
            f"document_cu_seqlens: max_segment_len and pad_multiple must be positive, got {max_segment_len}, "
            f"{pad_multiple}"
        )
    n = ids.size
    bos = np.flatnonzero(ids == bos_id)
    starts = bos if bos.size and bos[0] == 0 else np.concatenate([[0], bos])  # row starts mid-document
    lengths = np.diff(np.append(starts, n))
    pieces = -(-lengths // max_segment_len)  # ceil: segments per document piece
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)  # index of each piece's first segment
    cuts = np.repeat(starts, pieces) + max_segment_len * (np.arange(pieces.sum()) - first)
    padded = -(-(cuts.size + 1) // pad_multiple) * pad_multiple
    out = np.full(padded, n, dtype=np.int64)
    out[: cuts.size] = cuts
    if n > np.iinfo(np.int32).max:
        raise ValueError(f"document_cu_seqlens: a row of {n} tokens does not fit int32 offsets")
    return torch.from_numpy(out.astype(np.int32))


def pad_cu_seqlens(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack the ``cu_seqlens`` of several rows, padding each with its own last entry to the longest.

    All rows keep a length that is a multiple of ``CU_SEQLENS_MULTIPLE`` when their inputs do.
    """
    width = max(r.numel() for r in rows)
    return torch.stack([torch.cat([r, r[-1:].expand(width - r.numel())]) for r in rows])
