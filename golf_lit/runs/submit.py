"""``golf-lit submit RUN_DIR... --out records/<date>_<name>/``: the folder a challenge pull request needs.

From finished seed runs (layout in :mod:`golf_lit.runs.rundir`, e.g. written by ``golf-lit seeds``) it assembles:

- ``final_model_seed<S>.int6.ptz``: each seed's artifact;
- ``train_gpt.py``: the one self-extracting file that trains, writes the artifact and scores it with the claimed
  strategy chain (golf_lit.runs.pack; the same file for every seed), and the ``requirements.txt`` it imports from;
  its size is the counted code;
- ``train_seed<S>.log`` / ``eval_seed<S>.log``: every seed's full console output, ``eval_seed<S>.json``;
- ``fit_config.yaml``: the resolved config (identical across seeds except the seed and paths);
- ``submission.json``: per-seed val_bpb with mean and std, bytes (total, model, code), timings per phase,
  training mode, hardware/software fingerprints, git commits;
- ``README.md``: a skeleton with the results table filled in.

It refuses (one line naming the run and the reason, exit status 2) a seed over 16,000,000 bytes, over the
training or evaluation time budget, from a different config, without its training log, whose ``train_gpt.py``
differs from another seed's, whose code changed since it was trained (the traced sources' sha256), whose claimed
result the shipped ``train_gpt.py`` does not compute, or whose reports name a file outside the run folder. It
writes nothing outside ``--out`` (the folder is built in a temporary sibling and renamed into place), and
``--overwrite`` never replaces a folder that is, or holds, one of the input runs.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golf_lit.io import atomic_write_json, atomic_write_text
from golf_lit.options import add_options, build, command_parser, parse
from golf_lit.runs.fingerprint import describe, fingerprint, git_commit
from golf_lit.runs.rundir import (
    ARTIFACT_DIR,
    Run,
    RunError,
    check_same_config,
    config_difference,
    dump_config,
    load_run,
    relocate_outputs,
)
from golf_lit.runs.seeds import (
    CHALLENGE_ALPHA,
    CHALLENGE_DELTA_NATS,
    baseline_values,
    markdown_table,
    run_row,
    summarize,
)

LIMIT_BYTES = 16_000_000
TRAIN_BUDGET_S = 600.0
EVAL_BUDGET_S = 600.0
CONVENTION = "train_gpt"


class SubmissionError(RunError):
    """A submission that must not be made; the message names the run and the reason."""


def training_overrun(run: Run, budget_s: float) -> str | None:
    """Why the run's training broke the budget, or None.

    The cap is checked after every step (the record scripts' rule), so a run may end inside the step that
    crosses it; a run is over budget when its training time minus one mean step still exceeds the budget, i.e.
    when it started a step after the budget was spent.
    """
    if not budget_s:
        return None
    training = run.report.get("training") or {}
    seconds, steps = training.get("seconds"), training.get("steps")
    if seconds is None or not steps:
        return "training time unknown (artifact/submission.json has no training.seconds)"
    last_step_start = seconds - seconds / steps
    if last_step_start > budget_s:
        return (f"training took {seconds:.1f} s ({training.get('mode')} mode, {steps} steps): its last step started "
                f"at {last_step_start:.1f} s, after the {budget_s:g} s training budget")
    return None


def portable_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The shipped config: every output under ``runs/submission`` (:func:`golf_lit.runs.rundir.relocate_outputs`)."""
    return relocate_outputs(cfg, "runs/submission")


def _inside(run: Run, path: Path, what: str) -> Path:
    """``path`` resolved (links followed), refused unless it lies inside the run folder."""
    where = path.resolve()
    if not where.is_relative_to(run.path.resolve()):
        raise SubmissionError(f"run {run.path}: {what} points outside the run folder ({where})")
    return where


def _check_paths(run: Run) -> None:
    """Every file the run's reports and layout name stays inside the run folder; the seed is a number."""
    _inside(run, run.artifact, "the artifact named by artifact/submission.json")
    for log in (run.train_log, run.eval_log):
        if log is not None:
            _inside(run, log, log.name)
    if not isinstance(run.seed, int) or isinstance(run.seed, bool):
        raise SubmissionError(f"run {run.path}: seed_everything must be an integer, got {run.seed!r}")


def _check_not_an_input(out: Path, runs: list[Run]) -> None:
    """Refuse an ``--out`` that is, or contains, an input run (``--overwrite`` would delete it)."""
    target = out.resolve()
    for run in runs:
        if run.path.resolve().is_relative_to(target):
            raise SubmissionError(f"--out {out}: is or contains the input run {run.path}; choose another folder")


def _claimed_is_computed(run: Run, result: str | None, eval_args: list[str]) -> None:
    """Refuse a claimed result that the baked evaluation of ``train_gpt.py`` does not compute."""
    from golf_lit.eval.scorer import MODEL
    from golf_lit.runs.pack.build import eval_option, eval_strategies

    claimed = run.result(result)
    if not run.eval_report:  # export's roundtrip: train_gpt.py computes it in every case
        return
    baked = eval_strategies(eval_args) if eval_args else []
    ran = [r.get("strategy") for r in run.eval_report.get("results", [])]
    if not eval_args:
        raise SubmissionError(f"run {run.path}: claims {claimed['name']} from eval.json, but its train_gpt.py bakes "
                              "no evaluation (set ArtifactExport.eval_args, e.g. with golf-lit seeds --eval-args)")
    if claimed.get("strategy") not in baked or any(s not in baked for s in ran):
        raise SubmissionError(f"run {run.path}: claims {claimed['name']} (strategies {sorted(set(ran))} in "
                              f"eval.json), but its train_gpt.py computes only {baked}")
    flag = eval_option(eval_args, "--ngram")
    ngram = flag is not None and flag.lower() in ("", "true", "yes", "1")  # a bare --ngram is true
    if claimed.get("variant", MODEL) != MODEL and not ngram:
        raise SubmissionError(f"run {run.path}: claims the n-gram variant {claimed['name']}, but its train_gpt.py "
                              "does not run the n-gram mixer")


def _ship_code(runs: list[Run], dest: Path, result: str | None) -> tuple[str, list[dict[str, Any]]]:
    """Check every run's ``train_gpt.py`` and copy the one file into ``dest``; returns the convention and files."""
    from golf_lit.runs.pack.build import (
        REQUIREMENTS_NAME,
        SCRIPT_NAME,
        current_sources_digest,
        portable_fit_config,
        read_baked,
    )

    first, script, reqs = runs[0], None, None
    for run in runs:
        code = run.report.get("code")
        if run.report.get("code_convention") != CONVENTION or not isinstance(code, dict):
            raise SubmissionError(f"run {run.path}: its counted code is not a generated {SCRIPT_NAME} (convention "
                                  f"{run.report.get('code_convention')!r}); train or export with quant.code_bytes "
                                  "auto")
        path = _inside(run, run.path / ARTIFACT_DIR / SCRIPT_NAME, f"{ARTIFACT_DIR}/{SCRIPT_NAME}")
        req_path = _inside(run, run.path / ARTIFACT_DIR / REQUIREMENTS_NAME, f"{ARTIFACT_DIR}/{REQUIREMENTS_NAME}")
        if not path.is_file() or not req_path.is_file():
            raise SubmissionError(f"run {run.path}: {ARTIFACT_DIR}/{SCRIPT_NAME} or its {REQUIREMENTS_NAME} is missing")
        data = path.read_bytes()
        if len(data) != run.report.get("bytes_code"):
            raise SubmissionError(f"run {run.path}: {ARTIFACT_DIR}/{SCRIPT_NAME} has {len(data):,} bytes but the run "
                                  f"counted {run.report.get('bytes_code')!r}")
        if script is None:  # the one file every seed must ship: decoded and traced once
            script, reqs = data, req_path.read_bytes()
            try:
                baked = read_baked(data)
            except ValueError as exc:
                raise SubmissionError(f"run {run.path}: {ARTIFACT_DIR}/{SCRIPT_NAME}: {exc}") from None
            digest = current_sources_digest(baked["fit"])
        elif data != script or req_path.read_bytes() != reqs:
            raise SubmissionError(f"run {run.path}: {ARTIFACT_DIR}/{SCRIPT_NAME} differs from run {first.path}'s "
                                  "(a records folder ships one train_gpt.py for every seed)")
        portable = portable_fit_config(run.config)
        if portable != baked["fit"]:
            diff = config_difference(portable, baked["fit"]) or "seed or output paths"
            raise SubmissionError(f"run {run.path}: {ARTIFACT_DIR}/{SCRIPT_NAME} bakes another config than the run's "
                                  f"resolved config ({diff})")
        if digest != code.get("sources_sha256"):
            raise SubmissionError(f"run {run.path}: the golf_lit code changed since the run was trained (the traced "
                                  "sources' sha256 differs from artifact/submission.json code.sources_sha256); "
                                  "train it again with this code")
        _claimed_is_computed(run, result, list(baked["eval"]))
    (dest / SCRIPT_NAME).write_bytes(script)
    (dest / REQUIREMENTS_NAME).write_bytes(reqs)
    return CONVENTION, [{"path": SCRIPT_NAME, "bytes": len(script)}]


def _readme(name: str, rows: list[dict[str, Any]], summary: dict[str, Any], sub: dict[str, Any]) -> str:
    seeds = " ".join(str(r["seed"]) for r in rows)
    fp = sub["fingerprints"][0]
    code = ("one self-extracting file, `train_gpt.py` (the golf_lit modules it runs, minified, lzma + base85, "
            "with the resolved training config and the evaluation baked in)")
    return f"""# {name}

TODO: one paragraph on what this submission changes and why.

**val_bpb {summary['val_bpb_mean']:.8f}** (mean of {summary['n']} seeds, std {summary['val_bpb_std'] or 0:.8f}),
largest artifact {sub['bytes_total']:,} bytes (code {sub['bytes_code']:,} + model).

## Results

{markdown_table(rows, summary)}
## Size

Code bytes are counted from the files shipped in this folder: {code}, {sub['bytes_code']:,} bytes
(convention `{sub['code_convention']}`). Per seed: bytes_total = artifact file + code bytes
(limit {LIMIT_BYTES:,}).

## Timings

Training budget {sub['budgets']['train_s']} s, evaluation budget {sub['budgets']['eval_s']} s; per-seed phase
timings are in `submission.json` (`timings`).

## Hardware and software

{describe(fp)}

## Reproduce

```bash
pip install -r requirements.txt
for seed in {seeds}; do
  SEED=$seed RUN_ID=seed_$seed DATA_PATH=./data/datasets/fineweb10B_sp1024 \\
    TOKENIZER_PATH=./data/tokenizers/fineweb_1024_bpe.model torchrun --standalone --nproc_per_node=8 train_gpt.py
done
```

Each run trains under the cap, writes `runs/seed_<S>/artifact/final_model.int6.ptz`, scores it with the claimed
strategies and logs to `logs/seed_<S>.txt`. With golf-lit installed, `golf-lit fit --config fit_config.yaml
--seed_everything <S>` trains the same run.

## Files

{chr(10).join(f'- `{f}`' for f in sub['files'])}
"""


def build_submission(run_dirs: list[str | Path], out: str | Path, *, name: str | None = None, author: str = "",
                     github_id: str = "", result: str | None = None, baseline: list[float] | None = None,
                     delta_nats: float = CHALLENGE_DELTA_NATS, alpha: float = CHALLENGE_ALPHA,
                     train_budget_s: float = TRAIN_BUDGET_S, eval_budget_s: float = EVAL_BUDGET_S,
                     limit_bytes: int = LIMIT_BYTES, overwrite: bool = False) -> dict[str, Any]:
    """Check the runs and write the submission folder ``out`` atomically; returns its submission.json.

    Raises:
        SubmissionError / RunError: A refusal; the message names the run and the reason.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise SubmissionError(f"--out {out}: already exists (pass --overwrite to replace it)")
    if not run_dirs:
        raise SubmissionError("give at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    _check_not_an_input(out, runs)
    for run in runs:
        _check_paths(run)
        if run.train_log is None:
            raise SubmissionError(f"run {run.path}: training log train.log is missing")
        if run.eval_report is not None and run.eval_log is None:
            raise SubmissionError(f"run {run.path}: eval.json is there but its log eval.log is missing")
    check_same_config(runs)
    for run in runs:
        why = training_overrun(run, train_budget_s)
        if why:
            raise SubmissionError(f"run {run.path}: {why}")
        eval_s = run.eval_seconds()
        if eval_budget_s and eval_s > eval_budget_s:
            raise SubmissionError(f"run {run.path}: evaluation took {eval_s:.1f} s, over the {eval_budget_s:g} s "
                                  "evaluation budget")
        if not run.artifact.is_file():
            raise SubmissionError(f"run {run.path}: artifact {run.artifact.name} is missing")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        convention, code_files = _ship_code(runs, tmp, result)
        bytes_code = sum(f["bytes"] for f in code_files)
        rows, seeds = [], []
        for run in runs:
            s = run.seed
            art = tmp / f"final_model_seed{s}.int6.ptz"
            shutil.copyfile(run.artifact, art)
            bytes_model = art.stat().st_size
            if bytes_model + bytes_code > limit_bytes:
                raise SubmissionError(f"run {run.path}: {bytes_model:,} model + {bytes_code:,} code bytes = "
                                      f"{bytes_model + bytes_code:,} bytes, over the {limit_bytes:,}-byte limit")
            shutil.copyfile(run.train_log, tmp / f"train_seed{s}.log")
            if run.eval_log is not None:
                shutil.copyfile(run.eval_log, tmp / f"eval_seed{s}.log")
                atomic_write_json(tmp / f"eval_seed{s}.json", run.eval_report)
            row = run_row(run, result)
            row.update(bytes_model=bytes_model, bytes_total=bytes_model + bytes_code, bytes_code=bytes_code,
                       artifact=art.name)
            rows.append(row)
            timings = dict(run.report.get("timings") or {})
            timings.update(train_s=row["train_s"], eval_s=row["eval_s"])
            seeds.append({"seed": s, "run": str(run.path), "training": run.report.get("training"),
                          "timings": timings, "fingerprint": run.report.get("fingerprint")})
        summary = summarize(rows, baseline, delta_nats, alpha)
        atomic_write_text(tmp / "fit_config.yaml", dump_config(portable_config(runs[0].config)))
        today = datetime.date.today().isoformat()
        name = name or out.name
        sub: dict[str, Any] = {
            "name": name,
            "author": author,
            "github_id": github_id,
            "date": today,
            "val_bpb": summary["val_bpb_mean"],
            "val_bpb_std": summary["val_bpb_std"],
            "val_loss": summary["val_loss_mean"],
            "result": rows[0]["result"],
            "seeds": [r["seed"] for r in rows],
            "per_seed": rows,
            "summary": summary,
            "bytes_total": max(r["bytes_total"] for r in rows),
            "bytes_model": {str(r["seed"]): r["bytes_model"] for r in rows},
            "bytes_code": bytes_code,
            "code_convention": convention,
            "code_files": code_files,
            "limit_bytes": limit_bytes,
            "budgets": {"train_s": train_budget_s, "eval_s": eval_budget_s},
            "runs": seeds,
            "fingerprints": [s["fingerprint"] or {} for s in seeds],
            "git": git_commit(),
        }
        if sub["fingerprints"][0] == {}:
            sub["fingerprints"][0] = fingerprint()
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        sub["files"] = sorted(files + ["README.md", "submission.json"])
        atomic_write_json(tmp / "submission.json", sub)
        atomic_write_text(tmp / "README.md", _readme(name, rows, summary, sub))
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sub


@dataclass
class SubmitOptions:
    """golf-lit submit: the seed runs, the folder and its checks."""

    runs: list[str]
    """Finished run directories, one per seed."""
    out: str
    """Submission folder, e.g. records/2026-11-26_MyIdea."""
    name: str | None = None
    """Submission name (default: the folder name)."""
    author: str = ""
    """Author, for submission.json."""
    github_id: str = ""
    """GitHub id, for submission.json."""
    result: str | None = None
    """Eval result name to report (default: the last in eval.json)."""
    baseline: list[str] | None = None
    """Baseline val_bpb numbers and/or seeds.json files."""
    delta_nats: float = CHALLENGE_DELTA_NATS
    """Required improvement, nats per token."""
    alpha: float = CHALLENGE_ALPHA
    """Significance level."""
    train_budget_s: float = TRAIN_BUDGET_S
    """Training budget in seconds; 0 = no training-time check."""
    eval_budget_s: float = EVAL_BUDGET_S
    """Evaluation budget in seconds; 0 = no evaluation-time check."""
    limit_bytes: int = LIMIT_BYTES
    """Artifact + code byte limit."""
    overwrite: bool = False
    """Replace an existing --out folder."""


def build_parser():
    """The ``golf-lit submit`` parser (SubmitOptions; the run directories are positional)."""
    parser = command_parser("golf-lit submit", __doc__.split("\n\n")[0])
    add_options(parser, SubmitOptions, positional={"runs"})
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``golf-lit submit``."""
    a: SubmitOptions = build(SubmitOptions, parse(build_parser(), list(sys.argv[1:] if argv is None else argv)))
    sub = build_submission(
        a.runs, a.out, name=a.name, author=a.author, github_id=a.github_id, result=a.result,
        baseline=baseline_values(a.baseline) if a.baseline else None, delta_nats=a.delta_nats, alpha=a.alpha,
        train_budget_s=a.train_budget_s, eval_budget_s=a.eval_budget_s, limit_bytes=a.limit_bytes,
        overwrite=a.overwrite,
    )
    print(f"wrote {a.out}: val_bpb {sub['val_bpb']:.8f} over seeds {sub['seeds']}, "
          f"largest artifact {sub['bytes_total']:,} bytes ({sub['code_convention']} code {sub['bytes_code']:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
