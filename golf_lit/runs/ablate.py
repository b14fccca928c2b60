"""``golf-lit ablate``: train a config once with everything on and once per switched-off technique, and tabulate.

Every run is a real ``golf-lit fit`` subprocess with the command-line overrides a user would type, so the table
measures exactly what those flags do. A variant may also drop a callback or change its init args (EMA has no
``--model`` flag); that change is made in the run's copy of the config.

    golf-lit ablate --config configs/smoke.yaml --seeds 1337,1338 --steps 100 --jobs 2 --out runs/ablate
    golf-lit ablate --config configs/record.yaml --variants configs/ablate-top.yaml --only all_on,no_loop

Variants file (YAML)::

    baseline: all_on                 # the row every delta is taken against (default: the first variant)
    variants:
      - {name: all_on}
      - {name: no_xsa, args: "--model.xsa_last_n 0"}            # a string (shell-split) or a list
      - {name: no_ema, callbacks: {EMA: null}}                  # drop the callback whose class name is EMA
      - {name: ema_0, callbacks: {EMA: {decay: 0.0}}}           # or change its init_args

Writes ``<out>/ablation.md`` and ``<out>/ablation.json`` (atomically) and each run under
``<out>/<variant>/seed<S>/``: its ``fit_config.yaml`` (the config with the variant's callback changes, the
wall-clock cap off unless ``--keep-wallclock``, and every logger/checkpoint folder moved into the run folder),
``command.txt``, ``stdout.log``, ``stderr.log``, logs and artifact.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from golf_lit.io import atomic_write_json, atomic_write_text
from golf_lit.options import add_options, build, command_parser, parse
from golf_lit.runs.rundir import ARTIFACT_DIR, FIT_CONFIG, golf_lit_command, relocate_outputs, run_command
from golf_lit.runs.stats import mean_se

# The record stack's techniques (docs/record-stack.md), each switched off by the flag a user would type.
DEFAULT_VARIANTS: list[dict[str, Any]] = [
    {"name": "all_on"},
    {"name": "no_xsa", "args": "--model.xsa_last_n 0"},  # exclusive self attention, PR #478 lineage
    {"name": "no_value_residual", "args": "--model.value_residual false"},
    {"name": "no_gated_attention", "args": "--model.gated_attention false"},
    {"name": "no_smear_gate", "args": "--model.smear_gate false"},
    {"name": "no_bigram_hash", "args": "--model.bigram_vocab_size 0"},
    {"name": "full_rope", "args": "--model.rope_dims 0"},  # partial RoPE off: rotate the whole head
    {"name": "no_ln_scale", "args": "--model.ln_scale false"},
    {"name": "relu2", "args": "--model.leaky_relu false"},  # LeakyReLU² -> ReLU²
    {"name": "no_ema", "callbacks": {"EMA": None}},
]

_VAL_RE = re.compile(r"val_loss:(\d+\.\d+) val_bpb:(\d+\.\d+)")
_TIME_RE = re.compile(r"train_time:(\d+)ms step_avg:(\d+\.\d+)ms")


@dataclass
class Variant:
    """One named set of overrides."""

    name: str
    args: list[str] = field(default_factory=list)
    callbacks: dict[str, dict | None] = field(default_factory=dict)
    note: str = ""


def _error(msg: str) -> ValueError:
    return ValueError(msg)


def parse_variants(raw: Any, source: str) -> tuple[list[Variant], str | None]:
    """Validate a variants document (``{"baseline": ..., "variants": [...]}`` or a bare list)."""
    baseline = None
    if isinstance(raw, dict):
        baseline = raw.get("baseline")
        unknown = set(raw) - {"baseline", "variants"}
        if unknown:
            raise _error(f"{source}: unknown top-level key(s) {sorted(unknown)}; expected 'baseline', 'variants'")
        raw = raw.get("variants")
    if not isinstance(raw, list) or not raw:
        raise _error(f"{source}: expected a non-empty list of variants under 'variants'")
    out: list[Variant] = []
    for i, item in enumerate(raw):
        where = f"{source}: variants[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise _error(f"{where}: expected a mapping with a non-empty 'name'")
        unknown = set(item) - {"name", "args", "callbacks", "note"}
        if unknown:
            raise _error(
                f"{where} ({item['name']}): unknown key(s) {sorted(unknown)}; expected name, args, callbacks, note"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", item["name"]):
            raise _error(f"{where}: name {item['name']!r} may only hold letters, digits and _ . + -")
        args = item.get("args") or []
        if isinstance(args, str):
            args = shlex.split(args)
        if not isinstance(args, list):
            raise _error(f"{where} ({item['name']}): 'args' must be a string or a list")
        callbacks = item.get("callbacks") or {}
        bad_change = any(v is not None and not isinstance(v, dict) for v in getattr(callbacks, "values", list)())
        if not isinstance(callbacks, dict) or bad_change:
            raise _error(f"{where} ({item['name']}): 'callbacks' must map a class name to null or init_args")
        out.append(Variant(item["name"], [str(a) for a in args], callbacks, str(item.get("note", ""))))
    names = [v.name for v in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _error(f"{source}: duplicate variant name(s) {dupes}")
    if baseline is not None and baseline not in names:
        raise _error(f"{source}: baseline {baseline!r} is not one of the variants {names}")
    return out, baseline


def has_callback(cfg: dict, cls: str) -> bool:
    """Whether the config's trainer.callbacks holds a callback whose class name is ``cls``."""
    callbacks = (cfg.get("trainer") or {}).get("callbacks") or []
    return any(isinstance(c, dict) and str(c.get("class_path", "")).split(".")[-1] == cls for c in callbacks)


