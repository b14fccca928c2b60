"""Seeds, significance and the submission folder: three real seed runs through the CLI, the shipped train_gpt.py
reproducing a seed alone, then every refusal."""

from __future__ import annotations

import ast
import base64
import json
import lzma
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from golf_lit.callbacks import WallClockLimit
from golf_lit.callbacks.artifact import training_report

from golf_lit.cli import main
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES, resolve
from golf_lit.runs.pack.build import REQUIREMENTS_NAME, SCRIPT_NAME
from golf_lit.runs.rundir import Run, config_difference, load_run
from golf_lit.runs.seeds import baseline_values, seed_config
from golf_lit.runs.stats import improvement_test, mean, nats_per_token_to_bpb, std
from golf_lit.runs.submit import training_overrun

from .isolated import make_site, requirement_names, run_isolated

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (1, 2, 3)
BASELINE = (4.30, 4.31, 4.29)


# ------------------------------------------------------------------------------------------- fast unit tests


def test_config_difference_ignores_seed_and_paths_only():
    a = {"seed_everything": 1, "trainer": {"default_root_dir": "a", "max_steps": 5,
                                          "callbacks": [{"init_args": {"dirpath": "x", "decay": 0.9}}]},
         "model": {"num_layers": 2}}
    b = json.loads(json.dumps(a))
    b["seed_everything"], b["trainer"]["default_root_dir"] = 2, "b"
    b["trainer"]["callbacks"][0]["init_args"]["dirpath"] = "y"
    assert config_difference(a, b) is None
    b["trainer"]["callbacks"][0]["init_args"]["decay"] = 0.95
    assert config_difference(a, b) == "trainer.callbacks[0].init_args.decay: 0.9 != 0.95"
    c = json.loads(json.dumps(a))
    del c["model"]["num_layers"]
    assert config_difference(a, c) == "model.num_layers: 2 != 'missing'"


