"""Export: quantize -> compress -> write atomically -> read back -> dequantize into a fresh model -> score.

Used by the ``ArtifactExport`` callback after ``fit`` and by ``golf-lit export --ckpt PATH``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from golf_lit.artifact import CodeBytes, QuantConfig, load_artifact_state_dict, save_artifact
from golf_lit.artifact.budget import attempt_name
from golf_lit.artifact.calibrate import calibrate
from golf_lit.data.byte_source import load_byte_source
from golf_lit.data.paths import DEFAULT_TOKENIZER, DEFAULT_VAL_FILES, resolve
from golf_lit.data.shards import load_validation_tokens
from golf_lit.data.tokenizer import load_tokenizer
from golf_lit.data.vocab import require_vocab_match
from golf_lit.eval.loading import provenance
from golf_lit.eval.strategies.roundtrip import score_roundtrip
from golf_lit.io import atomic_write_bytes, atomic_write_json, atomic_write_text, require_writable_dir
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.options import normalize_options
from golf_lit.train.checkpoint import load_checkpoint_model

ARTIFACT_NAME = "final_model.int6.ptz"


def _score(model: GPT, val_tokens: torch.Tensor, luts, seq_len: int, batch_seqs: int, device: torch.device):
    t0 = time.perf_counter()
    autocast = torch.bfloat16 if device.type == "cuda" else None
    sums = score_roundtrip(model, val_tokens, luts, seq_len, batch_seqs, device, autocast_dtype=autocast)
    return sums, time.perf_counter() - t0


def minimal_fit_config(cfg: ModelConfig, extra_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fit config from what an export knows without the run's config: the model, its optimizer and data
    settings (``extra_config`` keys ``optim`` and ``data``), the trainer's defaults."""
    extra = extra_config or {}
    model: dict[str, Any] = cfg.to_dict()
    if isinstance(extra.get("optim"), dict):
        model["optim"] = dict(extra["optim"])
    return {"model": model, "data": dict(extra.get("data") or {})}


def _code_bytes(quant: QuantConfig, out: Path, report: dict[str, Any], fit_config: dict[str, Any],
                eval_args: list[str] | None) -> tuple[CodeBytes | None, str]:
    """Code bytes and their convention.

    ``auto`` (the default): the run's ``train_gpt.py`` (golf_lit.runs.pack) is generated from ``fit_config`` and
    ``eval_args``, written beside the artifact with its ``requirements.txt``, and its size is the code bytes;
    the report's ``code`` entry says what went into it. A number or a file path is counted as given.
    """
    spec = quant.code_bytes
    if spec != "auto":
        return None, "number" if isinstance(spec, int) else "file"
    from golf_lit.runs.pack.build import REQUIREMENTS_NAME, SCRIPT_NAME, build_record_script

    packed = build_record_script(fit_config, eval_args)
    atomic_write_bytes(out / SCRIPT_NAME, packed.script)
    atomic_write_text(out / REQUIREMENTS_NAME, "".join(f"{r}\n" for r in packed.requirements))
    report["code"] = packed.summary()
    return CodeBytes(len(packed.script), "auto", ((SCRIPT_NAME, len(packed.script)),)), "train_gpt"


@dataclass(frozen=True)
class TrainingTime:
    """The training clock at export time (``WallClockLimit``): what GPTQ calibration is added to.

    Attributes:
        train_s: Training-loop seconds so far.
        cap_s: The training cap in seconds (None = no cap).
        reserve_s: Seconds the loop stopped early to leave for calibration (``WallClockLimit.reserve_seconds``).
    """

    train_s: float
    cap_s: float | None = None
    reserve_s: float = 0.0


def _training_budget(tt: TrainingTime | None, calibration_s: float, log) -> bool | None:
    """Calibration reads training data, so it is training time (docs/top-stack.md §5.1, §10.7)."""
    if tt is None:
        return None
    total = tt.train_s + calibration_s
    within = tt.cap_s is None or total <= tt.cap_s
    cap = f"{tt.cap_s:.1f}s" if tt.cap_s is not None else "none"
    log(
        f"training_budget train:{tt.train_s:.1f}s calibration:{calibration_s:.1f}s total:{total:.1f}s "
        f"cap:{cap} reserve:{tt.reserve_s:.1f}s within_training_budget:{within}"
    )
    if not within:
        log(
            f"WARNING: training + GPTQ calibration took {total:.1f}s, past the {cap} training cap: raise "
            "WallClockLimit.reserve_seconds or lower quant.gptq_calibration_batches"
        )
    return within