def derived_config(base: dict, changes: dict[str, dict | None], source: str) -> dict:
    """``base`` with callbacks dropped (None) or their init_args updated, matched by class name."""
    cfg = json.loads(json.dumps(base))
    callbacks = (cfg.get("trainer") or {}).get("callbacks") or []
    for cls, change in changes.items():
        hits = [c for c in callbacks if isinstance(c, dict) and str(c.get("class_path", "")).split(".")[-1] == cls]
        if not hits:
            raise _error(f"{source}: variant changes callback {cls!r} but the config has no such callback")
        for c in hits:
            if change is None:
                callbacks.remove(c)
            else:
                c["init_args"] = {**(c.get("init_args") or {}), **change}
    return cfg


isolate_outputs = relocate_outputs
"""Every output folder of a config moved into the run's folder: :func:`golf_lit.runs.rundir.relocate_outputs`."""


def fit_command(
    config: Path, variant: Variant, seed: int, run_dir: Path, steps: int | None, extra: list[str]
) -> list[str]:
    """The ``golf-lit fit`` command line of one run (user overrides last, so they win)."""
    cmd = golf_lit_command("fit", "--config", str(config))
    cmd += ["--seed_everything", str(seed), "--trainer.default_root_dir", str(run_dir)]
    cmd += ["--trainer.enable_progress_bar", "false"]
    if steps is not None:
        cmd += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps)]
    return cmd + extra + variant.args


def run_one(cmd: list[str], run_dir: Path, resume: bool = False) -> dict:
    """Run one fit in ``run_dir``; return its scores from the artifact report (or the last validation line).

    The row is saved as ``run_dir/result.json``; with ``resume`` a saved successful row of the same command and
    config text is returned instead of training again.
    """
    command = shlex.join(cmd)
    config = run_dir / FIT_CONFIG
    fingerprint = hashlib.sha256((command + (config.read_text() if config.is_file() else "")).encode()).hexdigest()
    saved = run_dir / "result.json"
    if resume and saved.is_file():
        row = json.loads(saved.read_text())
        if row.get("fingerprint") == fingerprint and row.get("returncode") == 0:
            return {**row, "reused": True}
    run_dir.mkdir(parents=True, exist_ok=True)
    report = run_dir / ARTIFACT_DIR / "submission.json"  # where relocate_outputs puts the artifact
    for stale in (saved, report):  # never report an earlier run's scores
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    rc = run_command(cmd, run_dir / "stdout.log", run_dir / "stderr.log")
    seconds = time.perf_counter() - t0
    (run_dir / "command.txt").write_text(command + "\n")
    row: dict[str, Any] = {"returncode": rc, "seconds": round(seconds, 2), "run_dir": str(run_dir), "command": command}
    row["fingerprint"] = fingerprint  # command + config text: --resume reuses only an identical run
    text = (run_dir / "stdout.log").read_text()
    vals = _VAL_RE.findall(text)
    times = _TIME_RE.findall(text)
    row["last_val_bpb"] = float(vals[-1][1]) if vals else None
    row["train_time_s"] = int(times[-1][0]) / 1000 if times else None
    if report.is_file():
        sub = json.loads(report.read_text())
        row.update(
            val_bpb=sub.get("val_bpb"),
            pre_quant_val_bpb=sub.get("pre_quant_val_bpb"),
            bytes_total=sub.get("bytes_total"),
        )
    else:  # no ArtifactExport in the config: the last validation score, no artifact
        row.update(val_bpb=row["last_val_bpb"], pre_quant_val_bpb=row["last_val_bpb"], bytes_total=None)
    if rc != 0:
        row["error"] = (run_dir / "stderr.log").read_text()[-2000:]
    atomic_write_json(saved, row)
    return row


