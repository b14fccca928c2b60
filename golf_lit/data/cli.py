"""``golf-lit data``: download the challenge shards, tokenize documents into shards, train a tokenizer, verify a
dataset folder against its manifest. Each subcommand's options are the fields of its dataclass below."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from golf_lit.data.download import DEFAULT_DATA_DIR, DEFAULT_REMOTE_ROOT, DEFAULT_REPO_ID, DEFAULT_TRAIN_SHARDS
from golf_lit.data.encode import DEFAULT_CHUNK_DOCS, DEFAULT_NUM_VAL_DOCS, DEFAULT_SHARD_TOKENS
from golf_lit.data.train_tokenizer import (
    DEFAULT_HELDOUT_DOCS,
    DEFAULT_INPUT_SENTENCE_SIZE,
    DEFAULT_MAX_SENTENCE_LENGTH,
)
from golf_lit.options import add_options, build, command_parser, parse


def _cpus() -> int:
    return os.cpu_count() or 1


@dataclass
class DownloadOptions:
    """Download a variant's validation shards, its first N train shards and its tokenizer from the challenge's
    Hugging Face dataset (needs pip install 'golf-lit[hub]')."""

    variant: str = "sp1024"
    """Tokenizer variant, dataset folder fineweb10B_<variant>."""
    train_shards: int = DEFAULT_TRAIN_SHARDS
    """Train shards to fetch, 1e8 tokens each."""
    data_dir: str = DEFAULT_DATA_DIR
    """Local data root, challenge layout below it."""
    repo_id: str = DEFAULT_REPO_ID
    """Hugging Face dataset repo."""
    remote_root: str = DEFAULT_REMOTE_ROOT
    """Folder of the export inside the repo."""
    refresh_manifest: bool = False
    """Fetch manifest.json even if a local copy exists."""
    no_progress: bool = False
    """No progress bar."""


@dataclass
class TokenizeOptions:
    """Encode {"text": ...} JSONL documents with a SentencePiece model into challenge shards: BOS before every
    document, no EOS, the first --num_val_docs to fineweb_val_*, the rest to fineweb_train_*."""

    docs: str
    """JSONL file, one {"text": ...} per line."""
    tokenizer: str
    """SentencePiece .model file."""
    out: str | None = None
    """Output folder (default: <data_dir>/datasets/fineweb10B_sp<vocab size>[_caseops])."""
    data_dir: str = DEFAULT_DATA_DIR
    """Data root used for the default --out."""
    num_val_docs: int = DEFAULT_NUM_VAL_DOCS
    """The first N documents form the val split."""
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    """Tokens per full shard."""
    workers: int = field(default_factory=_cpus)
    """Encoding processes (default: all CPUs)."""
    chunk_docs: int = DEFAULT_CHUNK_DOCS
    """Documents per unit of work."""
    overwrite: bool = False
    """Replace shards already in the output folder."""
    caseops: bool = False
    """CaseOps-transform documents (needs a train-tokenizer --caseops model) and write the validation byte sidecar
    fineweb_val_bytes_*.bin."""
    no_progress: bool = False
    """No progress bar."""


@dataclass
class TrainTokenizerOptions:
    """Train fineweb_<vocab>_bpe.{model,vocab} with the challenge's SentencePiece settings and report tokens per
    byte on held-out documents."""

    docs: str
    """JSONL file, one {"text": ...} per line."""
    vocab_size: int
    """Pieces in the tokenizer, e.g. 4096."""
    out: str | None = None
    """Output folder (default: <data_dir>/tokenizers)."""
    data_dir: str = DEFAULT_DATA_DIR
    """Data root used for the default --out."""
    heldout_docs: int = DEFAULT_HELDOUT_DOCS
    """The last N documents are not trained on; they measure tokens per byte."""
    max_train_docs: int | None = None
    """Offer at most this many documents to the trainer (default: all)."""
    input_sentence_size: int = DEFAULT_INPUT_SENTENCE_SIZE
    """Documents SentencePiece samples for training, 0 = all."""
    max_sentence_length: int = DEFAULT_MAX_SENTENCE_LENGTH
    """Documents longer than this many bytes are skipped by the trainer."""
    threads: int = field(default_factory=_cpus)
    """Trainer threads (default: all CPUs)."""
    verbose: bool = False
    """Show SentencePiece's training log."""
    caseops: bool = False
    """Train on CaseOps-transformed text with the four case markers as user-defined pieces (ids 4-7)."""


@dataclass
class VerifyOptions:
    """Check every file listed in DIR/golf_lit_manifest.json (written by tokenize): present, nothing unlisted, sizes,
    header token counts and sha256 checksums."""

    dir: str
    """Dataset folder, e.g. data/datasets/fineweb10B_sp4096."""
    no_checksums: bool = False
    """Skip the sha256 checksums (sizes and counts only)."""


SUBCOMMANDS: dict[str, tuple[type, str]] = {
    "download": (DownloadOptions, "download the published shards and tokenizer"),
    "tokenize": (TokenizeOptions, "tokenize a JSONL docs file into shards"),
    "train-tokenizer": (TrainTokenizerOptions, "train a SentencePiece BPE tokenizer"),
    "verify": (VerifyOptions, "check a tokenized dataset folder against its manifest"),
}


