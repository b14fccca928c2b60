"""``golf-lit data``: download the challenge shards, tokenize documents into shards, train a tokenizer, verify a
dataset folder against its manifest."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from golf_lit.data.download import DEFAULT_DATA_DIR, DEFAULT_REMOTE_ROOT, DEFAULT_REPO_ID, DEFAULT_TRAIN_SHARDS
from golf_lit.data.encode import DEFAULT_CHUNK_DOCS, DEFAULT_NUM_VAL_DOCS, DEFAULT_SHARD_TOKENS
from golf_lit.data.train_tokenizer import (
    DEFAULT_HELDOUT_DOCS,
    DEFAULT_INPUT_SENTENCE_SIZE,
    DEFAULT_MAX_SENTENCE_LENGTH,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``golf-lit data`` argument parser with its subcommands.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="golf-lit data", description="Get challenge data: download shards, tokenize documents, train a tokenizer."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{download,tokenize,train-tokenizer,verify}")
    dl = sub.add_parser(
        "download",
        help="download the published shards and tokenizer",
        description="Download a variant's validation shards, its first N train shards and its "
        "tokenizer from the challenge's Hugging Face dataset (needs pip install 'golf-lit[hub]').",
    )
    dl.add_argument(
        "--variant",
        default="sp1024",
        help="tokenizer variant, dataset folder fineweb10B_<variant> (default: %(default)s)",
    )
    dl.add_argument(
        "--train-shards",
        type=int,
        default=DEFAULT_TRAIN_SHARDS,
        help="train shards to fetch, 1e8 tokens each (default: %(default)s)",
    )
    dl.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="local data root, challenge layout below it (default: %(default)s)"
    )
    dl.add_argument("--repo-id", default=DEFAULT_REPO_ID, help="Hugging Face dataset repo (default: %(default)s)")
    dl.add_argument(
        "--remote-root", default=DEFAULT_REMOTE_ROOT, help="folder of the export inside the repo (default: %(default)s)"
    )
    dl.add_argument("--refresh-manifest", action="store_true", help="fetch manifest.json even if a local copy exists")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")

    tok = sub.add_parser(
        "tokenize",
        help="tokenize a JSONL docs file into shards",
        description='Encode {"text": ...} JSONL documents with a SentencePiece model into '
        "challenge shards: BOS before every document, no EOS, the first --num-val-docs to "
        "fineweb_val_*, the rest to fineweb_train_*.",
    )
    tok.add_argument("--docs", required=True, help='JSONL file, one {"text": ...} per line')
    tok.add_argument("--tokenizer", required=True, help="SentencePiece .model file")
    tok.add_argument(
        "--out", default=None, help="output folder (default: <data-dir>/datasets/fineweb10B_sp<vocab size>)"
    )
    tok.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="data root used for the default --out (default: %(default)s)"
    )
    tok.add_argument(
        "--num-val-docs",
        type=int,
        default=DEFAULT_NUM_VAL_DOCS,
        help="the first N documents form the val split (default: %(default)s)",
    )
    tok.add_argument(
        "--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per full shard (default: %(default)s)"
    )
    tok.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes (default: all CPUs)")
    tok.add_argument(
        "--chunk-docs", type=int, default=DEFAULT_CHUNK_DOCS, help="documents per unit of work (default: %(default)s)"
    )
    tok.add_argument("--overwrite", action="store_true", help="replace shards already in the output folder")
    tok.add_argument(
        "--caseops",
        action="store_true",
        help="CaseOps-transform documents (needs a train-tokenizer --caseops model) and write the validation byte "
        f"sidecar fineweb_val_bytes_*.bin; --num-val-docs defaults to {DEFAULT_NUM_VAL_DOCS} as in the records",
    )
    tok.add_argument("--no-progress", action="store_true", help="no progress bar")

    tr = sub.add_parser(
        "train-tokenizer",
        help="train a SentencePiece BPE tokenizer",
        description="Train fineweb_<vocab>_bpe.{model,vocab} with the challenge's SentencePiece "
        "settings and report tokens per byte on held-out documents.",
    )
    tr.add_argument("--docs", required=True, help='JSONL file, one {"text": ...} per line')
    tr.add_argument("--vocab-size", type=int, required=True, help="pieces in the tokenizer, e.g. 4096")
    tr.add_argument("--out", default=None, help="output folder (default: <data-dir>/tokenizers)")
    tr.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="data root used for the default --out (default: %(default)s)"
    )
    tr.add_argument(
        "--heldout-docs",
        type=int,
        default=DEFAULT_HELDOUT_DOCS,
        help="the last N documents are not trained on; they measure tokens per byte (default: %(default)s)",
    )
    tr.add_argument(
        "--max-train-docs",
        type=int,
        default=None,
        help="offer at most this many documents to the trainer (default: all)",
    )
    tr.add_argument(
        "--input-sentence-size",
        type=int,
        default=DEFAULT_INPUT_SENTENCE_SIZE,
        help="documents SentencePiece samples for training, 0 = all (default: %(default)s)",
    )
    tr.add_argument(
        "--max-sentence-length",
        type=int,
        default=DEFAULT_MAX_SENTENCE_LENGTH,
        help="documents longer than this many bytes are skipped by the trainer (default: %(default)s)",
    )
    tr.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="trainer threads (default: all CPUs)")
    tr.add_argument("--verbose", action="store_true", help="show SentencePiece's training log")
    tr.add_argument(
        "--caseops",
        action="store_true",
        help="train on CaseOps-transformed text with the four case markers as user-defined pieces (ids 4-7)",
    )

    ver = sub.add_parser(
        "verify",
        help="check a tokenized dataset folder against its manifest",
        description="Check every file listed in DIR/golf_lit_manifest.json (written by tokenize): present, "
        "nothing unlisted, sizes, header token counts and sha256 checksums.",
    )
    ver.add_argument("dir", help="dataset folder, e.g. data/datasets/fineweb10B_sp4096")
    ver.add_argument("--no-checksums", action="store_true", help="skip the sha256 checksums (sizes and counts only)")
    return parser


def _verify(args: argparse.Namespace) -> None:
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


def _download(args: argparse.Namespace) -> None:
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


def _tokenize(args: argparse.Namespace) -> None:
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


def _train_tokenizer(args: argparse.Namespace) -> None:
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
        argv: Arguments after ``data`` (default: ``sys.argv[1:]``).

    Returns:
        Exit status: 0 on success, 1 on a reported error, 2 on a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # -h or a usage error; argparse has already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        _COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"golf-lit data {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"golf-lit data {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
