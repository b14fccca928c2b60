"""``golf-lit seeds``: the same configuration trained and scored once per seed, a results table and a significance test.

Each seed runs the real CLI in a subprocess (``golf-lit fit`` then ``golf-lit eval``) in its own directory
``OUT/seed_<S>/`` (layout in :mod:`golf_lit.runs.rundir`), from one resolved config that differs between seeds only in
``seed_everything`` and its output paths. The table (``OUT/seeds.md`` and ``OUT/seeds.json``) lists per-seed
val_bpb, their mean and std; with ``--baseline`` it adds a one-sided Welch t-test of "improves on the baseline by
at least delta", the challenge's acceptance rule (delta 0.005 nats, p < 0.01).

Examples::

    golf-lit seeds --config configs/record.yaml --seeds 1337 42 7 --out runs/seeds_record
    golf-lit seeds --config configs/smoke.yaml --seeds 1 2 3 --fixed-steps 20 --model.xsa_last_n 1 \\
        --baseline 2.71 2.72 2.70 --eval-args "--strategy roundtrip,sliding --sliding.stride 64"
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from golf_lit.io import atomic_write_json, atomic_write_text
from golf_lit.runs.rundir import (
    ARTIFACT_DIR,
    EVAL_LOG,
    EVAL_REPORT,
    FIT_CONFIG,
    TRAIN_LOG,
    Run,
    RunError,
    check_same_config,
    dump_config,
    load_run,
)
from golf_lit.runs.stats import ImprovementTest, improvement_test, mean, nats_per_token_to_bpb, std

DEFAULT_EVAL_ARGS = "--strategy roundtrip --progress false"
CHALLENGE_DELTA_NATS = 0.005
CHALLENGE_ALPHA = 0.01


def golf_lit_command(*args: str) -> list[str]:
    """The command line of the real CLI in this interpreter."""
    return [sys.executable, "-m", "golf_lit", *args]


def resolve_fit_config(config: str, overrides: list[str]) -> dict[str, Any]:
    """The resolved ``golf-lit fit`` config for ``--config config overrides...`` (LightningCLI's --print_config)."""
    cmd = golf_lit_command("fit", "--config", config, *overrides, "--print_config")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ValueError(f"--config {config}: golf-lit fit could not resolve it: {last}")
    return yaml.safe_load(out.stdout)


def _is_class(entry: Any, suffix: str) -> bool:
    return isinstance(entry, dict) and str(entry.get("class_path", "")).endswith(suffix)


def seed_config(base: dict[str, Any], seed: int, run_dir: Path, fixed_steps: int | None = None,
                eval_args: list[str] | None = None) -> dict[str, Any]:
    """The config of one seed: ``base`` with the seed, every output path inside ``run_dir``; with
    ``fixed_steps``, ``trainer.max_steps`` set and the wall-clock cap off (fixed-step mode); with ``eval_args``,
    the claimed evaluation (``golf-lit eval`` options) that the export bakes into the run's ``train_gpt.py``."""
    cfg = copy.deepcopy(base)
    cfg["seed_everything"] = int(seed)
    trainer = cfg.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    if fixed_steps is not None:
        trainer["max_steps"] = int(fixed_steps)
    for cb in trainer.get("callbacks") or []:
        args = cb.get("init_args") if isinstance(cb, dict) else None
        if args is None:
            continue
        if _is_class(cb, "ArtifactExport"):
            args["dirpath"] = str(run_dir / ARTIFACT_DIR)
            if eval_args is not None:
                args["eval_args"] = list(eval_args)
        elif "dirpath" in args:
            args["dirpath"] = str(run_dir / "checkpoints")
        if _is_class(cb, "WallClockLimit") and fixed_steps is not None:
            args["max_wallclock_seconds"] = 0
    loggers = trainer.get("logger")
    for lg in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(lg, dict) and isinstance(lg.get("init_args"), dict) and "save_dir" in lg["init_args"]:
            lg["init_args"]["save_dir"] = str(run_dir)
    return cfg


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "w") as f:
        f.write("# " + shlex.join(cmd) + "\n")
        f.flush()
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RunError(f"{what} failed with exit status {code}; last lines of {log}:\n{tail}")


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
    log(f"seed {seed}: training ({run_dir / TRAIN_LOG})")
    _run_logged(golf_lit_command("fit", "--config", str(cfg_path)), run_dir / TRAIN_LOG, f"seed {seed}: fit")
    artifact = run_dir / ARTIFACT_DIR / "final_model.int6.ptz"
    log(f"seed {seed}: scoring ({run_dir / EVAL_LOG})")
    cmd = golf_lit_command("eval", "--artifact", str(artifact), "--report", str(run_dir / EVAL_REPORT), *eval_args)
    _run_logged(cmd, run_dir / EVAL_LOG, f"seed {seed}: eval")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="golf-lit seeds", description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog="Other arguments (--model.*, --trainer.*, --data.*) are passed to golf-lit fit.")
    p.add_argument("--config", required=True, help="golf-lit fit config (YAML)")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds, e.g. 1337 42 7")
    p.add_argument("--out", default=None, help="output directory (default: runs/seeds_<config name>)")
    p.add_argument("--fixed-steps", type=int, default=None,
                   help="fixed-step mode: trainer.max_steps = N with the wall-clock cap off")
    p.add_argument("--eval-args", default=DEFAULT_EVAL_ARGS,
                   help=f"golf-lit eval options (default {DEFAULT_EVAL_ARGS!r})")
    p.add_argument("--result", default=None, help="eval result name to tabulate (default: the last one in eval.json)")
    p.add_argument("--baseline", nargs="+", default=None, help="baseline val_bpb numbers and/or seeds.json files")
    p.add_argument("--delta-nats", type=float, default=CHALLENGE_DELTA_NATS, help="required improvement, nats/token")
    p.add_argument("--alpha", type=float, default=CHALLENGE_ALPHA, help="significance level")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``golf-lit seeds``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = build_parser().parse_known_args(argv)
    if any(not o.startswith("-") for o in overrides[:1]):
        raise ValueError(f"golf-lit seeds: unexpected argument {overrides[0]!r}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds: repeated seed in {args.seeds}")
    if args.fixed_steps is not None and args.fixed_steps < 1:
        raise ValueError(f"--fixed-steps: must be >= 1, got {args.fixed_steps}")
    out = Path(args.out or f"runs/seeds_{Path(args.config).stem}").resolve()
    base = resolve_fit_config(args.config, overrides)
    eval_args = shlex.split(args.eval_args)
    runs = [run_seed(base, s, out / f"seed_{s}", args.fixed_steps, eval_args) for s in args.seeds]
    check_same_config(runs)
    baseline = baseline_values(args.baseline) if args.baseline else None
    rows = [run_row(r, args.result) for r in runs]
    text = write_table(out, rows, summarize(rows, baseline, args.delta_nats, args.alpha))
    print(text, end="")
    print(f"wrote {out / 'seeds.md'} and {out / 'seeds.json'}")
    return 0
