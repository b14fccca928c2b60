"""The minimal scoring entry point: rebuild the model from an artifact and score it (non-overlapping roundtrip).

``golf_lit.runs.pack.build`` traces this module's imports to find the code a scorer needs and packs it into one file;
the model config and evaluation length are baked into that file, so they are counted in its bytes.
"""

from __future__ import annotations

import argparse
import time

import torch

from golf_lit.artifact.records import load_artifact_state_dict
from golf_lit.data.shards import load_validation_tokens
from golf_lit.data.tokenizer import build_byte_luts, load_tokenizer
from golf_lit.eval.strategies.base import EvalContext
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT


def main(argv: list[str], baked: dict) -> int:
    """Score ``--artifact`` on ``--val-files``; prints the record-shaped roundtrip lines.

    Args:
        argv: Command-line arguments.
        baked: ``{"model": non-default ModelConfig fields, "seq_len": int}`` fixed at pack time.
    """
    p = argparse.ArgumentParser()
    p.add_argument("--artifact", default="final_model.int6.ptz")
    p.add_argument("--val-files", default="./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin")
    p.add_argument("--tokenizer", default="./data/tokenizers/fineweb_1024_bpe.model")
    p.add_argument("--val-max-tokens", type=int, default=None)
    p.add_argument("--batch-seqs", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cfg = ModelConfig(**baked["model"])
    seq_len = baked["seq_len"]
    luts = build_byte_luts(load_tokenizer(args.tokenizer), cfg.vocab_size)
    tokens = load_validation_tokens(args.val_files, seq_len, args.val_max_tokens)
    model = GPT(cfg).to(device)
    model.load_state_dict(load_artifact_state_dict(args.artifact, model.state_dict()), strict=True)
    t0 = time.perf_counter()
    autocast = torch.bfloat16 if device.type == "cuda" else None
    ctx = EvalContext(model, tokens, luts, device=device, autocast_dtype=autocast)
    sums = Roundtrip(seq_len, args.batch_seqs).score(ctx)["model"]
    ms = 1000 * (time.perf_counter() - t0)
    print(f"final_int6_roundtrip val_loss:{sums.val_loss:.4f} val_bpb:{sums.val_bpb:.4f} eval_time:{ms:.0f}ms")
    print(f"final_int6_roundtrip_exact val_loss:{sums.val_loss!r} val_bpb:{sums.val_bpb!r}")
    return 0
