"""The model's vocabulary size must equal the tokenizer's piece count; check it before training starts."""

from __future__ import annotations

import os


def require_vocab_match(vocab_size: int, pieces: int, tokenizer_path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming both sides unless the model's ``vocab_size`` equals the tokenizer's ``pieces``."""
    if pieces != vocab_size:
        raise ValueError(
            f"model.vocab_size={vocab_size} but tokenizer {tokenizer_path} has {pieces} pieces; "
            f"set model.vocab_size={pieces} or use a tokenizer with {vocab_size} pieces"
        )

