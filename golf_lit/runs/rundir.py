"""Run directories, in one place for every command that runs or reads runs (seeds, ablate, submit, plot): the layout
of a run's outputs, the one rule that moves a config's outputs into a run directory, the ``python -m golf_lit``
subprocess that runs a command there, reading a finished run back and the same-config check between runs.

Layout written by ``golf-lit seeds`` (one directory per seed)::

    RUN_DIR/fit_config.yaml       the resolved ``golf-lit fit`` config the run used (seed and paths included)
    RUN_DIR/train.log             the train log ``golf-lit fit`` writes itself (record-shaped lines)
    RUN_DIR/fit.out               the full console output of ``golf-lit fit``
    RUN_DIR/artifact/             final_model.int6.ptz, submission.json, config.json, train_gpt.py, requirements.txt
    RUN_DIR/eval.json, eval.log   the ``golf-lit eval`` report and console output

A directory written by a plain ``golf-lit fit`` works too (it writes ``train.log`` into its
``trainer.default_root_dir``); its resolved config is then the ``config.yaml`` LightningCLI saved under
``lightning_logs/``.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FIT_CONFIG = "fit_config.yaml"
TRAIN_LOG = "train.log"
FIT_CONSOLE = "fit.out"
EVAL_LOG = "eval.log"
EVAL_REPORT = "eval.json"
ARTIFACT_DIR = "artifact"
CHECKPOINT_DIR = "checkpoints"

SEED_AND_PATH_KEYS = frozenset(
    {"seed_everything", "ckpt_path", "config", "default_root_dir", "dirpath", "save_dir", "log_dir", "root_dir"}
)
"""Keys that may differ between seeds of one configuration: the seed and where files go."""


class RunError(ValueError):
    """A run directory that cannot be used; the message names the run and the reason."""


def golf_lit_command(*args: str) -> list[str]:
    """The command line that runs ``golf-lit ARGS...`` with this interpreter and this golf_lit."""
    return [sys.executable, "-m", "golf_lit", *args]


def class_name(entry: Any) -> str:
    return str(entry.get("class_path", "")).split(".")[-1] if isinstance(entry, dict) else ""


def relocate_outputs(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """A copy of the fit config ``cfg`` whose every output lives in ``run_dir``: the one rule of every command.

    ``trainer.default_root_dir`` becomes ``run_dir``; every logger's ``save_dir`` becomes ``run_dir``; the
    ``ArtifactExport`` callback writes to ``run_dir/artifact`` and any other callback with a ``dirpath`` (the
    checkpoint callbacks) to ``run_dir/checkpoints``. Nothing else changes: data paths stay as written (runs
    start in the caller's working directory, so relative data paths still resolve).
    """
    out = copy.deepcopy(cfg)
    run_dir = str(run_dir)
    trainer = out.setdefault("trainer", {})
    trainer["default_root_dir"] = run_dir
    loggers = trainer.get("logger")
    for lg in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(lg, dict) and isinstance(lg.get("init_args"), dict) and "save_dir" in lg["init_args"]:
            lg["init_args"]["save_dir"] = run_dir
    for cb in trainer.get("callbacks") or []:
        args = cb.get("init_args") if isinstance(cb, dict) else None
        if class_name(cb) == "ArtifactExport":
            cb["init_args"] = {**(args or {}), "dirpath": str(Path(run_dir) / ARTIFACT_DIR)}
        elif isinstance(args, dict) and "dirpath" in args:
            args["dirpath"] = str(Path(run_dir) / CHECKPOINT_DIR)
    return out


def run_command(cmd: list[str], log: str | Path, err_log: str | Path | None = None) -> int:
    """Run ``cmd`` (e.g. :func:`golf_lit_command`) unbuffered; its output goes to ``log``, which starts with the
    command line as a ``# ...`` comment; stderr goes there too, or to ``err_log``. Returns the exit status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        out.write("# " + shlex.join(cmd) + "\n")
        out.flush()
        if err_log is None:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        with open(err_log, "w") as err:
            return subprocess.run(cmd, stdout=out, stderr=err, env=env).returncode


def require_success(code: int, log: str | Path, what: str, lines: int = 15) -> None:
    """Raise RunError naming ``what`` with the last lines of ``log`` when ``code`` is not 0."""
    if code != 0:
        tail = "".join(Path(log).read_text().splitlines(keepends=True)[-lines:])
        raise RunError(f"{what} failed with exit status {code}; last lines of {log}:\n{tail}")


def strip_seed_and_paths(cfg: Any) -> Any:
    """The config without SEED_AND_PATH_KEYS at any depth (what must be identical across seeds)."""
    if isinstance(cfg, dict):
        return {k: strip_seed_and_paths(v) for k, v in cfg.items() if k not in SEED_AND_PATH_KEYS}
    if isinstance(cfg, list):
        return [strip_seed_and_paths(v) for v in cfg]
    return cfg


def config_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first dotted key where two configs differ (seed and paths ignored), as ``key: A != B``; None if equal."""
    a, b = strip_seed_and_paths(a), strip_seed_and_paths(b)
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                left = "'missing'" if key not in a else repr(a[key])
                right = "'missing'" if key not in b else repr(b[key])
                return f"{where}: {left} != {right}"
            diff = config_difference(a[key], b[key], where)
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{prefix}: {len(a)} entries != {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = config_difference(x, y, f"{prefix}[{i}]")
            if diff:
                return diff
        return None
    return None if a == b else f"{prefix}: {a!r} != {b!r}"


def _read_json(path: Path, run: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise RunError(f"run {run}: {path.name} is not readable JSON ({exc})") from exc


@dataclass
class Run:
    """What a run directory holds.

    Attributes:
        path: The directory.
        config: Resolved fit config (dict).
        report: ``artifact/submission.json``.
        eval_report: ``eval.json`` (None when eval was not run).
        train_log / eval_log: Log files (None when missing).
    """

    path: Path
    config: dict[str, Any]
    report: dict[str, Any]
    eval_report: dict[str, Any] | None
    train_log: Path | None
    eval_log: Path | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """``seed_everything`` of the config."""
        return self.config.get("seed_everything")

    @property
    def artifact(self) -> Path:
        """The artifact file."""
        return self.path / ARTIFACT_DIR / self.report.get("artifact", "final_model.int6.ptz")

    def result(self, name: str | None = None) -> dict[str, Any]:
        """The scored result: the eval report's entry ``name`` (default: its last), else export's roundtrip.

        Returns:
            ``{"name", "val_bpb", "val_loss", "tokens", "bytes", "seconds"}``.
        """
        if self.eval_report and self.eval_report.get("results"):
            results = self.eval_report["results"]
            if name is None:
                return results[-1]
            for r in results:
                if r["name"] == name:
                    return r
            names = [r["name"] for r in results]
            raise RunError(f"run {self.path}: {EVAL_REPORT} has no result {name!r} (has {names})")
        if name not in (None, "final_int6_roundtrip"):
            raise RunError(f"run {self.path}: no {EVAL_REPORT}, so only final_int6_roundtrip is known, not {name!r}")
        rep = self.report
        return {"name": "final_int6_roundtrip", "val_bpb": rep["val_bpb"], "val_loss": rep["val_loss"],
                "tokens": rep.get("val_tokens"), "bytes": rep.get("val_bytes"),
                "seconds": rep.get("timings", {}).get("roundtrip_eval_s")}

    def eval_seconds(self) -> float:
        """Evaluation seconds: every distinct pass in ``eval.json`` (mixer variants share a pass), else export's."""
        if self.eval_report and self.eval_report.get("results"):
            passes = {(r.get("strategy"), r.get("seconds")) for r in self.eval_report["results"]}
            return float(sum(s for _, s in passes if s is not None))
        return float(self.report.get("timings", {}).get("roundtrip_eval_s") or 0.0)


def _find_config(run: Path) -> dict[str, Any]:
    path = run / FIT_CONFIG
    if not path.is_file():
        saved = sorted(run.glob("lightning_logs/version_*/config.yaml"), key=lambda p: p.stat().st_mtime)
        if not saved:
            raise RunError(f"run {run}: no resolved config ({FIT_CONFIG} or lightning_logs/version_*/config.yaml)")
        path = saved[-1]
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RunError(f"run {run}: {path.name} is not readable YAML ({exc})") from exc
    if not isinstance(cfg, dict):
        raise RunError(f"run {run}: {path.name} is not a config mapping")
    return cfg


def load_run(path: str | Path) -> Run:
    """Read a run directory (see the module docstring).

    Raises:
        RunError: Not a directory, or no resolved config / artifact report (the message names the run).
    """
    run = Path(path)
    if not run.is_dir():
        raise RunError(f"run {run}: not a directory")
    report_path = run / ARTIFACT_DIR / "submission.json"
    if not report_path.is_file():
        raise RunError(f"run {run}: no {ARTIFACT_DIR}/submission.json (did fit finish and export?)")
    eval_path = run / EVAL_REPORT
    return Run(
        path=run,
        config=_find_config(run),
        report=_read_json(report_path, run),
        eval_report=_read_json(eval_path, run) if eval_path.is_file() else None,
        train_log=run / TRAIN_LOG if (run / TRAIN_LOG).is_file() else None,
        eval_log=run / EVAL_LOG if (run / EVAL_LOG).is_file() else None,
    )


def check_same_config(runs: list[Run]) -> None:
    """Refuse runs whose resolved configs differ in anything but the seed and paths, or that share a seed."""
    first = runs[0]
    seen: dict[Any, Path] = {}
    for run in runs:
        diff = config_difference(first.config, run.config)
        if diff:
            raise RunError(f"run {run.path}: config differs from run {first.path} at {diff}")
        if run.seed in seen:
            raise RunError(f"run {run.path}: same seed {run.seed} as run {seen[run.seed]}")
        seen[run.seed] = run.path


def dump_config(cfg: dict[str, Any]) -> str:
    """YAML text of a config."""
    return yaml.safe_dump(cfg, sort_keys=False)


def find_metrics(path: str | Path) -> Path:
    """The newest ``metrics.csv`` at or under ``path``."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder or metrics.csv")
    found = sorted(p.rglob("metrics.csv"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{path}: no metrics.csv under it (the run needs a CSVLogger)")
    return found[-1]