def build_parser():
    """The ``golf-lit data`` parser: one subcommand per entry of SUBCOMMANDS, its options from the dataclass.

    Returns:
        The parser.
    """
    parser = command_parser("golf-lit data",
                            "Get challenge data: download shards, tokenize documents, train a tokenizer.")
    subcommands = parser.add_subcommands(dest="command", required=True)
    for name, (cls, help_text) in SUBCOMMANDS.items():
        sub = command_parser(f"golf-lit data {name}", " ".join((cls.__doc__ or "").split()))
        add_options(sub, cls, positional={"dir"} if cls is VerifyOptions else frozenset(),
                    title=f"{name} options")
        subcommands.add_subcommand(name, sub, help=help_text)
    return parser


def _verify(args: VerifyOptions) -> None:
    from golf_lit.data.manifest import MANIFEST_NAME, verify_folder

    folder = Path(args.dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    manifest = verify_folder(folder, checksums=not args.no_checksums)
    if manifest is None:
        raise FileNotFoundError(
            f"{folder}: no {MANIFEST_NAME} (only folders written by golf-lit data tokenize have one)"
        )
    files = manifest["files"]
    tokens = sum(int(e["tokens"]) for e in files.values())
    what = "sizes, token counts" + ("" if args.no_checksums else " and sha256")
    print(f"{folder}: ok, {len(files)} file(s), {tokens} tokens ({what} match {MANIFEST_NAME})")


def _download(args: DownloadOptions) -> None:
    from golf_lit.data.download import download

    report = download(
        variant=args.variant,
        train_shards=args.train_shards,
        data_dir=args.data_dir,
        repo_id=args.repo_id,
        remote_root=args.remote_root,
        refresh_manifest=args.refresh_manifest,
        progress=not args.no_progress,
    )
    root = Path(args.data_dir)
    print(f"downloaded {len(report.downloaded)} file(s), {len(report.skipped)} already present")
    print(f"shards: {root / 'datasets' / f'fineweb10B_{args.variant}'}  tokenizers: {root / 'tokenizers'}")


def _tokenize(args: TokenizeOptions) -> None:
    from golf_lit.data.encode import tokenize_documents
    from golf_lit.data.tokenizer import load_tokenizer

    out = args.out
    if out is None:
        vocab = int(load_tokenizer(args.tokenizer).vocab_size())
        suffix = "_caseops" if args.caseops else ""
        out = str(Path(args.data_dir) / "datasets" / f"fineweb10B_sp{vocab}{suffix}")
    r = tokenize_documents(
        docs=args.docs,
        tokenizer=args.tokenizer,
        out=out,
        num_val_docs=args.num_val_docs,
        shard_tokens=args.shard_tokens,
        workers=args.workers,
        chunk_docs=args.chunk_docs,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        caseops=args.caseops,
    )
    print(f"val:   {r.num_val_docs} docs, {r.val_tokens} tokens, {len(r.val_files)} shard(s)")
    if args.caseops:
        print(f"val byte sidecar: {len(r.val_byte_files)} shard(s), {r.val_bytes} original UTF-8 bytes")
    print(f"train: {r.num_train_docs} docs, {r.train_tokens} tokens, {len(r.train_files)} shard(s)")
    print(f"written to {out}")


def _train_tokenizer(args: TrainTokenizerOptions) -> None:
    from golf_lit.data.train_tokenizer import train_tokenizer

    out = args.out if args.out is not None else str(Path(args.data_dir) / "tokenizers")
    r = train_tokenizer(
        docs=args.docs,
        vocab_size=args.vocab_size,
        out=out,
        heldout_docs=args.heldout_docs,
        max_train_docs=args.max_train_docs,
        input_sentence_size=args.input_sentence_size,
        max_sentence_length=args.max_sentence_length,
        num_threads=args.threads,
        verbose=args.verbose,
        caseops=args.caseops,
    )
    print(f"wrote {r.model_path} and {r.vocab_path} ({r.vocab_size} pieces, trained on {r.train_docs} docs)")
    if r.tokens_per_byte is None:
        print("tokens/byte: not measured (--heldout-docs 0)")
    else:
        print(
            f"tokens/byte on {r.heldout_docs} held-out docs: {r.tokens_per_byte:.6f} "
            f"({r.heldout_tokens} tokens / {r.heldout_bytes} bytes)"
        )


_COMMANDS = {
    "download": _download,
    "tokenize": _tokenize,
    "train-tokenizer": _train_tokenizer,
    "verify": _verify,
}


def main(argv: list[str] | None = None) -> int:
    """Run ``golf-lit data ...``.

    Args:
        argv: Arguments after ``data`` (default: ``sys.argv[1:]``), options spelled as declared (``--data_dir``;
            the ``golf-lit`` dispatcher also accepts ``--data-dir``).

    Returns:
        Exit status: 0 on success, 1 on a reported error.

    Raises:
        golf_lit.options.UsageError: A usage error (the dispatcher prints it and exits with status 2).
    """
    ns = parse(build_parser(), list(sys.argv[1:] if argv is None else argv))
    command = ns.command
    args = build(SUBCOMMANDS[command][0], ns, command)
    try:
        _COMMANDS[command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"golf-lit data {command}: error: {exc}", file=sys.stderr)
        return 1
    return 0  # Ctrl-C / SIGTERM: the dispatcher's one clean stop, as for every command (exit 130 / 143)
