"""Train a SentencePiece BPE tokenizer of any vocabulary size with the challenge's settings (docs/record-stack.md §2.2).

Settings: BPE, ``byte_fallback``, ``split_digits``, ``nmt_nfkc`` normalization, no dummy prefix,
``character_coverage=0.999``, ids pad 0 / bos 1 / eos 2 / unk 3. As in the challenge's trainer, each
document is one SentencePiece "sentence" (NUL replaced by a space, surrounding whitespace stripped, empty
ones dropped); SentencePiece skips sentences longer than ``max_sentence_length`` bytes while training.

The last ``heldout_docs`` documents of the file are kept out of training and used to report the
tokenizer's compression as tokens per byte: the number of tokens of those documents (no BOS) divided by
their raw UTF-8 byte count.

With ``caseops`` on (docs/top-stack.md §2.2), every document is CaseOps-transformed before training and before
the held-out measurement (whose byte count stays the original text's), and the four marker characters are
user-defined pieces with ids 4..7, right after the specials; the files are ``fineweb_<V>_bpe_caseops.*``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from golf_lit.data.encode import parse_doc_line
from golf_lit.io import FolderLock

DEFAULT_HELDOUT_DOCS = 1000
DEFAULT_INPUT_SENTENCE_SIZE = 1_000_000
DEFAULT_MAX_SENTENCE_LENGTH = 4192  # SentencePiece's default, which the challenge's trainer kept
MIN_VOCAB_SIZE = 4 + 256 + 1  # 4 special ids + 256 byte pieces + at least one learned piece

# The challenge tokenizer's trainer settings (docs/record-stack.md §2.2; openai/parameter-golf data/ tokenizer export).
CHALLENGE_TRAINER_SETTINGS: dict[str, object] = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
}


@dataclass
class TokenizerReport:
    """Result of training a tokenizer.

    Attributes:
        model_path: The ``.model`` file written.
        vocab_path: The ``.vocab`` file written.
        vocab_size: Pieces in the model.
        train_docs: Documents offered to the trainer.
        heldout_docs: Held-out documents measured.
        heldout_tokens: Their token count (no BOS).
        heldout_bytes: Their UTF-8 byte count.
    """

    model_path: Path
    vocab_path: Path
    vocab_size: int
    train_docs: int
    heldout_docs: int
    heldout_tokens: int
    heldout_bytes: int

    @property
    def tokens_per_byte(self) -> float | None:
        """Held-out tokens per byte, or None when nothing was held out."""
        return self.heldout_tokens / self.heldout_bytes if self.heldout_bytes else None


def tokenizer_file_stem(vocab_size: int, caseops: bool = False) -> str:
    """The challenge's file stem for a BPE tokenizer, e.g. ``fineweb_4096_bpe`` (``..._bpe_caseops`` with CaseOps)."""
    return f"fineweb_{vocab_size}_bpe" + ("_caseops" if caseops else "")


def _iter_docs(docs: Path, start: int, stop: int | None, transform=None) -> Iterator[str]:
    """Texts of documents ``start <= index < stop`` (blank lines are not documents), optionally transformed."""
    for text in _iter_raw_docs(docs, start, stop):
        yield transform(text) if transform is not None else text


def _iter_raw_docs(docs: Path, start: int, stop: int | None) -> Iterator[str]:
    index = 0
    with docs.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if stop is not None and index >= stop:
                return
            if index >= start:
                yield parse_doc_line(line, str(docs), line_no)
            index += 1


def _count_docs(docs: Path) -> int:
    with docs.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _training_sentences(texts: Iterator[str]) -> Iterator[str]:
    for text in texts:
        text = text.replace("\x00", " ").strip()
        if text:
            yield text


