"""CaseOps: a lossless case transform applied before tokenizer training and encoding (docs/top-stack.md §2.2).

Origin: record 2026-04-18 CaseOps (PR #1729, ``lossless_caps_caseops_v1``). Over every maximal run of ASCII
letters ("word"): all lowercase stays; all uppercase with length >= 2 becomes ALLCAPS + the lowercased word;
first letter uppercase and the rest lowercase (one-letter words too) becomes TITLE + the lowercased word; any
other mix becomes (TITLE if the first letter is uppercase) + the lowercased letters with CAPNEXT before every
later uppercase letter. A literal marker character in the input is preceded by ESC. Non-ASCII text is untouched,
so :func:`decode` inverts :func:`encode` exactly.

Byte accounting (docs/top-stack.md §2.3): every character of the transformed text stands for a number of
*original* UTF-8 bytes (:func:`original_byte_weights`): markers 0, ESC 0, an escaped literal marker its own 3
bytes, an ASCII letter 1 whatever its case, anything else its UTF-8 length. :func:`piece_byte_counts` charges
each SentencePiece piece with the weights of the characters it covers (SentencePiece's offset mapping, so a
multi-byte character split into byte-fallback pieces is charged to its last piece); characters no piece covers
(whitespace the normalizer drops) are charged to the next piece, or the last one at the end. The counts of a
document therefore add up to the UTF-8 length of the original text exactly.
"""

from __future__ import annotations

import re

import numpy as np

TITLE = "\ue001"
ALLCAPS = "\ue002"
CAPNEXT = "\ue003"
ESC = "\ue004"
MARKERS = (TITLE, ALLCAPS, CAPNEXT, ESC)
"""The four marker characters, in the order of their user-defined piece ids (4..7 after pad/bos/eos/unk)."""

_WORD_OR_MARKER = re.compile(r"[A-Za-z]+|[\ue001-\ue004]")
_MARKER_SET = frozenset(MARKERS)


def _encode_word(word: str) -> str:
    if word.islower():
        return word
    lower = word.lower()
    if len(word) >= 2 and word.isupper():
        return ALLCAPS + lower
    if word[0].isupper() and (len(word) == 1 or word[1:].islower()):
        return TITLE + lower
    out = [TITLE + lower[0] if word[0].isupper() else lower[0]]
    for ch in word[1:]:
        out.append(CAPNEXT + ch.lower() if ch.isupper() else ch)
    return "".join(out)


def encode(text: str) -> str:
    """The CaseOps form of ``text`` (see the module docstring)."""

    def sub(m: re.Match) -> str:
        s = m.group(0)
        return ESC + s if s in _MARKER_SET else _encode_word(s)

    return _WORD_OR_MARKER.sub(sub, text)


def _is_ascii_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def decode(text: str) -> str:
    """Invert :func:`encode`.

    Raises:
        ValueError: if ``text`` is not a valid CaseOps string (a dangling marker).
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ESC:
            if i + 1 >= n:
                raise ValueError("CaseOps decode: ESC at the end of the text")
            out.append(text[i + 1])
            i += 2
        elif ch in (TITLE, CAPNEXT):
            if i + 1 >= n or not _is_ascii_letter(text[i + 1]):
                raise ValueError(f"CaseOps decode: marker U+{ord(ch):04X} at {i} is not followed by an ASCII letter")
            out.append(text[i + 1].upper())
            i += 2
        elif ch == ALLCAPS:
            j = i + 1
            while j < n and _is_ascii_letter(text[j]):
                j += 1
            if j == i + 1:
                raise ValueError(f"CaseOps decode: ALLCAPS at {i} is not followed by an ASCII letter")
            out.append(text[i + 1 : j].upper())
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def original_byte_weights(encoded: str) -> np.ndarray:
    """Original UTF-8 bytes each character of a CaseOps string stands for (int64, one per character)."""
    w = np.empty(len(encoded), dtype=np.int64)
    escaped = False
    for i, ch in enumerate(encoded):
        if escaped:
            w[i] = len(ch.encode("utf-8"))
            escaped = False
        elif ch in _MARKER_SET:
            w[i] = 0
            escaped = ch == ESC
        elif ch < "\x80":
            w[i] = 1
        else:
            w[i] = len(ch.encode("utf-8"))
    return w


def piece_byte_counts(weights: np.ndarray, offsets: list[tuple[int, int]]) -> np.ndarray:
    """Original bytes per piece from per-character weights and SentencePiece's (begin, end) character offsets.

    Characters outside every piece's span (whitespace the normalizer drops) are carried forward to the next
    piece that covers bytes of its own (so markers stay at 0), or to the last piece at the end; the counts sum
    to ``weights.sum()`` whenever there is at least one piece.

    Args:
        weights: :func:`original_byte_weights` of the encoded text.
        offsets: One ``(begin, end)`` character span per piece, in order (``encode_as_offset_mapping``).

    Returns:
        int64 counts, one per piece.
    """
    csum = np.concatenate([[0], np.cumsum(weights)])
    counts = np.zeros(len(offsets), dtype=np.int64)
    covered_to = 0  # every character before this is charged or pending
    pending = 0  # bytes of uncovered characters not yet charged
    for k, (begin, end) in enumerate(offsets):
        begin = max(begin, covered_to)
        end = max(end, begin)
        pending += int(csum[begin] - csum[covered_to])
        own = int(csum[end] - csum[begin])
        counts[k] = own + (pending if own else 0)
        if own:
            pending = 0
        covered_to = end
    if len(offsets):
        counts[-1] += pending + int(csum[-1] - csum[covered_to])
    return counts


def is_caseops_tokenizer(sp) -> bool:
    """True if the SentencePiece model holds the four CaseOps markers as single pieces."""
    unk = int(sp.unk_id())
    return all(int(sp.piece_to_id(m)) != unk for m in MARKERS)
