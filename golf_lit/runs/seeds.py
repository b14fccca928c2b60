"""``golf-lit seeds``: the same configuration trained and scored once per seed, a results table and a significance test.

Each seed runs the real CLI in a subprocess (``golf-lit fit`` then ``golf-lit eval``) in its own directory
``OUT/seed_<S>/`` (layout in :mod:`golf_lit.runs.rundir`), from one resolved config that differs between seeds only in
``seed_everything`` and its output paths. The table (``OUT/seeds.md`` and ``OUT/seeds.json``) lists per-seed
val_bpb, their mean and std; with ``--baseline`` it adds a one-sided Welch t-test of "improves on the baseline by
at least delta", the challenge's acceptance rule (delta 0.005 nats, p < 0.01).

Examples::

    golf-lit seeds --config configs/record.yaml --seeds 1337 42 7 --out runs/seeds_record
    golf-lit seeds --config configs/smoke.yaml --seeds 1 2 3 --fixed_steps 20 --model.xsa_last_n 1 \\
        --baseline 2.71 2.72 2.70 --eval_args "--strategy roundtrip,sliding --sliding.stride 64"
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from golf_lit.io import atomic_write_json, atomic_write_text
from golf_lit.options import add_options, build, command_parser, parse, split_args
from golf_lit.runs.rundir import (
    ARTIFACT_DIR,
    EVAL_LOG,
    EVAL_REPORT,
    FIT_CONFIG,
    FIT_CONSOLE,
    Run,
    check_same_config,
    class_name,
    dump_config,
    golf_lit_command,
    load_run,
    relocate_outputs,
    require_success,
    run_command,
)
from golf_lit.runs.stats import ImprovementTest, improvement_test, mean, nats_per_token_to_bpb, std

DEFAULT_EVAL_ARGS = "--strategy roundtrip --progress false"
CHALLENGE_DELTA_NATS = 0.005
CHALLENGE_ALPHA = 0.01


def resolve_fit_config(config: str, overrides: list[str]) -> dict[str, Any]:
    """The resolved ``golf-lit fit`` config for ``--config config overrides...`` (LightningCLI's --print_config)."""
    cmd = golf_lit_command("fit", "--config", config, *overrides, "--print_config")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ValueError(f"--config {config}: golf-lit fit could not resolve it: {last}")
    return yaml.safe_load(out.stdout)


def seed_config(base: dict[str, Any], seed: int, run_dir: Path, fixed_steps: int | None = None,
                eval_args: list[str] | None = None) -> dict[str, Any]:
    """The config of one seed: ``base`` with the seed and every output inside ``run_dir``
    (:func:`golf_lit.runs.rundir.relocate_outputs`); with ``fixed_steps``, ``trainer.max_steps`` set and the
    wall-clock cap off (fixed-step mode); with ``eval_args``, the claimed evaluation (``golf-lit eval`` options)
    that the export bakes into the run's ``train_gpt.py``."""
    cfg = relocate_outputs(base, run_dir)
    cfg["seed_everything"] = int(seed)
    trainer = cfg["trainer"]
    if fixed_steps is not None:
        trainer["max_steps"] = int(fixed_steps)
    for cb in trainer.get("callbacks") or []:
        args = cb.get("init_args") if isinstance(cb, dict) else None
        name = class_name(cb)
        if name == "ArtifactExport" and eval_args is not None and args is not None:
            args["eval_args"] = list(eval_args)
        if name == "WallClockLimit" and fixed_steps is not None and args is not None:
            args["max_wallclock_seconds"] = 0
    return cfg


def run_seed(base: dict[str, Any], seed: int, run_dir: Path, fixed_steps: int | None, eval_args: list[str],
             log=print) -> Run:
    """Train and score one seed in ``run_dir`` (reused when it already holds a finished run of the same config)."""
    cfg = seed_config(base, seed, run_dir, fixed_steps, eval_args)
    cfg_path = run_dir / FIT_CONFIG
    if (run_dir / EVAL_REPORT).is_file() and cfg_path.is_file() and yaml.safe_load(cfg_path.read_text()) == cfg:
        log(f"seed {seed}: already finished in {run_dir}, reusing it")
        return load_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, dump_config(cfg))
    log(f"seed {seed}: training ({run_dir / FIT_CONSOLE}; fit writes its own train.log there)")
    status = run_command(golf_lit_command("fit", "--config", str(cfg_path)), run_dir / FIT_CONSOLE)
    require_success(status, run_dir / FIT_CONSOLE, f"seed {seed}: fit")
    artifact = run_dir / ARTIFACT_DIR / "final_model.int6.ptz"
    log(f"seed {seed}: scoring ({run_dir / EVAL_LOG})")
    cmd = golf_lit_command("eval", "--artifact", str(artifact), "--report", str(run_dir / EVAL_REPORT), *eval_args)
    require_success(run_command(cmd, run_dir / EVAL_LOG), run_dir / EVAL_LOG, f"seed {seed}: eval")
    return load_run(run_dir)