def summarize(
    variants: list[Variant], baseline: str, seeds: list[int], runs: dict[tuple[str, int], dict]
) -> list[dict]:
    """One row per variant: mean val_bpb, paired delta vs the baseline over seeds with its standard error."""
    rows = []
    for v in variants:
        rs = [runs[(v.name, s)] for s in seeds]
        ok = [r for r in rs if r["returncode"] == 0 and r["val_bpb"] is not None]
        bpb, bpb_se = mean_se([r["val_bpb"] for r in ok])
        deltas = [
            runs[(v.name, s)]["val_bpb"] - runs[(baseline, s)]["val_bpb"]
            for s in seeds
            if runs[(v.name, s)].get("val_bpb") is not None and runs[(baseline, s)].get("val_bpb") is not None
            and runs[(v.name, s)]["returncode"] == 0 and runs[(baseline, s)]["returncode"] == 0
        ]
        delta, delta_se = mean_se(deltas)
        sizes = [r["bytes_total"] for r in ok if r.get("bytes_total") is not None]
        rows.append(
            {
                "variant": v.name,
                "args": shlex.join(v.args),
                "callbacks": v.callbacks,
                "note": v.note,
                "seeds": len(ok),
                "failed": len(rs) - len(ok),
                "val_bpb": bpb,
                "val_bpb_se": bpb_se,
                "delta": delta,
                "delta_se": delta_se,
                "pre_quant_val_bpb": mean_se([r["pre_quant_val_bpb"] for r in ok if r.get("pre_quant_val_bpb")])[0],
                "bytes_total": round(sum(sizes) / len(sizes)) if sizes else None,
                "seconds": round(sum(r["seconds"] for r in rs) / len(rs), 1),
                "train_seconds": mean_se([r["train_time_s"] for r in ok if r.get("train_time_s") is not None])[0],
            }
        )
    return rows


