"""The SentencePiece tokenizer and the byte look-up tables behind exact bits-per-byte (docs/record-stack.md §3)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch


def load_tokenizer(path: str | os.PathLike) -> spm.SentencePieceProcessor:
    """Load a SentencePiece ``.model`` file, with an error naming the path if it is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer model not found at {str(p)!r} (expected a SentencePiece .model file)")
    try:
        return spm.SentencePieceProcessor(model_file=str(p))
    except Exception as exc:  # sentencepiece raises bare RuntimeError/OSError
        raise ValueError(f"{p}: not a readable SentencePiece model ({exc})") from exc


@dataclass
class ByteLUTs:
    """Per-token-id tables for byte accounting (docs/record-stack.md §3).

    Attributes:
        base_bytes: int16, UTF-8 bytes of the piece without one leading "▁" (1 for byte pieces, 0 for boundary).
        has_leading_space: bool, the piece starts with "▁".
        is_boundary: bool, control/unknown/unused ids and any id past the tokenizer's vocabulary.
    """

    base_bytes: torch.Tensor
    has_leading_space: torch.Tensor
    is_boundary: torch.Tensor

    def to(self, device: torch.device | str) -> ByteLUTs:
        """Copy the tables to ``device``."""
        return ByteLUTs(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))

    def bytes_at(
        self, positions: torch.Tensor | None, prev_ids: torch.Tensor, target_ids: torch.Tensor
    ) -> torch.Tensor:
        """The byte-source interface (``golf_lit.data.byte_source``): the LUTs ignore ``positions``."""
        return self.token_bytes(prev_ids, target_ids)

    def token_bytes(self, prev_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """Bytes of each target: ``base[y] + (space[y] and not boundary[prev])``, as int64 (same shape as inputs)."""
        nbytes = self.base_bytes[target_ids].to(torch.int64)
        return nbytes + (self.has_leading_space[target_ids] & ~self.is_boundary[prev_ids]).to(torch.int64)


def build_byte_luts(sp: spm.SentencePieceProcessor, vocab_size: int) -> ByteLUTs:
    """Build the byte tables from a SentencePiece model, sized ``max(sp vocab, vocab_size)``
    (docs/record-stack.md §3)."""
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteLUTs(torch.from_numpy(base), torch.from_numpy(space), torch.from_numpy(boundary))