def baseline_values(items: list[str]) -> list[float]:
    """Baseline val_bpb values from numbers and/or JSON files (a seeds.json / submission.json with ``runs``,
    a list of numbers, or one run's submission.json with ``val_bpb``)."""
    values: list[float] = []
    for item in items:
        try:
            values.append(float(item))
            continue
        except ValueError:
            pass
        path = Path(item)
        if not path.is_file():
            raise ValueError(f"--baseline: {item!r} is neither a number nor an existing JSON file")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"--baseline: {path} is not readable JSON ({exc})") from exc
        if isinstance(data, dict) and isinstance(data.get("runs"), list):
            values.extend(float(r["val_bpb"]) for r in data["runs"])
        elif isinstance(data, list):
            values.extend(float(v) for v in data)
        elif isinstance(data, dict) and "val_bpb" in data:
            values.append(float(data["val_bpb"]))
        else:
            raise ValueError(f"--baseline: {path} has no 'runs' list, number list or 'val_bpb'")
    return values


def run_row(run: Run, result_name: str | None = None) -> dict[str, Any]:
    """One table row: seed, training mode/seconds/steps, the scored result, eval seconds and bytes."""
    r = run.result(result_name)
    training = run.report.get("training") or {}
    return {
        "seed": run.seed,
        "run": str(run.path),
        "result": r["name"],
        "val_loss": r["val_loss"],
        "val_bpb": r["val_bpb"],
        "tokens": r.get("tokens"),
        "bytes": r.get("bytes"),
        "mode": training.get("mode"),
        "steps": training.get("steps"),
        "train_s": training.get("seconds"),
        "eval_s": run.eval_seconds(),
        "bytes_total": run.report.get("bytes_total"),
        "bytes_code": run.report.get("bytes_code"),
        "code_convention": run.report.get("code_convention"),
    }