def export_model(
    model: GPT,
    out_dir: str | Path,
    *,
    quant: QuantConfig | None = None,
    val_files: str = DEFAULT_VAL_FILES,
    tokenizer_path: str = DEFAULT_TOKENIZER,
    seq_len: int = 2048,
    batch_seqs: int = 32,
    val_max_tokens: int | None = None,
    eval_pre_quant: bool = True,
    device: torch.device | str | None = None,
    extra_config: dict[str, Any] | None = None,
    extra_report: dict[str, Any] | None = None,
    log=print,
    train_files: str | None = None,
    training_time: TrainingTime | None = None,
    fit_config: dict[str, Any] | None = None,
    eval_args: list[str] | None = None,
) -> dict[str, Any]:
    """Write ``final_model.int6.ptz``, ``submission.json`` and ``config.json`` into ``out_dir``.

    The artifact is read back from disk and dequantized into a fresh model, which is what gets scored
    (non-overlapping eval, docs/record-stack.md §10.1), exactly as the challenge will see it.

    Args:
        model: The trained GPT (EMA weights already swapped in, if any).
        out_dir: Output directory.
        quant: Quantization/compression options.
        val_files: Validation shards (``sample:`` prefix allowed).
        tokenizer_path: SentencePiece model for the byte tables.
        seq_len: Evaluation sequence length.
        batch_seqs: Sequences per forward when scoring.
        val_max_tokens: Score only the first N validation tokens (None = all).
        eval_pre_quant: Also score the model before quantization (to show the quantization gap).
        device: Where to score (default: the model's device).
        extra_config: More resolved configuration to store in ``config.json`` (e.g. the training config).
        extra_report: More entries for ``submission.json`` (e.g. the training mode, seconds and fingerprint).
        log: Where record-shaped lines go.
        train_files: Training shards, for GPTQ calibration (``quant.gptq``); never the validation files.
        training_time: The training clock, to report whether training + calibration stayed within the cap.
        fit_config: The run's resolved fit config, baked into ``train_gpt.py`` (``quant.code_bytes: auto``);
            default: :func:`minimal_fit_config`.
        eval_args: ``golf-lit eval`` options of the claimed evaluation, baked into ``train_gpt.py``.

    Returns:
        The report written to ``submission.json``.

    Raises:
        golf_lit.artifact.ArtifactBudgetError: No variant fits; the last blob is kept under an over-budget name.
    """
    quant = quant or QuantConfig()
    out = Path(out_dir)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    cfg: ModelConfig = model.cfg
    sp = load_tokenizer(resolve(tokenizer_path))
    require_vocab_match(cfg.vocab_size, int(sp.vocab_size()), tokenizer_path)
    val_tokens = load_validation_tokens(resolve(val_files), seq_len, val_max_tokens)
    luts = load_byte_source(resolve(val_files), sp, cfg.vocab_size, val_tokens.numel())  # LUTs or CaseOps sidecar
    out.mkdir(parents=True, exist_ok=True)  # after the inputs load: a bad tokenizer or shard leaves no folder

    report: dict[str, Any] = {"artifact": ARTIFACT_NAME}
    if eval_pre_quant:
        sums, secs = _score(model, val_tokens, luts, seq_len, batch_seqs, device)
        log(f"pre_quant val_loss:{sums.val_loss:.4f} val_bpb:{sums.val_bpb:.4f} eval_time:{1000 * secs:.0f}ms")
        report.update(pre_quant_val_loss=sums.val_loss, pre_quant_val_bpb=sums.val_bpb)

    hessians, calibration_s = None, 0.0
    if quant.gptq:
        if train_files is None:
            raise ValueError("quant.gptq: calibration needs the training files (train_files); none were given")
        t0 = time.perf_counter()
        hessians = calibrate(model, resolve(train_files), quant, seq_len)
        calibration_s = time.perf_counter() - t0
        log(f"gptq:calibrated {len(hessians)} Hessians on {quant.gptq_calibration_batches} training batches "
            f"in {calibration_s:.1f}s")  # fmt: skip
    within = _training_budget(training_time, calibration_s, log)

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if fit_config is None:
        fit_config = minimal_fit_config(cfg, {"data": {"val_files": val_files, "tokenizer_path": tokenizer_path,
                                                       "train_seq_len": seq_len}, **(extra_config or {})})
    code, convention = _code_bytes(quant, out, report, fit_config, eval_args)
    t0 = time.perf_counter()
    result = save_artifact(state, out / ARTIFACT_NAME, quant, code_bytes=code, hessians=hessians)
    export_s = time.perf_counter() - t0
    log(
        f"Serialized model int6+{result.compressor}: {result.bytes_model} bytes "
        f"({attempt_name(result.compressor, result.level)}"
        + (f", int5 layers {list(result.int5_layers)})" if result.int5_layers else ")")
    )
    log(f"Code size: {result.code_bytes} bytes")
    log(f"Total submission size: {result.bytes_total} bytes (limit {result.limit_bytes})")

    fresh = GPT(cfg).to(device)
    fresh.load_state_dict(load_artifact_state_dict(out / ARTIFACT_NAME, fresh.state_dict()), strict=True)
    sums, secs = _score(fresh, val_tokens, luts, seq_len, batch_seqs, device)
    log(f"final_int6_roundtrip val_loss:{sums.val_loss:.4f} val_bpb:{sums.val_bpb:.4f} eval_time:{1000 * secs:.0f}ms")
    log(f"final_int6_roundtrip_exact val_loss:{sums.val_loss:.8f} val_bpb:{sums.val_bpb:.8f}")

    summary = result.summary()
    report.update(
        val_bpb=sums.val_bpb,
        val_loss=sums.val_loss,
        val_tokens=int(sums.token_count),
        val_bytes=int(sums.byte_count),
        val_files=val_files,
        eval=f"non-overlapping (roundtrip), seq_len {seq_len}",
        **{
            k: summary[k]
            for k in ("bytes_total", "bytes_model", "bytes_code", "limit_bytes", "fits", "zstd_level", "int5_layers")
        },
        **({"compressor": result.compressor} if result.compressor != "zstd" else {}),
        code_files=summary["code_files"],
        code_convention=convention,
        timings={
            **({"train_s": training_time.train_s} if training_time else {}),
            **({"calibration_s": calibration_s} if quant.gptq else {}),
            **summary["timings"],
            "export_s": export_s,
            "roundtrip_eval_s": secs,
        },
        **({"within_training_budget": within} if within is not None else {}),
        sizes_tried=summary["sizes_tried"],
        per_tensor=summary["per_tensor"],
        **(extra_report or {}),
    )
    atomic_write_json(out / "submission.json", report)
    atomic_write_json(out / "config.json", {**provenance(out / ARTIFACT_NAME), "model": cfg.to_dict(),
                                            "quant": quant.to_dict(), **(extra_config or {})})
    return report



