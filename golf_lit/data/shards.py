"""Challenge shard files: header check, memory-mapped reading, atomic writing, and the token stream.

Format (docs/record-stack.md §2.1): 256 little-endian int32 header words (magic 20240520, version 1, token count,
zeros),
then ``count`` little-endian uint16 token ids; the file is exactly ``1024 + 2 * count`` bytes.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import torch

from golf_lit.io import atomic_write

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
MAX_TOKEN_ID = 65535  # uint16 payload
SIDECAR_PREFIX = "fineweb_val_bytes_"
"""File name prefix of the CaseOps byte sidecar shards (docs/top-stack.md §2.3); never token shards."""


class ShardError(ValueError):
    """A shard file failed one of the format checks; the message names the file and the check."""


def read_shard_header(path: str | os.PathLike) -> int:
    """Check a shard's header and size and return its token count.

    Args:
        path: Shard file.

    Returns:
        The number of tokens in the shard.

    Raises:
        ShardError: naming the file and which check failed (magic, version or file size).
        FileNotFoundError: if the file does not exist.
    """
    p = Path(path)
    size = p.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{p}: file size check failed: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    header = np.fromfile(p, dtype="<i4", count=HEADER_WORDS)
    if int(header[0]) != SHARD_MAGIC:
        raise ShardError(f"{p}: magic check failed: header[0] = {int(header[0])}, expected {SHARD_MAGIC}")
    if int(header[1]) != SHARD_VERSION:
        raise ShardError(f"{p}: version check failed: header[1] = {int(header[1])}, expected {SHARD_VERSION}")
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if count < 0 or size != expected:
        raise ShardError(
            f"{p}: file size check failed: {size} bytes on disk, header says {count} tokens "
            f"so expected 1024 + 2*{count} = {expected} bytes"
        )
    return count


def load_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard's tokens (read-only uint16 array) after checking its header."""
    count = read_shard_header(path)
    if count == 0:
        return np.zeros((0,), dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def write_shard(path: str | os.PathLike, tokens: np.ndarray | torch.Tensor | list[int]) -> Path:
    """Write ``tokens`` as a challenge shard, atomically (temp file + rename).

    Raises:
        ValueError: if any id is negative or does not fit in uint16 (>= 65,536).
    """
    arr = np.asarray(tokens.cpu().numpy() if isinstance(tokens, torch.Tensor) else tokens)
    if arr.ndim != 1:
        raise ValueError(f"{path}: tokens must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > MAX_TOKEN_ID):
        bad = int(arr.max()) if int(arr.max()) > MAX_TOKEN_ID else int(arr.min())
        raise ValueError(f"{path}: token id {bad} does not fit the uint16 shard format (ids must be 0..65535)")
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    payload = arr.astype("<u2", copy=False)

    def _write(f) -> None:
        f.write(header.tobytes())
        f.write(payload.tobytes())

    return atomic_write(path, _write)


def find_shards(pattern: str) -> list[Path]:
    """Sorted list of files matching ``pattern``; raises FileNotFoundError naming the pattern if none."""
    files = [Path(p) for p in sorted(glob.glob(str(pattern)))]
    if not files:
        raise FileNotFoundError(f"no shard files match the pattern {pattern!r}")
    return files


def load_validation_tokens(pattern: str, seq_len: int, max_tokens: int | None = None) -> torch.Tensor:
    """All validation shards concatenated, truncated to ``((N - 1) // seq_len) * seq_len + 1`` tokens
    (docs/record-stack.md §2.1).

    Args:
        pattern: Glob of validation shards.
        seq_len: Sequence length the stream is cut into.
        max_tokens: Keep only the first ``max(max_tokens // seq_len, 1)`` sequences (quick runs); None = all.

    Returns:
        A 1-D int64 tensor.
    """
    files = [f for f in find_shards(pattern) if not f.name.startswith(SIDECAR_PREFIX)]  # not the byte sidecars
    if not files:
        raise FileNotFoundError(f"no token shards match the pattern {pattern!r} (only byte sidecars)")
    tokens = np.concatenate([np.asarray(load_shard(f)) for f in files])
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ValueError(
            f"validation tokens matching {pattern!r} ({tokens.size} tokens) are too short for seq_len={seq_len}"
        )
    if max_tokens is not None:
        usable = min(usable, max(max_tokens // seq_len, 1) * seq_len)
    return torch.from_numpy(tokens[: usable + 1].astype(np.int64))


def check_token_ids(tokens: np.ndarray | torch.Tensor, vocab_size: int, source: str) -> None:
    """Raise ValueError naming ``source`` when a token id is outside ``0 .. vocab_size - 1``."""
    if len(tokens) == 0:
        return
    top = int(tokens.max())
    if top >= vocab_size:
        raise ValueError(
            f"{source}: token id {top} is outside the vocabulary of {vocab_size} ids (0..{vocab_size - 1}); "
            "were these shards written with another tokenizer?"
        )


class TokenStream:
    """The training token stream: sorted shards concatenated and wrapped forever, addressed by offset.

    The seed reads this stream sequentially (docs/record-stack.md §2.3); because the stream is a fixed function of
    the offset, golf-lit addresses it directly, so the data position is just a micro-batch index
    (cheap to checkpoint, trivially restored after compile priming).

    Args:
        pattern: Glob of shard files, e.g. ``./data/datasets/fineweb10B_sp1024/fineweb_train_*.bin``.
        vocab_size: When given, each shard's token ids are checked against it at the shard's first read (one
            pass over the shard), so a shard from another tokenizer fails at its first batch, naming the file.
    """

    def __init__(self, pattern: str, vocab_size: int | None = None) -> None:
        self.vocab_size = vocab_size
        self._checked: set[int] = set()
        self.files = find_shards(pattern)
        self.shards = [load_shard(f) for f in self.files]
        sizes = np.array([s.size for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self.total = int(self.starts[-1])
        if self.total == 0:
            raise ValueError(f"the shards matching {pattern!r} hold no tokens")

    def read(self, offset: int, n: int) -> np.ndarray:
        """``n`` tokens starting at stream ``offset`` (taken modulo the total, wrapping past the last shard)."""
        out = np.empty(n, dtype=np.int64)
        pos = offset % self.total
        filled = 0
        while filled < n:
            idx = int(np.searchsorted(self.starts, pos, side="right")) - 1
            local = pos - int(self.starts[idx])
            k = min(n - filled, self.shards[idx].size - local)
            if self.vocab_size is not None and idx not in self._checked:
                check_token_ids(self.shards[idx], self.vocab_size, str(self.files[idx]))
                self._checked.add(idx)
            out[filled : filled + k] = self.shards[idx][local : local + k]
            filled += k
            pos = (pos + k) % self.total
        return out

    def micro_batch(
        self, index: int, local_tokens: int, seq_len: int, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch ``index`` for ``rank`` exactly as the seed's loader serves it (docs/record-stack.md §2.3).

        Each micro-batch consumes ``world_size * (local_tokens + 1)`` contiguous tokens; rank ``r``
        takes the ``r``-th slice of ``local_tokens + 1``; inputs are the slice minus its last token,
        targets the slice minus its first, both reshaped to ``(-1, seq_len)``.

        Returns:
            ``(x, y)`` int64 tensors of shape ``(local_tokens // seq_len, seq_len)``.
        """
        if local_tokens % seq_len:
            raise ValueError(f"local_tokens={local_tokens} is not a multiple of seq_len={seq_len}")
        span = local_tokens + 1
        local = torch.from_numpy(self.read(index * span * world_size + rank * span, span))
        return local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
