"""Export: quantize -> compress -> write atomically -> read back -> dequantize into a fresh model -> score.

Used by the ``ArtifactExport`` callback after ``fit`` and by ``golf-lit export --ckpt PATH``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from golf_lit.artifact import ArtifactBudgetError, CodeBytes, QuantConfig, load_artifact_state_dict, save_artifact
from golf_lit.artifact.budget import attempt_name, int5_warning
from golf_lit.artifact.calibrate import calibrate
from golf_lit.data.byte_source import load_byte_source
from golf_lit.data.paths import DEFAULT_TOKENIZER, DEFAULT_VAL_FILES, resolve
from golf_lit.data.shards import load_validation_tokens
from golf_lit.data.tokenizer import load_tokenizer
from golf_lit.data.vocab import require_vocab_match
from golf_lit.eval.loading import provenance, tokenizer_record
from golf_lit.eval.scorer import MODEL
from golf_lit.eval.strategies import EvalContext
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.io import FolderLock, atomic_write_bytes, atomic_write_json, atomic_write_text, require_writable_dir
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.train.checkpoint import load_checkpoint_model

ARTIFACT_NAME = "final_model.int6.ptz"


def _score(model: GPT, val_tokens: torch.Tensor, luts, seq_len: int, batch_seqs: int, device: torch.device):
    t0 = time.perf_counter()
    autocast = torch.bfloat16 if device.type == "cuda" else None
    ctx = EvalContext(model, val_tokens, luts, device=device, autocast_dtype=autocast)
    sums = Roundtrip(seq_len, batch_seqs).score(ctx)[MODEL]
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
    final = Path(out_dir)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    cfg: ModelConfig = model.cfg
    sp = load_tokenizer(resolve(tokenizer_path))
    require_vocab_match(cfg.vocab_size, int(sp.vocab_size()), tokenizer_path)
    val_tokens = load_validation_tokens(resolve(val_files), seq_len, val_max_tokens)
    luts = load_byte_source(resolve(val_files), sp, cfg.vocab_size, val_tokens.numel(),  # LUTs or CaseOps sidecar
                            tokenizer_path=tokenizer_path)
    final.mkdir(parents=True, exist_ok=True)  # after the inputs load: a bad tokenizer or shard leaves no folder
    with _staged(final) as out:  # every file below is written into the staging folder, moved in at the end
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
        demotion = int5_warning(result.int5_layers, quant.matrix_bits)
        if demotion:
            log(demotion)
            report["warnings"] = [demotion]
        log(f"Code size: {result.code_bytes} bytes")
        log(f"Total submission size: {result.bytes_total} bytes (limit {result.limit_bytes})")

        fresh = GPT(cfg).to(device)
        fresh.load_state_dict(load_artifact_state_dict(out / ARTIFACT_NAME, fresh.state_dict()), strict=True)
        sums, secs = _score(fresh, val_tokens, luts, seq_len, batch_seqs, device)
        log(f"final_int6_roundtrip val_loss:{sums.val_loss:.4f} val_bpb:{sums.val_bpb:.4f} "
            f"eval_time:{1000 * secs:.0f}ms")
        log(f"final_int6_roundtrip_exact val_loss:{sums.val_loss:.8f} val_bpb:{sums.val_bpb:.8f}")

        summary = result.summary()
        report.update(
            val_bpb=sums.val_bpb,
            val_loss=sums.val_loss,
            val_tokens=int(sums.token_count),
            val_bytes=int(sums.byte_count),
            val_files=val_files,
            eval=f"non-overlapping (roundtrip), seq_len {seq_len}",
            **{k: summary[k] for k in ("bytes_total", "bytes_model", "bytes_code", "limit_bytes", "fits", "zstd_level",
                                       "int5_layers")},
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
                                                "quant": quant.to_dict(), "tokenizer": tokenizer_record(tokenizer_path),
                                                **(extra_config or {})})
    return report


@contextlib.contextmanager
def _staged(out: Path):
    """A temporary folder inside ``out`` whose files move into ``out`` when the block succeeds, the artifact last.

    An interrupted export (Ctrl-C, SIGTERM, a full disk) never leaves an artifact without its config.json and
    submission.json, and never touches the previous export's files. An over-budget blob is kept beside the good
    artifact (as ``save_artifact`` does); the folder is always removed.
    """
    stage = Path(tempfile.mkdtemp(prefix=".export.", suffix=".tmp", dir=out))
    try:
        yield stage
        for name in sorted(p.name for p in stage.iterdir() if p.name != ARTIFACT_NAME) + [ARTIFACT_NAME]:
            os.replace(stage / name, out / name)
    except ArtifactBudgetError as exc:
        kept = out / exc.over_budget_path.name
        os.replace(exc.over_budget_path, kept)
        raise ArtifactBudgetError(str(exc).replace(str(stage), str(out)), exc.result, kept) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@dataclass
class ExportOptions:
    """golf-lit export: the checkpoint, where the artifact goes and how it is scored."""

    ckpt: str
    """Lightning checkpoint written by golf-lit fit (e.g. last.ckpt)."""
    out: str | None = None
    """Output directory (default: <checkpoint dir>/artifact)."""
    no_ema: bool = False
    """Export the live weights even if EMA weights exist."""
    val_files: str | None = None
    """Validation shards (default: the checkpoint's data config)."""
    tokenizer: str | None = None
    """Tokenizer model (default: the checkpoint's data config)."""
    val_max_tokens: int | None = None
    """Score only the first N validation tokens (default: the checkpoint's data config)."""
    fit_config: str | None = None
    """The run's resolved fit config (YAML) to bake into train_gpt.py, the counted code (default: the model,
    optimizer and data of the checkpoint with the trainer's defaults)."""
    eval_args: str | None = None
    """golf-lit eval options of the claimed evaluation, baked into train_gpt.py (one string)."""
    lqer_sym: bool = False
    """Same as --lqer_asym false: symmetric LQER factors (kept for earlier command lines)."""
    training_cap_seconds: float | None = None
    """Training cap, to report whether training + GPTQ calibration stayed within it."""
    no_pre_quant_eval: bool = False
    """Skip scoring the unquantized model."""
    device: str | None = None
    """Where to score (default: cuda when available, else cpu)."""


QUANT_TITLE = "quantization (every QuantConfig field; default: the checkpoint's own, recorded by ArtifactExport)"


def build_parser():
    """The ``golf-lit export`` parser: ExportOptions and every QuantConfig field (``--gptq``, ``--zstd_levels``...)."""
    from golf_lit.options import add_options, command_parser

    parser = command_parser("golf-lit export", description="Turn a training checkpoint into a scored challenge "
                            "artifact (quantize, compress, write, read back, score).")
    add_options(parser, ExportOptions)
    add_options(parser, QuantConfig, title=QUANT_TITLE)
    return parser


def recorded_quant(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The quantization config the run's ``ArtifactExport`` callback recorded in the checkpoint (None if none)."""
    names = {f.name for f in fields(QuantConfig)}
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("ArtifactExport") and isinstance(state, dict) and isinstance(state.get("quant"), dict):
            return {k: v for k, v in state["quant"].items() if k in names}
    return None


def main(argv: list[str] | None = None) -> int:
    """``golf-lit export --ckpt PATH``: turn a training checkpoint into a scored challenge artifact.

    Quantization follows the checkpoint's own configuration (the ``quant`` block of the run's ``ArtifactExport``
    callback, recorded in the checkpoint); every QuantConfig field given on the command line overrides it.
    """
    from golf_lit.options import build, parse

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    opts: ExportOptions = build(ExportOptions, parse(parser, argv))
    out = opts.out or str(Path(opts.ckpt).resolve().parent / "artifact")
    require_writable_dir(out, "--out")
    model, ckpt = load_checkpoint_model(opts.ckpt, use_ema=not opts.no_ema)
    recorded = recorded_quant(ckpt)
    if recorded is not None:
        parser.set_defaults(recorded)  # the run's own quant block; flags given on the command line still win
    ns = parse(parser, argv)
    overrides: dict[str, Any] = {}
    if opts.lqer_sym:
        overrides["lqer_asym"] = False
    quant: QuantConfig = build(QuantConfig, ns, **overrides)
    source = "the checkpoint's ArtifactExport config" if recorded is not None else "QuantConfig defaults"
    print(f"quant: {source}, command-line flags over it")
    data_hp = ckpt.get("datamodule_hyper_parameters", {})
    fit_config = None
    if opts.fit_config is not None:
        try:
            fit_config = yaml.safe_load(Path(opts.fit_config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"--fit_config {opts.fit_config}: not a readable YAML config ({exc})") from None
        if not isinstance(fit_config, dict):
            raise ValueError(f"--fit_config {opts.fit_config}: expected a mapping (a golf-lit fit config)")
    optim = ckpt.get("hyper_parameters", {}).get("optim")
    clock = next((v for k, v in ckpt.get("callbacks", {}).items() if k.startswith("WallClockLimit")), None)
    training_time = (
        TrainingTime(float(clock["elapsed_ms"]) / 1000.0, opts.training_cap_seconds)
        if isinstance(clock, dict) and "elapsed_ms" in clock
        else None
    )
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    lock = FolderLock(out, "--out").acquire()  # a second export into the same folder is refused by name
    try:
        report = export_model(
            model.to(device),
            out,
            quant=quant,
            val_files=opts.val_files or data_hp.get("val_files", DEFAULT_VAL_FILES),
            tokenizer_path=opts.tokenizer or data_hp.get("tokenizer_path", DEFAULT_TOKENIZER),
            seq_len=int(data_hp.get("train_seq_len", 2048)),
            val_max_tokens=opts.val_max_tokens if opts.val_max_tokens is not None else data_hp.get("val_max_tokens"),
            eval_pre_quant=not opts.no_pre_quant_eval,
            extra_config={"checkpoint": str(opts.ckpt), "data": data_hp,
                          **({"optim": optim} if isinstance(optim, dict) else {})},
            train_files=data_hp.get("train_files"),
            training_time=training_time,
            fit_config=fit_config,
            eval_args=shlex.split(opts.eval_args) if opts.eval_args else None,
        )
    finally:
        lock.release()
    print(f"wrote {out}/{ARTIFACT_NAME} ({report['bytes_total']} bytes with code) and {out}/submission.json")
    return 0
