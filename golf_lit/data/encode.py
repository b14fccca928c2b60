"""Tokenize a JSONL file of documents into challenge shards (docs/record-stack.md §2.1).

Each line is a JSON object with a ``"text"`` string. Every document is encoded with SentencePiece and
prefixed with BOS (no EOS); the first ``num_val_docs`` documents form the validation stream
(``fineweb_val_NNNNNN.bin``), the rest the train stream (``fineweb_train_NNNNNN.bin``). Documents are
concatenated and spill across shard boundaries: every shard but the last of a stream holds exactly
``shard_tokens`` tokens. Blank lines are skipped and do not count as documents.

With ``caseops`` on, every document is CaseOps-transformed before encoding (docs/top-stack.md §2.2) and a
byte sidecar ``fineweb_val_bytes_NNNNNN.bin`` is written beside each validation shard, in the same format and
with the same token count: per token the number of original UTF-8 bytes it accounts for (BOS 0; §2.3).

Encoding runs in a process pool (ordered ``imap`` over chunks of lines, so the output does not depend on
the number of workers); JSON parsing happens in the workers too, and errors name the file and line.

The whole output is built in a temporary folder beside ``out`` and moved into place only when complete, with
``golf_lit_manifest.json`` (every shard's token count, size and sha256; ``golf_lit.data.manifest``) written
last: a failed run leaves ``out`` exactly as it was and removes the temporary folder.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golf_lit.data.manifest import MANIFEST_NAME, write_manifest
from golf_lit.data.shards import MAX_TOKEN_ID, SIDECAR_PREFIX, write_shard
from golf_lit.io import FolderLock, require_writable_dir

DEFAULT_SHARD_TOKENS = 10**8  # the challenge's SHARD_SIZE
DEFAULT_NUM_VAL_DOCS = 50_000  # the challenge's validation split (docs/record-stack.md §2.1)
DEFAULT_CHUNK_DOCS = 256

# One unit of work: (docs file name, first line number, raw lines, bytes of those lines).
Chunk = tuple[str, int, list[bytes], int]


@dataclass
class TokenizeReport:
    """What a tokenize run wrote.

    Attributes:
        val_files: Validation shards, in order.
        train_files: Train shards, in order.
        num_val_docs: Documents in the validation stream.
        num_train_docs: Documents in the train stream.
        val_tokens: Tokens in the validation stream (BOS included).
        train_tokens: Tokens in the train stream (BOS included).
        val_byte_files: Byte sidecar shards of the validation stream (CaseOps only), in order.
        val_bytes: Original UTF-8 bytes of the validation documents (CaseOps only; the sidecar's total).
    """

    val_files: list[Path] = field(default_factory=list)
    train_files: list[Path] = field(default_factory=list)
    num_val_docs: int = 0
    num_train_docs: int = 0
    val_tokens: int = 0
    train_tokens: int = 0
    val_byte_files: list[Path] = field(default_factory=list)
    val_bytes: int = 0


def check_uint16_vocab(vocab_size: int, tokenizer_path: str | os.PathLike) -> None:
    """Reject tokenizers whose ids cannot be stored in the uint16 shard format.

    Args:
        vocab_size: Number of pieces of the tokenizer.
        tokenizer_path: The tokenizer, for the message.

    Raises:
        ValueError: if ``vocab_size`` exceeds 65,536.
    """
    if vocab_size > MAX_TOKEN_ID + 1:
        raise ValueError(
            f"tokenizer {tokenizer_path} has {vocab_size} pieces, but challenge shards store uint16 token ids "
            f"(at most {MAX_TOKEN_ID + 1} pieces)"
        )


def parse_doc_line(line: bytes | str, docs_name: str, line_no: int) -> str:
    """The ``"text"`` of one JSONL line.

    Args:
        line: The raw line.
        docs_name: The docs file, for messages.
        line_no: 1-based line number, for messages.

    Returns:
        The document text.

    Raises:
        ValueError: naming the file and line if the line is not a JSON object with a string ``"text"``.
    """
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{docs_name} line {line_no}: not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(obj, dict) or "text" not in obj:
        raise ValueError(f'{docs_name} line {line_no}: expected a JSON object with a "text" key')
    if not isinstance(obj["text"], str):
        raise ValueError(f'{docs_name} line {line_no}: "text" must be a string, got {type(obj["text"]).__name__}')
    try:
        obj["text"].encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON's "\ud800" escapes decode to lone surrogates, which are not text
        bad = obj["text"][exc.start]
        raise ValueError(
            f'{docs_name} line {line_no}: "text" holds a lone surrogate (U+{ord(bad):04X} at character {exc.start}), '
            "which is not valid Unicode"
        ) from None
    return obj["text"]


def encode_chunk(chunk: Chunk, encode: Callable[[list[str]], list[list[int]]], bos_id: int) -> np.ndarray:
    """Encode a chunk of JSONL lines into one token array: ``[BOS, doc0..., BOS, doc1..., ...]``.

    Args:
        chunk: ``(docs file name, first line number, lines, nbytes)``.
        encode: Batch encoder from texts to token id lists.
        bos_id: The BOS id put before every document.

    Returns:
        A uint16 array of the chunk's tokens.

    Raises:
        ValueError: for a bad line, or a token id outside 0..65535 (naming file and line).
    """
    docs_name, first_line, lines, _ = chunk
    texts = [parse_doc_line(line, docs_name, first_line + i) for i, line in enumerate(lines)]
    return _join_docs(encode(texts), bos_id, docs_name, first_line)


def encode_chunk_caseops(chunk: Chunk, sp, bos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`encode_chunk` for a CaseOps tokenizer: each text is CaseOps-encoded first, and the
    original UTF-8 bytes of every token are returned alongside (BOS 0; docs/top-stack.md §2.3).

    A document whose text yields no piece at all (empty or whitespace only) charges its bytes to its BOS,
    so the counts always add up to the documents' UTF-8 length.

    Args:
        chunk: ``(docs file name, first line number, lines, nbytes)``.
        sp: The CaseOps SentencePiece processor.
        bos_id: The BOS id put before every document.

    Returns:
        ``(tokens, byte_counts)``, both uint16 arrays of the same length.
    """
    from golf_lit.data import caseops

    docs_name, first_line, lines, _ = chunk
    texts = [caseops.encode(parse_doc_line(line, docs_name, first_line + i)) for i, line in enumerate(lines)]
    mapped = sp.encode(texts, out_type="offset_mapping") if texts else []
    ids, counts = [], []
    for text, m in zip(texts, mapped):
        weights = caseops.original_byte_weights(text)
        c = caseops.piece_byte_counts(weights, [tuple(o) for o in m["offsets"]])
        ids.append(m["ids"])
        counts.append(np.concatenate([[0 if len(c) else int(weights.sum())], c]))
    tokens = _join_docs(ids, bos_id, docs_name, first_line)
    nbytes = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    if nbytes.size and int(nbytes.max()) > MAX_TOKEN_ID:
        raise ValueError(f"{docs_name}: a token accounts for {int(nbytes.max())} bytes, more than uint16 holds")
    return tokens, nbytes.astype(np.uint16)


def _join_docs(encoded: list[list[int]], bos_id: int, docs_name: str, first_line: int) -> np.ndarray:
    pieces: list[np.ndarray] = []
    for i, ids in enumerate(encoded):
        doc = np.empty(len(ids) + 1, dtype=np.int64)
        doc[0] = bos_id
        doc[1:] = ids
        if doc.size and (int(doc.min()) < 0 or int(doc.max()) > MAX_TOKEN_ID):
            bad = int(doc.max()) if int(doc.max()) > MAX_TOKEN_ID else int(doc.min())
            raise ValueError(
                f"{docs_name} line {first_line + i}: token id {bad} does not fit the uint16 shard format "
                f"(ids must be 0..{MAX_TOKEN_ID})"
            )
        pieces.append(doc)
    return np.concatenate(pieces).astype(np.uint16) if pieces else np.zeros(0, dtype=np.uint16)


class ShardWriter:
    """Accumulates one stream's tokens and writes full shards of exactly ``shard_tokens`` tokens.

    Args:
        out_dir: Output folder.
        split: ``"val"`` or ``"train"`` (file names ``fineweb_<split>_NNNNNN.bin``).
        shard_tokens: Tokens per full shard.
        prefix: File name prefix instead of ``fineweb_<split>_`` (the byte sidecar's ``fineweb_val_bytes_``).
    """

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, prefix: str | None = None) -> None:
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.prefix = prefix or f"fineweb_{split}_"
        self.files: list[Path] = []
        self.total = 0
        self._buf: np.ndarray | None = None
        self._fill = 0

    def add(self, tokens: np.ndarray) -> None:
        """Append tokens, writing each shard as it fills."""
        if self._buf is None:
            self._buf = np.empty(self.shard_tokens, dtype=np.uint16)
        pos = 0
        while pos < tokens.size:
            k = min(tokens.size - pos, self.shard_tokens - self._fill)
            self._buf[self._fill : self._fill + k] = tokens[pos : pos + k]
            self._fill += k
            pos += k
            if self._fill == self.shard_tokens:
                self._flush()
        self.total += int(tokens.size)

    def close(self) -> None:
        """Write the last, partial shard (if any) and free the buffer."""
        if self._fill:
            self._flush()
        self._buf = None

    def _flush(self) -> None:
        path = self.out_dir / f"{self.prefix}{len(self.files):06d}.bin"
        write_shard(path, self._buf[: self._fill])
        self.files.append(path)
        self._fill = 0