def train_tokenizer(
    docs: str | os.PathLike,
    vocab_size: int,
    out: str | os.PathLike,
    heldout_docs: int = DEFAULT_HELDOUT_DOCS,
    max_train_docs: int | None = None,
    input_sentence_size: int = DEFAULT_INPUT_SENTENCE_SIZE,
    max_sentence_length: int = DEFAULT_MAX_SENTENCE_LENGTH,
    num_threads: int | None = None,
    verbose: bool = False,
    caseops: bool = False,
) -> TokenizerReport:
    """Train ``<out>/fineweb_<vocab_size>_bpe.{model,vocab}`` on a JSONL docs file and measure it on held-out docs.

    Args:
        docs: JSONL file, one ``{"text": ...}`` object per line.
        vocab_size: Pieces in the tokenizer (261..65,536; the uint16 shard format caps it).
        out: Output folder.
        heldout_docs: The last this-many documents are not trained on; they give the tokens-per-byte report.
        max_train_docs: Offer at most this many documents (from the start of the file) to the trainer.
        input_sentence_size: Documents SentencePiece samples for training (0 = all).
        max_sentence_length: Documents longer than this many bytes are skipped by the trainer.
        num_threads: Trainer threads (default: all CPUs).
        verbose: Let SentencePiece log its progress.
        caseops: Train on CaseOps-transformed text with the four markers as user-defined pieces.

    Returns:
        The files written and the held-out measurement.

    Raises:
        FileNotFoundError: if the docs file is missing.
        ValueError: for out-of-range options, too few documents, or a vocabulary SentencePiece cannot build.
    """
    import sentencepiece as spm

    docs_path, out_dir = Path(docs), Path(out)
    if not docs_path.is_file():
        raise FileNotFoundError(f'docs file not found: {docs_path} (expected JSONL with a "text" per line)')
    if not MIN_VOCAB_SIZE <= vocab_size <= 65536:
        raise ValueError(
            f"--vocab-size must be in {MIN_VOCAB_SIZE}..65536 (4 specials + 256 byte pieces + "
            f"learned pieces; uint16 shards), got {vocab_size}"
        )
    if heldout_docs < 0:
        raise ValueError(f"--heldout-docs must be >= 0, got {heldout_docs}")
    if max_train_docs is not None and max_train_docs < 1:
        raise ValueError(f"--max-train-docs must be >= 1, got {max_train_docs}")
    total = _count_docs(docs_path)
    train_end = total - heldout_docs
    if train_end < 1:
        raise ValueError(f"{docs_path} has {total} documents; --heldout-docs {heldout_docs} leaves none to train on")
    if max_train_docs is not None:
        train_end = min(train_end, max_train_docs)

    from golf_lit.data import caseops as caseops_mod

    transform = caseops_mod.encode if caseops else None
    extra = {"user_defined_symbols": list(caseops_mod.MARKERS)} if caseops else {}
    stem = tokenizer_file_stem(vocab_size, caseops)
    lock = FolderLock(out_dir, "--out").acquire()  # two train-tokenizer runs into one folder: the second is refused
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=out_dir))
    except BaseException:
        lock.release()
        raise
    try:
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_training_sentences(_iter_docs(docs_path, 0, train_end, transform)),
                model_prefix=str(tmp / stem),
                vocab_size=vocab_size,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                max_sentence_length=max_sentence_length,
                num_threads=num_threads or os.cpu_count() or 1,
                minloglevel=0 if verbose else 2,
                **CHALLENGE_TRAINER_SETTINGS,
                **extra,
            )
        except RuntimeError as exc:
            raise ValueError(
                f"SentencePiece could not train a {vocab_size}-piece BPE on {train_end} documents of {docs_path}: "
                f"{exc}. Use more documents or a smaller --vocab-size."
            ) from None
        sp = spm.SentencePieceProcessor(model_file=str(tmp / f"{stem}.model"))
        if int(sp.vocab_size()) != vocab_size:
            raise ValueError(f"SentencePiece produced {sp.vocab_size()} pieces, not the requested {vocab_size}")
        # The held-out measurement reads the rest of the docs file, which may still fail (a bad line): measure
        # before the new files replace an existing tokenizer, so a failed run leaves the old one in place.
        n_tokens = n_bytes = n_held = 0
        for text in _iter_docs(docs_path, total - heldout_docs, None):
            n_tokens += len(sp.encode(transform(text) if transform else text, out_type=int))
            n_bytes += len(text.encode("utf-8"))
            n_held += 1
        model_path, vocab_path = out_dir / f"{stem}.model", out_dir / f"{stem}.vocab"
        os.replace(tmp / f"{stem}.vocab", vocab_path)
        os.replace(tmp / f"{stem}.model", model_path)
    except BaseException:
        if created:  # a failed run leaves no empty folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        lock.release()
    return TokenizerReport(model_path, vocab_path, vocab_size, train_end, n_held, n_tokens, n_bytes)