def test_seed_config_fixed_steps_turns_the_cap_off_and_moves_paths(tmp_path):
    base = {"seed_everything": 1337, "trainer": {"max_steps": 20000, "default_root_dir": "runs/x", "callbacks": [
        {"class_path": "golf_lit.callbacks.WallClockLimit", "init_args": {"max_wallclock_seconds": 600}},
        {"class_path": "golf_lit.callbacks.ArtifactExport", "init_args": {"dirpath": None}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": "runs/x/ck"}}]}}
    cfg = seed_config(base, 7, tmp_path, fixed_steps=4935)
    cbs = [c["init_args"] for c in cfg["trainer"]["callbacks"]]
    assert cfg["seed_everything"] == 7 and cfg["trainer"]["max_steps"] == 4935
    assert cbs[0]["max_wallclock_seconds"] == 0
    assert cbs[1]["dirpath"] == str(tmp_path / "artifact") and cbs[2]["dirpath"] == str(tmp_path / "checkpoints")
    assert base["trainer"]["callbacks"][0]["init_args"]["max_wallclock_seconds"] == 600  # not modified in place
    same = seed_config(base, 8, tmp_path / "other")
    assert same["trainer"]["callbacks"][0]["init_args"]["max_wallclock_seconds"] == 600  # wall-clock mode kept
    assert config_difference(same, seed_config(base, 9, tmp_path)) is None


def _trainer(callbacks, step=10, max_steps=100):
    return SimpleNamespace(callbacks=callbacks, global_step=step, max_steps=max_steps, world_size=8,
                           precision="bf16-mixed")


def test_training_report_says_which_mode_ran():
    clock = WallClockLimit(600)
    clock.elapsed_ms = 599_700.0
    rep = training_report(_trainer([clock], step=4935, max_steps=20000))
    assert rep["mode"] == "wallclock" and rep["cap_s"] == 600 and rep["seconds"] == pytest.approx(599.7)
    assert rep["steps"] == 4935 and rep["world_size"] == 8
    off = WallClockLimit(0)
    off.elapsed_ms = 1234.0
    rep = training_report(_trainer([off], step=100, max_steps=100))
    assert rep["mode"] == "fixed_steps" and rep["cap_s"] is None and rep["seconds"] == pytest.approx(1.234)
    assert training_report(_trainer([]))["mode"] == "fixed_steps"
    reserved = WallClockLimit(600, reserve_seconds=8.0)  # GPTQ reserve (0429-BOS3): budget = cap - reserve
    rep = training_report(_trainer([reserved]))
    assert rep["mode"] == "wallclock" and rep["cap_s"] == 600 and rep["budget_s"] == 592


def test_training_budget_allows_only_the_step_that_crosses_the_cap():
    def run(seconds, steps):
        return Run(Path("r"), {}, {"training": {"seconds": seconds, "steps": steps, "mode": "wallclock"}}, None,
                   None, None)

    assert training_overrun(run(600.09, 5000), 600) is None  # last step began at 599.97 s: the seed's stop rule
    assert "after the 600 s" in training_overrun(run(600.5, 5000), 600)  # began at 600.38 s
    assert training_overrun(run(5000.0, 10), 0) is None  # budget check off
    assert "unknown" in training_overrun(Run(Path("r"), {}, {}, None, None, None), 600)


def test_baseline_values_from_numbers_and_files(tmp_path):
    (tmp_path / "seeds.json").write_text(json.dumps({"runs": [{"val_bpb": 1.5}, {"val_bpb": 1.25}]}))
    (tmp_path / "list.json").write_text("[2.0, 3.0]")
    assert baseline_values(["1.0611", str(tmp_path / "seeds.json"), str(tmp_path / "list.json")]) == \
        [1.0611, 1.5, 1.25, 2.0, 3.0]
    with pytest.raises(ValueError, match="nope.json"):
        baseline_values([str(tmp_path / "nope.json")])


# --------------------------------------------------------------------------- three real seeds through the CLI


@pytest.fixture(scope="module")
def seeds_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds")
    cmd = [sys.executable, "-m", "golf_lit", "seeds", "--config", str(ROOT / "configs" / "smoke.yaml"),
           "--seeds", *map(str, SEEDS), "--out", str(out), "--fixed-steps", "2",
           "--eval-args", "--strategy roundtrip --progress false --max_tokens 2048",
           "--baseline", *map(str, BASELINE),
           "--data.val_max_tokens", "1024", "--trainer.val_check_interval", "2",
           "--trainer.enable_progress_bar", "false"]
    # one thread, as the isolated train_gpt.py runs: the same float reductions, the same weights
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=out, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out


@pytest.mark.slow
def test_three_seeds_table_and_p_value(seeds_dir):
    data = json.loads((seeds_dir / "seeds.json").read_text())
    rows, summary = data["runs"], data["summary"]
    assert [r["seed"] for r in rows] == list(SEEDS)
    assert all(r["mode"] == "fixed_steps" and r["steps"] == 2 for r in rows)
    bpb = [r["val_bpb"] for r in rows]
    assert len(set(bpb)) == 3  # different seeds, different models
    # each row is the eval report's number; bpb and loss agree through the run's own token/byte counts
    for r in rows:
        ev = json.loads((Path(r["run"]) / "eval.json").read_text())["results"][-1]
        assert r["val_bpb"] == ev["val_bpb"] and r["tokens"] == ev["tokens"] == 2048
        assert r["val_bpb"] == pytest.approx(r["val_loss"] * r["tokens"] / (r["bytes"] * math.log(2)), rel=1e-12)
    assert summary["val_bpb_mean"] == pytest.approx(mean(bpb), rel=1e-15)
    assert summary["val_bpb_std"] == pytest.approx(std(bpb), rel=1e-12)
    t = summary["test"]
    delta = nats_per_token_to_bpb(0.005, rows[0]["tokens"], rows[0]["bytes"])
    ref = improvement_test(bpb, list(BASELINE), delta, 0.01)
    assert t["delta"] == pytest.approx(delta, rel=1e-15) and t["p_value"] == pytest.approx(ref.p_value, rel=1e-12)
    assert t["quantity"] == "val_bpb" and t["delta_nats"] == 0.005 and 0.0 <= t["p_value"] <= 1.0
    md = (seeds_dir / "seeds.md").read_text()
    assert f"| 2 | {rows[1]['val_bpb']:.8f} |" in md and f"p = {t['p_value']:.3g}" in md
    # one resolved config, differing only in seed and paths; fixed-step mode switched the cap off
    runs = [load_run(seeds_dir / f"seed_{s}") for s in SEEDS]
    assert all(config_difference(runs[0].config, r.config) is None for r in runs)
    assert [r.config["seed_everything"] for r in runs] == list(SEEDS)
    clock = next(c for c in runs[0].config["trainer"]["callbacks"] if c["class_path"].endswith("WallClockLimit"))
    assert clock["init_args"]["max_wallclock_seconds"] == 0 and runs[0].config["trainer"]["max_steps"] == 2
    fp = runs[0].report["fingerprint"]
    assert fp["hardware"]["accelerator"] in ("cpu", "cuda") and fp["versions"]["torch"]


def _submit(capsys, *args):
    code = main(["submit", *map(str, args)])
    return code, capsys.readouterr()


@pytest.mark.slow
def test_submit_writes_a_complete_folder(seeds_dir, tmp_path, capsys):
    out = tmp_path / "records" / "2026-11-26_smoke"
    runs = [seeds_dir / f"seed_{s}" for s in SEEDS]
    code, cap = _submit(capsys, *runs, "--out", out, "--baseline", *BASELINE, "--author", "A")
    assert code == 0, cap.err
    sub = json.loads((out / "submission.json").read_text())
    seeds_json = json.loads((seeds_dir / "seeds.json").read_text())
    assert sub["seeds"] == list(SEEDS) and sub["val_bpb"] == seeds_json["summary"]["val_bpb_mean"]
    assert sub["summary"]["test"]["p_value"] == seeds_json["summary"]["test"]["p_value"]
    # bytes_code is the size of the one train_gpt.py shipped, bytes_model that of the shipped artifacts
    shipped = (out / SCRIPT_NAME).stat().st_size
    assert sub["code_convention"] == "train_gpt" and sub["code_files"] == [{"path": SCRIPT_NAME, "bytes": shipped}]
    assert sub["bytes_code"] == shipped and 30_000 < shipped < 120_000  # ~80 KB: training, export and every strategy
    assert (out / SCRIPT_NAME).read_bytes() == (seeds_dir / "seed_1" / "artifact" / SCRIPT_NAME).read_bytes()
    assert (out / REQUIREMENTS_NAME).read_text().count("torch==") == 1
    for row in sub["per_seed"]:
        art = out / f"final_model_seed{row['seed']}.int6.ptz"
        assert row["bytes_model"] == art.stat().st_size and row["bytes_total"] == row["bytes_model"] + shipped
        original = seeds_dir / f"seed_{row['seed']}" / "artifact" / "final_model.int6.ptz"
        assert art.read_bytes() == original.read_bytes()
    assert sub["bytes_total"] == max(r["bytes_total"] for r in sub["per_seed"])
    for s in SEEDS:  # every seed's full logs
        assert (out / f"train_seed{s}.log").read_text() == (seeds_dir / f"seed_{s}" / "train.log").read_text()
        assert (out / f"eval_seed{s}.log").is_file() and (out / f"eval_seed{s}.json").is_file()
    run = sub["runs"][0]
    assert run["training"]["mode"] == "fixed_steps" and {"train_s", "eval_s", "export_s"} <= set(run["timings"])
    assert run["fingerprint"]["versions"]["lightning"]
    cfg = yaml.safe_load((out / "fit_config.yaml").read_text())
    assert cfg["model"]["num_layers"] == 2 and cfg["trainer"]["default_root_dir"] == "runs/submission"
    readme = (out / "README.md").read_text()
    assert f"| 1 | {sub['per_seed'][0]['val_bpb']:.8f} |" in readme and "Welch" in readme
    assert sorted(sub["files"]) == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary folder left behind
    # an existing folder is not replaced unless asked
    code, cap = _submit(capsys, *runs, "--out", out)
    assert code == 2 and "already exists" in cap.err
    code, cap = _submit(capsys, *runs[:2], "--out", out, "--overwrite")
    assert code == 0 and json.loads((out / "submission.json").read_text())["seeds"] == [1, 2]
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def _break_size(run: Path) -> str:
    (run / "artifact" / "final_model.int6.ptz").write_bytes(b"\0" * 16_000_001)
    return "over the 16,000,000-byte limit"


def _break_train_time(run: Path) -> str:
    rep = json.loads((run / "artifact" / "submission.json").read_text())
    rep["training"].update(seconds=700.0, steps=1000)
    (run / "artifact" / "submission.json").write_text(json.dumps(rep))
    return "after the 600 s training budget"


def _break_eval_time(run: Path) -> str:
    rep = json.loads((run / "eval.json").read_text())
    rep["results"][-1]["seconds"] = 601.0
    (run / "eval.json").write_text(json.dumps(rep))
    return "over the 600 s evaluation budget"


def _break_config(run: Path) -> str:
    cfg = yaml.safe_load((run / "fit_config.yaml").read_text())
    cfg["model"]["xsa_last_n"] = 1
    (run / "fit_config.yaml").write_text(yaml.safe_dump(cfg))
    return "config differs from run"


def _break_log(run: Path) -> str:
    (run / "train.log").unlink()
    return "training log train.log is missing"


def _report(run: Path, change) -> None:
    rep = json.loads((run / "artifact" / "submission.json").read_text())
    change(rep)
    (run / "artifact" / "submission.json").write_text(json.dumps(rep))


def _break_artifact_path(run: Path) -> str:
    victim = run.parent / "victim" / "id_rsa"
    victim.parent.mkdir(exist_ok=True)
    victim.write_text("secret")
    _report(run, lambda rep: rep.update(artifact="../../victim/id_rsa"))
    return "the artifact named by artifact/submission.json points outside the run folder"


def _break_log_link(run: Path) -> str:
    outside = run.parent / "elsewhere.log"
    outside.write_text("not this run's\n")
    (run / "train.log").unlink()
    (run / "train.log").symlink_to(outside)
    return "train.log points outside the run folder"


def _break_code_changed(run: Path) -> str:
    _report(run, lambda rep: rep["code"].update(sources_sha256="0" * 64))
    return "the golf_lit code changed since the run was trained"


def _break_script(run: Path) -> str:
    script = run / "artifact" / SCRIPT_NAME
    script.write_bytes(script.read_bytes() + b"#\n")
    _report(run, lambda rep: rep.update(bytes_code=script.stat().st_size))
    return "artifact/train_gpt.py differs from run"


def _break_claim(run: Path) -> str:
    rep = json.loads((run / "eval.json").read_text())
    rep["results"].append({**rep["results"][-1], "name": "final_int6_ttt", "strategy": "ttt", "val_bpb": 0.5})
    (run / "eval.json").write_text(json.dumps(rep))
    return "claims final_int6_ttt"


def _break_convention(run: Path) -> str:
    _report(run, lambda rep: rep.update(code_convention="package_source"))
    return "its counted code is not a generated train_gpt.py"


@pytest.mark.slow
@pytest.mark.parametrize("breaker", [_break_size, _break_train_time, _break_eval_time, _break_config, _break_log,
                                     _break_artifact_path, _break_log_link, _break_code_changed, _break_script,
                                     _break_claim, _break_convention],
                         ids=["size", "train_time", "eval_time", "config", "log", "artifact_path", "log_link",
                              "code_changed", "script_differs", "claim", "convention"])
def test_submit_refuses(seeds_dir, tmp_path, capsys, breaker):
    bad = tmp_path / "seed_2_copy"
    shutil.copytree(seeds_dir / "seed_2", bad, ignore=shutil.ignore_patterns("*.ckpt"))
    reason = breaker(bad)
    out = tmp_path / "records" / "x"
    code, cap = _submit(capsys, seeds_dir / "seed_1", bad, "--out", out)
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and f"run {bad}" in lines[0] and reason in lines[0], cap.err
    assert not out.exists() and not list((tmp_path / "records").glob("*"))  # nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "records") == sorted(["seed_2_copy", *(
        ["victim"] if breaker is _break_artifact_path else []), *(["elsewhere.log"] if breaker is _break_log_link
                                                                  else [])])


@pytest.mark.slow
def test_submit_never_writes_outside_out_nor_deletes_an_input(seeds_dir, tmp_path, capsys, monkeypatch):
    run = tmp_path / "runs" / "seed_1"
    shutil.copytree(seeds_dir / "seed_1", run)
    _report(run, lambda rep: rep.update(packed={"file": "../../ESCAPED.txt"}))  # a report key older versions used
    monkeypatch.chdir(tmp_path)
    code, cap = _submit(capsys, run, "--out", tmp_path / "records" / "a")
    assert code == 0, cap.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records", "runs"]
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["a"]
    before = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "runs").rglob("*"))
    assert any(p.endswith(".ckpt") for p in before)
    for out in (run, tmp_path / "runs"):  # --out that is, or contains, an input run
        code, cap = _submit(capsys, run, "--out", out, "--overwrite")
        assert code == 2 and f"--out {out}: is or contains the input run {run}" in cap.err, cap.err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "runs").rglob("*")) == before


