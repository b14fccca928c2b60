"""The unigram baseline of a validation slice: the bpb of a model that ignores context (table + JSON).

    python bench/unigram_baseline.py                              # the smoke run's slice of the bundled sample
    python bench/unigram_baseline.py --val-max-tokens 0           # the whole bundled validation split

p(v) = (count_train(v) + 1) / (N_train + V) from the training files (add-one, so every token has p > 0), scored on
the same validation targets and bytes as training's validation (``load_validation_tokens`` + the byte tables).
A trained model has to beat this number to show it learned anything beyond token frequencies.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES, resolve
from golf_lit.data.shards import find_shards, load_shard, load_validation_tokens
from golf_lit.data.tokenizer import build_byte_luts, load_tokenizer


def unigram_bpb(train: np.ndarray, val: torch.Tensor, luts, vocab_size: int) -> dict:
    """Add-one unigram from ``train`` scored on the targets ``val[1:]`` (bytes from the tokenizer's tables)."""
    counts = np.bincount(train.astype(np.int64), minlength=vocab_size).astype(np.float64)
    logp = np.log((counts + 1.0) / (counts.sum() + vocab_size))
    x, y = val[:-1], val[1:]
    nll = float(-logp[y.numpy()].sum())
    nbytes = int(luts.token_bytes(x, y).sum())
    bpb = nll / math.log(2) / nbytes
    return {"tokens": int(y.numel()), "bytes": nbytes, "val_loss": nll / y.numel(), "val_bpb": bpb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-files", default=SAMPLE_TRAIN_FILES)
    p.add_argument("--val-files", default=SAMPLE_VAL_FILES)
    p.add_argument("--tokenizer", default=SAMPLE_TOKENIZER)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=256, help="as data.train_seq_len (smoke: 256)")
    p.add_argument("--val-max-tokens", type=int, default=32768, help="as data.val_max_tokens (smoke: 32768; 0 = all)")
    args = p.parse_args()
    train = np.concatenate([np.asarray(load_shard(f)) for f in find_shards(resolve(args.train_files))])
    val = load_validation_tokens(resolve(args.val_files), args.seq_len, args.val_max_tokens or None)
    luts = build_byte_luts(load_tokenizer(resolve(args.tokenizer)), args.vocab_size)
    row = {"train_tokens": int(train.size), **unigram_bpb(train, val, luts, args.vocab_size)}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
