"""The model's vocabulary size must equal the tokenizer's piece count; check it before training starts."""

from __future__ import annotations

import os

from golf_lit.data.tokenizer import load_tokenizer


def require_vocab_match(vocab_size: int, pieces: int, tokenizer_path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming both sides unless the model's ``vocab_size`` equals the tokenizer's ``pieces``."""
    if pieces != vocab_size:
        raise ValueError(
            f"model.vocab_size={vocab_size} but tokenizer {tokenizer_path} has {pieces} pieces; "
            f"set model.vocab_size={pieces} or use a tokenizer with {vocab_size} pieces"
        )


def check_tokenizer_matches(vocab_size: int, tokenizer_path: str | os.PathLike) -> int:
    """Fail early, naming both sides, when ``model.vocab_size`` and the tokenizer disagree.

    Args:
        vocab_size: The model's ``vocab_size``.
        tokenizer_path: SentencePiece ``.model`` file.

    Returns:
        The tokenizer's piece count (equal to ``vocab_size``).

    Raises:
        ValueError: ``model.vocab_size=V but tokenizer PATH has N pieces`` when they differ.
        FileNotFoundError: if the tokenizer file is missing.
    """
    pieces = int(load_tokenizer(tokenizer_path).vocab_size())
    require_vocab_match(vocab_size, pieces, tokenizer_path)
    return pieces