def _drop_module(script: bytes, name: str) -> bytes:
    """The same train_gpt.py without one packed module (the stub and payload layout of golf_lit.runs.pack)."""
    head, rest = script.split(b"b85decode(b'", 1)
    blob, tail = rest.split(b"')", 1)
    payload = lzma.decompress(base64.b85decode(blob)).decode()
    first, others = payload.split("\n", 1)
    sources = ast.literal_eval(first[2:])  # S={...}
    del sources[name]
    payload = f"S={sources!r}\n" + others
    return head + b"b85decode(b'" + base64.b85encode(lzma.compress(payload.encode())) + b"')" + tail


@pytest.mark.slow
def test_shipped_train_gpt_alone_reproduces_a_seed(seeds_dir, tmp_path, capsys):
    """The records folder's train_gpt.py, run alone where golf_lit cannot be imported, trains, exports and scores
    seed 3 exactly as golf-lit fit + eval did: same ops, same order, one thread each, so the same bits."""
    folder = tmp_path / "records" / "x"
    code, cap = _submit(capsys, seeds_dir / "seed_3", "--out", folder)
    assert code == 0, cap.err
    rec = tmp_path / "rec"
    rec.mkdir()
    for name in (SCRIPT_NAME, REQUIREMENTS_NAME):
        shutil.copyfile(folder / name, rec / name)
    site = make_site(tmp_path / "site", requirement_names(rec / REQUIREMENTS_NAME))
    probe = run_isolated(site, ["-c", "import lightning, torch\nimport golf_lit"], cwd=rec)
    assert probe.returncode == 1 and "No module named 'golf_lit'" in probe.stderr, probe.stderr[-2000:]
    env = {"SEED": "3", "RUN_ID": "s3", "DATA_PATH": str(Path(resolve(SAMPLE_VAL_FILES)).parent),
           "TOKENIZER_PATH": resolve(SAMPLE_TOKENIZER)}
    res = run_isolated(site, [SCRIPT_NAME], cwd=rec, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    ours = json.loads((seeds_dir / "seed_3" / "eval.json").read_text())["results"]
    theirs = json.loads((rec / "runs" / "s3" / "eval.json").read_text())["results"]
    assert [(r["name"], r["val_bpb"], r["val_loss"], r["tokens"], r["bytes"]) for r in theirs] == \
        [(r["name"], r["val_bpb"], r["val_loss"], r["tokens"], r["bytes"]) for r in ours]
    assert (rec / "runs" / "s3" / "artifact" / "final_model.int6.ptz").read_bytes() == \
        (folder / "final_model_seed3.int6.ptz").read_bytes()
    log = (rec / "logs" / "s3.txt").read_text()
    assert "step:2/2 train_loss:" in log and re.search(r"^final_int6_roundtrip val_loss:\S+ val_bpb:\S+", log, re.M)
    assert f"Code size: {(rec / SCRIPT_NAME).stat().st_size} bytes" in log  # the file counts itself
    # broken variant: one traced module missing and the file no longer runs
    (rec / SCRIPT_NAME).write_bytes(_drop_module((folder / SCRIPT_NAME).read_bytes(), "golf_lit.bpb"))
    res = run_isolated(site, [SCRIPT_NAME], cwd=rec, env={**env, "RUN_ID": "broken"})
    assert res.returncode != 0 and "golf_lit.bpb" in res.stderr, res.stderr[-2000:]


def test_cli_lists_and_dispatches_the_new_commands(capsys, tmp_path):
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+seeds\s", out, re.M) and re.search(r"^\s+submit\s", out, re.M)
    code, cap = _submit(capsys, tmp_path / "nope", "--out", tmp_path / "rec")
    assert code == 2 and cap.err.strip() == f"golf-lit submit: error: run {tmp_path / 'nope'}: not a directory"