def _read_chunks(docs: Path, num_val_docs: int, chunk_docs: int) -> Iterator[tuple[str, Chunk]]:
    """Group non-blank lines into chunks that never straddle the val/train boundary."""
    name = str(docs)
    doc_index, lines, first, nbytes, split = 0, [], 0, 0, "val"
    with docs.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            nbytes += len(line)
            if not line.strip():
                continue
            line_split = "val" if doc_index < num_val_docs else "train"
            if lines and (len(lines) == chunk_docs or line_split != split):
                yield split, (name, first, lines, nbytes - len(line))
                lines, nbytes = [], len(line)
            if not lines:
                first, split = line_no, line_split
            lines.append(line)
            doc_index += 1
    if lines or nbytes:
        yield split, (name, first, lines, nbytes)


class _SentencePieceEncoder:
    """Picklable-by-path batch encoder; the model is loaded once per process."""

    def __init__(self, tokenizer_path: str, num_threads: int, caseops: bool = False) -> None:
        from golf_lit.data.tokenizer import load_tokenizer

        self.sp = load_tokenizer(tokenizer_path)
        self.num_threads = num_threads
        self.caseops = caseops

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, out_type=int, num_threads=self.num_threads)

    def encode(self, chunk: Chunk, bos_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens of a chunk, and their original byte counts with CaseOps (else None)."""
        if self.caseops:
            return encode_chunk_caseops(chunk, self.sp, bos_id)
        return encode_chunk(chunk, self, bos_id), None


_WORKER: tuple[_SentencePieceEncoder, int] | None = None


def _init_worker(tokenizer_path: str, bos_id: int, caseops: bool = False) -> None:
    global _WORKER
    import signal

    # Ctrl-C reaches the whole process group: the parent stops the pool and removes the partial output; the
    # workers stay quiet instead of each printing a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER = (_SentencePieceEncoder(tokenizer_path, num_threads=1, caseops=caseops), bos_id)


def _encode_in_worker(item: tuple[str, Chunk]) -> tuple[str, np.ndarray, np.ndarray | None, int, int]:
    split, chunk = item
    encoder, bos_id = _WORKER
    return split, *encoder.encode(chunk, bos_id), len(chunk[2]), chunk[3]


def tokenize_documents(
    docs: str | os.PathLike,
    tokenizer: str | os.PathLike,
    out: str | os.PathLike,
    num_val_docs: int = DEFAULT_NUM_VAL_DOCS,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    workers: int = 1,
    chunk_docs: int = DEFAULT_CHUNK_DOCS,
    overwrite: bool = False,
    progress: bool = True,
    caseops: bool = False,
) -> TokenizeReport:
    """Tokenize a JSONL docs file into challenge shards (see the module docstring for the format).

    Args:
        docs: JSONL file, one ``{"text": ...}`` object per line.
        tokenizer: SentencePiece ``.model`` file.
        out: Output folder for ``fineweb_{val,train}_NNNNNN.bin``.
        num_val_docs: The first this-many documents go to the validation stream.
        shard_tokens: Tokens per full shard.
        workers: Encoding processes (1 encodes in this process).
        chunk_docs: Documents per unit of work sent to a worker.
        overwrite: Allow an output folder that already holds shards; they are all replaced (other files stay).
        progress: Show a progress bar over the docs file's bytes.
        caseops: CaseOps-transform every document first and write the validation byte sidecar; needs a
            tokenizer trained with ``train-tokenizer --caseops`` (the four markers as pieces).

    Returns:
        The files written and the document and token counts per stream.

    Raises:
        FileNotFoundError: if the docs file or the tokenizer is missing.
        ValueError: for bad options, a bad line (file and line named), a tokenizer without BOS, or ids
            that do not fit uint16.
        FileExistsError: if ``out`` already holds shards and ``overwrite`` is off.
    """
    from golf_lit.data.tokenizer import load_tokenizer

    docs_path, out_dir = Path(docs), Path(out)
    for name, value, low in (
        ("num_val_docs", num_val_docs, 0),
        ("shard_tokens", shard_tokens, 1),
        ("workers", workers, 1),
        ("chunk_docs", chunk_docs, 1),
    ):
        if value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if not docs_path.is_file():
        raise FileNotFoundError(f'docs file not found: {docs_path} (expected JSONL with a "text" per line)')
    with open(docs_path, "rb") as f:  # stops at the first document: cheap on a 40 GB file
        if not any(line.strip() for line in f):
            raise ValueError(f'{docs_path}: no documents (expected JSONL with a "text" per line)')
    sp = load_tokenizer(tokenizer)
    check_uint16_vocab(int(sp.vocab_size()), tokenizer)
    bos_id = int(sp.bos_id())
    if bos_id < 0:
        raise ValueError(f"tokenizer {tokenizer} has no BOS piece; documents must be prefixed with BOS")
    from golf_lit.data.caseops import is_caseops_tokenizer

    if caseops != is_caseops_tokenizer(sp):
        raise ValueError(
            f"tokenizer {tokenizer}: --caseops needs a tokenizer with the four CaseOps marker pieces "
            "(train-tokenizer --caseops)" if caseops else
            f"tokenizer {tokenizer} is a CaseOps tokenizer (it holds the marker pieces); pass --caseops"
        )
    _refuse_existing_shards(out_dir, overwrite)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a folder")
    require_writable_dir(out_dir, "--out")  # checked, not created: a bad docs file leaves no folder behind
    out_dir = out_dir.resolve()
    # A second tokenize into the same --out is refused while this one runs (the lock is a sibling file, so it
    # stays put when the finished folder is renamed into place).
    lock = FolderLock(out_dir, "--out").acquire()
    try:
        _refuse_existing_shards(out_dir, overwrite)  # again: another run may have finished in between
        return _tokenize_locked(out_dir, docs_path, tokenizer, sp, bos_id, num_val_docs, shard_tokens, workers,
                                chunk_docs, progress, caseops)
    finally:
        lock.release()


def _refuse_existing_shards(out_dir: Path, overwrite: bool) -> None:
    existing = sorted(out_dir.glob("fineweb_*_[0-9]*.bin")) if out_dir.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds {len(existing)} shard(s) (e.g. {existing[0].name}); "
            f"pass --overwrite to replace them or choose another --out"
        )


def _tokenize_locked(out_dir, docs_path, tokenizer, sp, bos_id, num_val_docs, shard_tokens, workers, chunk_docs,
                     progress, caseops) -> TokenizeReport:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Everything is built in a temporary sibling and moved into place only once complete (see _move_into_place).
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if out_dir.is_dir():
            shutil.copymode(out_dir, work)
        else:  # mkdtemp makes 0700; give the usual permissions
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(work, 0o777 & ~mask)
        report = _encode_into(work, docs_path, tokenizer, bos_id, num_val_docs, shard_tokens, workers, chunk_docs,
                              progress, caseops)
        write_manifest(
            work,
            report.val_files + report.train_files + report.val_byte_files,
            tokenizer,
            int(sp.vocab_size()),
            shard_tokens=shard_tokens,
            num_val_docs=num_val_docs,
            caseops=caseops,
        )
        _move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    for files in (report.val_files, report.train_files, report.val_byte_files):
        files[:] = [out_dir / f.name for f in files]
    return report


def _move_into_place(work: Path, out_dir: Path) -> None:
    """Make the finished dataset in ``work`` the folder ``out_dir``.

    Without an existing ``out_dir`` this is one rename. Otherwise the old folder is renamed aside, ``work`` takes
    its name, and the old folder's other entries (anything but shards and the manifest) are moved into the new
    one before the old shards are deleted; if the swap itself fails the old folder is put back.
    """
    if not out_dir.exists():
        os.rename(work, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(work, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    for entry in old.iterdir():
        is_shard = entry.is_file() and entry.match("fineweb_*_[0-9]*.bin")
        if not is_shard and entry.name != MANIFEST_NAME and not (out_dir / entry.name).exists():
            os.rename(entry, out_dir / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def _encode_into(
    out_dir: Path,
    docs_path: Path,
    tokenizer: str | os.PathLike,
    bos_id: int,
    num_val_docs: int,
    shard_tokens: int,
    workers: int,
    chunk_docs: int,
    progress: bool,
    caseops: bool,
) -> TokenizeReport:
    """Encode the docs file into shards in the (empty) folder ``out_dir``."""
    writers = {"val": ShardWriter(out_dir, "val", shard_tokens), "train": ShardWriter(out_dir, "train", shard_tokens)}
    sidecar = ShardWriter(out_dir, "val", shard_tokens, prefix=SIDECAR_PREFIX) if caseops else None
    report = TokenizeReport()
    chunks = _read_chunks(docs_path, num_val_docs, chunk_docs)
    pool = None
    if workers > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer), bos_id, caseops))
        results = pool.imap(_encode_in_worker, chunks)
    else:
        local = _SentencePieceEncoder(str(tokenizer), num_threads=1, caseops=caseops)
        results = ((s, *local.encode(c, bos_id), len(c[2]), c[3]) for s, c in chunks)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=docs_path.stat().st_size,
        desc=f"tokenize {docs_path.name}",
        unit="B",
        unit_scale=True,
        disable=not progress,
    )
    try:
        for split, tokens, counts, ndocs, nbytes in results:
            if split == "train":
                writers["val"].close()  # the val stream is complete: write its last shard, free its buffer
                if sidecar is not None:
                    sidecar.close()
                report.num_train_docs += ndocs
            else:
                report.num_val_docs += ndocs
                if sidecar is not None and counts.size:
                    sidecar.add(counts)
                    report.val_bytes += int(counts.sum(dtype=np.int64))
            if tokens.size:
                writers[split].add(tokens)
            bar.update(nbytes)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    for w in writers.values():
        w.close()
    if sidecar is not None:
        sidecar.close()
        report.val_byte_files = sidecar.files

    report.val_files, report.train_files = writers["val"].files, writers["train"].files
    report.val_tokens, report.train_tokens = writers["val"].total, writers["train"].total
    return report