def main(argv: list[str] | None = None) -> int:
    """``golf-lit export --ckpt PATH``: turn a training checkpoint into a scored challenge artifact.

    Options are spelled with underscores like every golf-lit command (``--val_files``); hyphens are accepted.
    """
    parser = argparse.ArgumentParser(prog="golf-lit export", description=main.__doc__)
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint written by golf-lit fit (e.g. last.ckpt)")
    parser.add_argument("--out", default=None, help="output directory (default: <checkpoint dir>/artifact)")
    parser.add_argument("--no_ema", action="store_true", help="export the live weights even if EMA weights exist")
    parser.add_argument("--val_files", default=None, help="validation shards (default: the checkpoint's data config)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer model (default: the checkpoint's data config)")
    parser.add_argument("--val_max_tokens", type=int, default=None, help="score only the first N validation tokens")
    parser.add_argument("--zstd_levels", type=int, nargs="+", default=None, help="zstd levels, in order")
    parser.add_argument("--code_bytes", default="auto",
                        help="'auto' (size of the train_gpt.py written beside the artifact), a file path, or a number")
    parser.add_argument("--fit_config", default=None,
                        help="the run's resolved fit config (YAML) to bake into train_gpt.py (default: the model and "
                        "data of the checkpoint, the trainer's defaults)")
    parser.add_argument("--eval_args", default=None,
                        help="golf-lit eval options of the claimed evaluation, baked into train_gpt.py (one string)")
    parser.add_argument("--gptq_lite", action="store_true", help="per-matrix clip search for int6 (2026-03-22 record)")
    top = parser.add_argument_group("leaderboard-top quantization (docs/top-stack.md §5)")
    top.add_argument("--gptq", action="store_true", help="full-Hessian GPTQ calibrated on training batches")
    top.add_argument("--gptq_calibration_batches", type=int, default=16)
    top.add_argument("--gptq_calibration_tokens", type=int, default=98_304, help="tokens per calibration batch")
    top.add_argument("--sdclip", action="store_true", help="row scale k*std(row)/qmax (k per kind below)")
    top.add_argument("--mlp_clip_sigmas", type=float, default=11.5)
    top.add_argument("--attn_clip_sigmas", type=float, default=13.0)
    top.add_argument("--embed_clip_sigmas", type=float, default=14.0)
    top.add_argument("--embed_bits", type=int, default=None, help="embeddings on the matrix path at this width (7)")
    top.add_argument("--lqer_rank", type=int, default=0, help="LQER correction rank (0 = off)")
    top.add_argument("--lqer_top_k", type=int, default=3)
    top.add_argument("--lqer_sym", action="store_true", help="symmetric int4 factors instead of 2/4-bit asym")
    top.add_argument("--quant_gate", action="store_true", help="int8 rows for small *.attn_gate_w")
    top.add_argument("--compressor", default="zstd", help="zstd | brotli | lzma | pergroup, or several: pergroup,brotli")  # noqa: E501
    top.add_argument("--pergroup_backend", default="auto", help="auto | lrzip | lzma | brotli | zstd")
    top.add_argument("--training_cap_seconds", type=float, default=None,
                     help="training cap, to report whether training + calibration stayed within it")  # fmt: skip
    parser.add_argument("--no_pre_quant_eval", action="store_true", help="skip scoring the unquantized model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(normalize_options(list(sys.argv[1:] if argv is None else argv),
                                               set(parser._option_string_actions)))

    out = args.out or str(Path(args.ckpt).resolve().parent / "artifact")
    require_writable_dir(out, "--out")
    model, ckpt = load_checkpoint_model(args.ckpt, use_ema=not args.no_ema)
    data_hp = ckpt.get("datamodule_hyper_parameters", {})
    code_bytes: int | str = int(args.code_bytes) if args.code_bytes.isdigit() else args.code_bytes
    fit_config = None
    if args.fit_config is not None:
        try:
            fit_config = yaml.safe_load(Path(args.fit_config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"--fit_config {args.fit_config}: not a readable YAML config ({exc})") from None
        if not isinstance(fit_config, dict):
            raise ValueError(f"--fit_config {args.fit_config}: expected a mapping (a golf-lit fit config)")
    quant = QuantConfig(
        code_bytes=code_bytes,
        gptq_lite=args.gptq_lite,
        gptq=args.gptq,
        gptq_calibration_batches=args.gptq_calibration_batches,
        gptq_calibration_tokens=args.gptq_calibration_tokens,
        sdclip=args.sdclip,
        mlp_clip_sigmas=args.mlp_clip_sigmas,
        attn_clip_sigmas=args.attn_clip_sigmas,
        embed_clip_sigmas=args.embed_clip_sigmas,
        embed_bits=args.embed_bits,
        lqer_rank=args.lqer_rank,
        lqer_top_k=args.lqer_top_k,
        lqer_asym=not args.lqer_sym,
        quant_gate=args.quant_gate,
        compressor=args.compressor,
        pergroup_backend=args.pergroup_backend,
        **({"zstd_levels": args.zstd_levels} if args.zstd_levels else {}),
    )
    clock = next((v for k, v in ckpt.get("callbacks", {}).items() if k.startswith("WallClockLimit")), None)
    training_time = (
        TrainingTime(float(clock["elapsed_ms"]) / 1000.0, args.training_cap_seconds)
        if isinstance(clock, dict) and "elapsed_ms" in clock
        else None
    )
    report = export_model(
        model.to(args.device),
        out,
        quant=quant,
        val_files=args.val_files or data_hp.get("val_files", DEFAULT_VAL_FILES),
        tokenizer_path=args.tokenizer or data_hp.get("tokenizer_path", DEFAULT_TOKENIZER),
        seq_len=int(data_hp.get("train_seq_len", 2048)),
        val_max_tokens=args.val_max_tokens if args.val_max_tokens is not None else data_hp.get("val_max_tokens"),
        eval_pre_quant=not args.no_pre_quant_eval,
        extra_config={"checkpoint": str(args.ckpt), "data": data_hp,
                      **({"optim": ckpt["hyper_parameters"]["optim"]}
                         if isinstance(ckpt.get("hyper_parameters", {}).get("optim"), dict) else {})},
        train_files=data_hp.get("train_files"),
        training_time=training_time,
        fit_config=fit_config,
        eval_args=shlex.split(args.eval_args) if args.eval_args else None,
    )
    print(f"wrote {out}/{ARTIFACT_NAME} ({report['bytes_total']} bytes with code) and {out}/submission.json")
    return 0