def summarize(rows: list[dict[str, Any]], baseline: list[float] | None = None, delta_nats: float = CHALLENGE_DELTA_NATS,
              alpha: float = CHALLENGE_ALPHA) -> dict[str, Any]:
    """Mean and std of val_bpb/val_loss and, given a baseline, the improvement test (all in val_bpb)."""
    bpb = [r["val_bpb"] for r in rows]
    loss = [r["val_loss"] for r in rows]
    out: dict[str, Any] = {
        "n": len(rows),
        "val_bpb_mean": mean(bpb),
        "val_bpb_std": std(bpb) if len(bpb) > 1 else None,
        "val_bpb_std_population": std(bpb, ddof=0),
        "val_loss_mean": mean(loss),
        "val_loss_std": std(loss) if len(loss) > 1 else None,
    }
    if baseline:
        tokens, nbytes = rows[0].get("tokens"), rows[0].get("bytes")
        if not tokens or not nbytes:
            raise ValueError("--delta-nats: the runs' token and byte counts are unknown, so nats cannot be converted")
        delta_bpb = nats_per_token_to_bpb(delta_nats, tokens, nbytes)
        test: ImprovementTest = improvement_test(bpb, baseline, delta_bpb, alpha, delta_nats=delta_nats)
        out["baseline"] = {"val_bpb": list(baseline), "mean": mean(baseline)}
        out["test"] = {**test.to_dict(), "tokens_per_byte": tokens / nbytes,
                       "conversion": "delta_bpb = delta_nats * tokens / (bytes * ln 2)"}
    return out


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def markdown_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The per-seed table with mean and std, and the significance test when there is one."""
    lines = [
        "| seed | val_bpb | val_loss | mode | steps | train s | eval s | bytes_total |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['val_bpb']:.8f} | {r['val_loss']:.8f} | {r['mode'] or ''} | {_fmt(r['steps'], 'd')} "
            f"| {_fmt(r['train_s'], '.1f')} | {_fmt(r['eval_s'], '.1f')} | {_fmt(r['bytes_total'], ',')} |"
        )
    s = summary
    lines.append(
        f"| **mean** | **{s['val_bpb_mean']:.8f}** | {s['val_loss_mean']:.8f} | | | | | |"
    )
    lines += [
        "",
        f"val_bpb over {s['n']} seeds: mean {s['val_bpb_mean']:.8f}, std {_fmt(s['val_bpb_std'], '.8f')} "
        f"(sample, n-1; population std {s['val_bpb_std_population']:.8f}). Scored result: {rows[0]['result']}.",
    ]
    if "test" in s:
        t = s["test"]
        verdict = "significant" if t["significant"] else "NOT significant"
        lines += [
            "",
            f"Improvement over the baseline (mean {s['baseline']['mean']:.8f} over {t['n_baseline']} runs): "
            f"{t['improvement']:.8f} bpb. One-sided Welch t-test of \"improves by more than "
            f"{t['delta_nats']} nats per token\" on val_bpb, with delta_bpb = delta_nats x tokens / (bytes x ln 2) = "
            f"{t['delta']:.8f} ({t['tokens_per_byte']:.6f} tokens per byte): t = {t['t']:.4f}, df = {t['df']:.2f}, "
            f"p = {t['p_value']:.3g} -> {verdict} at alpha = {t['alpha']}.",
        ]
    return "\n".join(lines) + "\n"


def write_table(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """Write ``seeds.md`` and ``seeds.json`` into ``out``; returns the Markdown."""
    text = markdown_table(rows, summary)
    atomic_write_text(out / "seeds.md", text)
    atomic_write_json(out / "seeds.json", {"runs": rows, "summary": summary})
    return text


@dataclass
class SeedsOptions:
    """golf-lit seeds: one config, trained and scored once per seed."""

    config: str
    """golf-lit fit config (YAML)."""
    seeds: list[int]
    """Seeds, e.g. 1337 42 7."""
    out: str | None = None
    """Output directory (default: runs/seeds_<config name>)."""
    fixed_steps: int | None = None
    """Fixed-step mode: trainer.max_steps = N with the wall-clock cap off."""
    eval_args: str = DEFAULT_EVAL_ARGS
    """golf-lit eval options, one string."""
    result: str | None = None
    """Eval result name to tabulate (default: the last one in eval.json)."""
    baseline: list[str] | None = None
    """Baseline val_bpb numbers and/or seeds.json files."""
    delta_nats: float = CHALLENGE_DELTA_NATS
    """Required improvement, nats per token."""
    alpha: float = CHALLENGE_ALPHA
    """Significance level."""

    def __post_init__(self) -> None:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds: repeated seed in {self.seeds}")
        if self.fixed_steps is not None and self.fixed_steps < 1:
            raise ValueError(f"--fixed_steps: must be >= 1, got {self.fixed_steps}")


def build_parser():
    """The ``golf-lit seeds`` parser (SeedsOptions); other options (``--model.*``...) are passed to golf-lit fit."""
    parser = command_parser("golf-lit seeds", __doc__.split("\n\n")[0],
                            epilog="Other arguments (--model.*, --trainer.*, --data.*) are passed to golf-lit fit.")
    add_options(parser, SeedsOptions)
    return parser


def check_eval_windows(base: dict[str, Any], eval_args: list[str]) -> None:
    """Refuse ``--eval-args`` whose sliding window cannot work with the run's sequence length, before training.

    The eval takes ``sliding.seq_len`` from the artifact's ``data.train_seq_len`` unless ``--eval-args`` sets it;
    with a short ``train_seq_len`` the default stride (64) no longer fits (``sliding.stride <= seq_len``).
    """
    from golf_lit.eval.strategies.sliding import SlidingConfig
    from golf_lit.runs.pack.build import eval_option

    def option(name: str) -> int | None:
        found = eval_option(eval_args, name)
        if found is None:
            return None
        try:
            return int(found)
        except ValueError:
            raise ValueError(f"--eval-args: {name} needs an integer, got {found!r}") from None

    seq_len = option("--sliding.seq_len") or ((base.get("data") or {}).get("train_seq_len")) or SlidingConfig.seq_len
    stride = option("--sliding.stride") or SlidingConfig.stride
    try:
        SlidingConfig(seq_len=int(seq_len), stride=int(stride))
    except ValueError as exc:
        raise ValueError(f"--eval-args (with the config's data.train_seq_len {seq_len}): {exc}; set "
                         "--sliding.stride in --eval-args") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``golf-lit seeds``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    own, overrides = split_args(parser, argv)
    if overrides and not overrides[0].startswith("-"):
        raise ValueError(f"golf-lit seeds: unexpected argument {overrides[0]!r}")
    args: SeedsOptions = build(SeedsOptions, parse(parser, own))
    out = Path(args.out or f"runs/seeds_{Path(args.config).stem}").resolve()
    base = resolve_fit_config(args.config, overrides)
    eval_args = shlex.split(args.eval_args)
    check_eval_windows(base, eval_args)  # before any training: a bad window setting would fail only after it
    runs = [run_seed(base, s, out / f"seed_{s}", args.fixed_steps, eval_args) for s in args.seeds]
    check_same_config(runs)
    baseline = baseline_values(args.baseline) if args.baseline else None
    rows = [run_row(r, args.result) for r in runs]
    text = write_table(out, rows, summarize(rows, baseline, args.delta_nats, args.alpha))
    print(text, end="")
    print(f"wrote {out / 'seeds.md'} and {out / 'seeds.json'}")
    return 0