def _fmt(x: float | None, digits: int = 4, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def markdown(rows: list[dict], baseline: str, meta: dict) -> str:
    """The table a researcher reads: one line per variant, the baseline first."""
    lines = [
        f"Ablation of `{meta['config']}` ({meta['steps_note']}, seeds {', '.join(map(str, meta['seeds']))}); "
        f"delta = variant - `{baseline}` (paired by seed), ± standard error over seeds; lower val_bpb is better.",
        "",
        "| variant | overrides | val_bpb | delta vs " + baseline + " | ± se | artifact bytes | train s | total s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        how = r["args"] or ", ".join(f"{k}: {'off' if v is None else v}" for k, v in r["callbacks"].items()) or "-"
        if r["args"] and r["callbacks"]:
            how += "; " + ", ".join(f"{k}: {'off' if v is None else v}" for k, v in r["callbacks"].items())
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        size = f"{r['bytes_total']:,}" if r["bytes_total"] is not None else "n/a"
        lines.append(
            f"| {r['variant']}{failed} | `{how}` | {_fmt(r['val_bpb'])} | {_fmt(r['delta'], sign=True)} "
            f"| {_fmt(r['delta_se'])} | {size} | {_fmt(r['train_seconds'], 1)} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class AblateOptions:
    """golf-lit ablate: which config, variants, seeds and steps."""

    config: str = "configs/smoke.yaml"
    """Fit config."""
    variants: str | None = None
    """YAML file of named override sets (default: the record stack's)."""
    only: str | None = None
    """Comma list of variant names to run (the baseline always runs)."""
    seeds: str = "1337"
    """Comma list of seeds."""
    steps: int | None = None
    """trainer.max_steps of every run (default: the config's)."""
    jobs: int = 1
    """Runs in parallel processes."""
    out: str = "runs/ablate"
    """Output folder."""
    keep_wallclock: bool = False
    """Keep the config's WallClockLimit cap (default: off, so every run trains the same steps and lr schedule)."""
    resume: bool = False
    """Reuse finished runs of the same command (result.json)."""
    dry_run: bool = False
    """Print the fit commands and exit."""


def build_parser():
    """The ``golf-lit ablate`` parser (AblateOptions)."""
    parser = command_parser(
        "golf-lit ablate",
        "Train a config with everything on and with each technique switched off; write a table.",
        epilog="Arguments after '--' go to every 'golf-lit fit' run (before the variant's own overrides).",
    )
    add_options(parser, AblateOptions)
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``golf-lit ablate``."""
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    args: AblateOptions = build(AblateOptions, parse(build_parser(), argv))
    config = Path(args.config).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"--config {args.config}: no such file")
    try:
        base = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {args.config}: not valid YAML ({exc})") from None
    if args.variants:
        vpath = Path(args.variants)
        if not vpath.is_file():
            raise FileNotFoundError(f"--variants {args.variants}: no such file")
        try:
            raw = yaml.safe_load(vpath.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"--variants {args.variants}: not valid YAML ({exc})") from None
        variants, baseline = parse_variants(raw, f"--variants {args.variants}")
    else:
        variants, baseline = parse_variants(DEFAULT_VARIANTS, "built-in variants")
    baseline = baseline or variants[0].name
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        missing = sorted(set(wanted) - {v.name for v in variants})
        if missing:
            raise ValueError(f"--only: unknown variant(s) {missing}; known: {[v.name for v in variants]}")
        variants = [v for v in variants if v.name == baseline or v.name in wanted]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected a comma list of integers, got {args.seeds!r}") from None
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    if args.jobs < 1 or (args.steps is not None and args.steps < 1):
        raise ValueError("--jobs and --steps must be >= 1")
    out = Path(args.out).resolve()

    # Fixed steps, not a wall-clock cap: with the cap on, a slower (or busier) CPU would warm down earlier and
    # the variants would differ in their lr schedule, not only in the technique.
    base_changes: dict[str, dict | None] = {}
    if not args.keep_wallclock and has_callback(base, "WallClockLimit"):
        base_changes["WallClockLimit"] = {"max_wallclock_seconds": None}
    plans: dict[tuple[str, int], tuple[list[str], Path]] = {}
    for v in variants:
        cfg = derived_config(base, {**base_changes, **v.callbacks}, f"variant {v.name}")
        for s in seeds:
            run_dir = out / v.name / f"seed{s}"
            cfg_path = run_dir / FIT_CONFIG
            if not args.dry_run:
                atomic_write_text(cfg_path, yaml.safe_dump(isolate_outputs(cfg, run_dir), sort_keys=False))
            plans[(v.name, s)] = (fit_command(cfg_path, v, s, run_dir, args.steps, extra), run_dir)
    if args.dry_run:
        for cmd, _ in plans.values():
            print(shlex.join(cmd))
        return 0

    print(f"golf-lit ablate: {len(plans)} runs ({len(variants)} variants x {len(seeds)} seeds), {args.jobs} at a time")
    runs: dict[tuple[str, int], dict] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {key: pool.submit(run_one, cmd, run_dir, args.resume) for key, (cmd, run_dir) in plans.items()}
        for key, fut in futures.items():
            runs[key] = fut.result()
            r = runs[key]
            status = f"val_bpb:{_fmt(r['val_bpb'])}" if r["returncode"] == 0 else f"FAILED rc={r['returncode']}"
            reused = ", reused" if r.get("reused") else ""
            print(f"  {key[0]} seed {key[1]}: {status} ({r['seconds']:.0f}s{reused}, {r['run_dir']})", flush=True)
    rows = summarize(variants, baseline, seeds, runs)
    steps_note = f"{args.steps} steps" if args.steps else "the config's steps"
    meta = {"config": args.config, "seeds": seeds, "steps": args.steps, "steps_note": steps_note, "extra_args": extra}
    table = markdown(rows, baseline, meta)
    atomic_write_text(out / "ablation.md", table)
    atomic_write_json(
        out / "ablation.json",
        {
            **meta,
            "baseline": baseline,
            "rows": rows,
            "runs": [{"variant": k[0], "seed": k[1], **r} for k, r in runs.items()],
        },
    )
    print(table)
    print(f"wrote {out / 'ablation.md'} and {out / 'ablation.json'}")
    failed = [f"{k[0]}/seed{k[1]}" for k, r in runs.items() if r["returncode"] != 0]
    if failed:
        print(f"golf-lit ablate: {len(failed)} run(s) failed: {', '.join(failed)} (see stderr.log)", file=sys.stderr)
        return 1
    return 0
