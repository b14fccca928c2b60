"""One run folder: every output of ``golf-lit fit`` under ``trainer.default_root_dir``, its own train log, a lock
while it runs, and class paths only from golf-lit's and Lightning's own modules (issues #20 item 6, #21, #22)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from golf_lit.cli import main
from golf_lit.io import FolderInUse, FolderLock
from golf_lit.train.checkpoint import load_checkpoint
from golf_lit.train.cli import class_path_allowed

from .test_checkpoint import last_error
from .test_cli import ROOT

SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = ["--trainer.val_check_interval", "1000", "--trainer.enable_progress_bar", "false",
        "--data.val_max_tokens", "512", "--data.train_batch_tokens", "512",
        "--model.num_layers", "1", "--model.xsa_last_n", "1"]


def fit(root: str | Path, steps: int, *extra: str, config: str | Path = SMOKE) -> list[str]:
    return ["fit", "--config", str(config), "--trainer.default_root_dir", str(root), "--trainer.max_steps", str(steps),
            *TINY, *extra]


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_roots_share_nothing_and_last_resumes_its_own_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(fit("A", 2)) == 0
    out_a = capsys.readouterr().out
    # B has no checkpoint of its own: `last` must not find A's
    assert main(fit("B", 3, "--ckpt_path", "last")) == 2
    assert f"no last.ckpt in '{tmp_path / 'B' / 'checkpoints'}'" in last_error(capsys)
    assert main(fit("B", 3)) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B"]  # nothing in runs/smoke, no lock left
    a, b = files_under(tmp_path / "A"), files_under(tmp_path / "B")
    for layout in (a, b):
        assert {"train.log", "checkpoints/last.ckpt", "artifact/final_model.int6.ptz", "artifact/submission.json",
                "artifact/config.json", "lightning_logs/version_0/metrics.csv"} <= layout, layout
    assert load_checkpoint(tmp_path / "A" / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert load_checkpoint(tmp_path / "B" / "checkpoints" / "last.ckpt")["global_step"] == 3
    # train.log holds the console's record-shaped lines, in order
    log_a = (tmp_path / "A" / "train.log").read_text().splitlines()
    printed = [ln for ln in out_a.splitlines() if ln in log_a]
    assert printed == log_a and log_a[0].startswith("step:1/2 train_loss:")
    assert any(re.match(r"final_int6_roundtrip_exact val_loss:\d+\.\d+ val_bpb:\d+\.\d+$", ln) for ln in log_a)
    # resuming A from its own last.ckpt (step 2) continues A's log: steps 3 and 4, not B's step 3
    assert main(fit("A", 4, "--ckpt_path", "last")) == 0
    resumed = (tmp_path / "A" / "train.log").read_text().splitlines()
    assert resumed[: len(log_a)] == log_a
    steps = [ln.split()[0] for ln in resumed[len(log_a):] if "train_loss" in ln]
    assert steps == ["step:3/4", "step:4/4"]
    assert load_checkpoint(tmp_path / "A" / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert (tmp_path / "B" / "train.log").read_text().splitlines()[0].startswith("step:1/3 ")


def test_folder_in_use_is_refused_by_name_then_free(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    with FolderLock(run, "--out") as lock:
        assert lock.path.read_text().strip() == str(os.getpid())
        assert main(fit(run, 1)) == 2
        line = last_error(capsys)
        assert "trainer.default_root_dir" in line and str(run) in line and f"pid {os.getpid()}" in line
        with pytest.raises(FolderInUse, match="--tok.*in use"):
            FolderLock(run, "--tok").acquire()
    assert not lock.path.exists() and not run.exists()  # refused before anything was written


def test_lock_held_by_another_process_and_stale_lock_taken_over(tmp_path):
    folder = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from golf_lit.io import FolderLock; "
         f"FolderLock({str(folder)!r}, 'x').acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
            FolderLock(folder, "--out").acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = FolderLock(folder, "--out")
    assert lock.path.exists()  # SIGKILL left the file behind: stale, since the kernel dropped the flock
    for _ in range(50):  # the kill is synchronous, but be kind to slow CI
        try:
            lock.acquire()
            break
        except FolderInUse:
            time.sleep(0.1)
    assert lock.held and lock.path.read_text().strip() == str(os.getpid())
    lock.release()
    assert not lock.path.exists()


def test_class_path_allow_list():
    assert class_path_allowed("golf_lit.callbacks.EMA")
    assert class_path_allowed("lightning.pytorch.callbacks.LearningRateMonitor")
    assert class_path_allowed("lightning.pytorch.loggers.CSVLogger")
    for bad in ("somemodule.X", "os.system", "golf_litx.Y", "lightning.pytorch.core.X", "builtins.eval", None, 3):
        assert not class_path_allowed(bad), bad


EVIL_MODULE = "from pathlib import Path\nPath('PWNED').write_text('ran')\n\n\nclass X:\n    pass\n"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ckpt", "yaml", "argv"])
def test_a_class_path_from_a_handed_file_imports_nothing(tmp_path, how):
    """``python -m golf_lit`` puts the working directory first on sys.path: a somemodule.py there must never run."""
    (tmp_path / "somemodule.py").write_text(EVIL_MODULE)
    if how == "ckpt":
        torch.save({"state_dict": {}, "hyper_parameters": {"optim": {"class_path": "somemodule.X"}}},
                   tmp_path / "evil.ckpt")
        extra, named = ["--ckpt_path", "evil.ckpt"], "evil.ckpt"
    elif how == "yaml":
        (tmp_path / "evil.yaml").write_text("trainer:\n  callbacks:\n    - class_path: somemodule.X\n")
        extra, named = ["--config", "evil.yaml"], "evil.yaml"
    else:
        extra, named = ["--trainer.callbacks+=somemodule.X"], "--trainer.callbacks"
    before = sorted(p.name for p in tmp_path.iterdir())
    out = subprocess.run([sys.executable, "-m", "golf_lit", "fit", "--config", SMOKE, *extra], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and named in errors[0] and "somemodule.X" in errors[0], out.stderr[-3000:]
    assert not (tmp_path / "PWNED").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, no __pycache__ of somemodule


@pytest.mark.slow
def test_resume_checkpoint_of_another_shape_is_refused_naming_both(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("golf_lit.callbacks.artifact.ArtifactExport.on_train_end", lambda *a: None)
    assert main(fit("A", 1)) == 0
    capsys.readouterr()
    ckpt = tmp_path / "A" / "checkpoints" / "last.ckpt"
    before = files_under(tmp_path / "A")
    # an explicit path, and `last` in a folder that holds it: both against a config of width 64
    for argv in (fit("B", 2, "--ckpt_path", str(ckpt), "--model.model_dim", "64"),
                 fit("A", 2, "--ckpt_path", "last", "--model.model_dim", "64")):
        assert main(argv) == 2
        line = last_error(capsys)
        assert "last.ckpt" in line and "model_dim=128" in line and "model_dim=64" in line, line
    assert files_under(tmp_path / "A") == before and not (tmp_path / "B").exists()


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "golf_lit", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_line(proc: subprocess.Popen, prefix: str) -> None:
    for line in proc.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"no line starting {prefix!r}; stderr: {proc.stderr.read()[-3000:]}")


def stopped(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_sigterm_during_fit_stops_cleanly_and_resumes(tmp_path):
    """SIGTERM (what a scheduler sends) during training: one line, status 143, a whole last.ckpt to resume from."""
    sig, status = signal.SIGTERM, 143
    config = tmp_path / "every2.yaml"  # smoke.yaml, checkpointing every 2 steps
    config.write_text(Path(SMOKE).read_text().replace("every_n_train_steps: 20", "every_n_train_steps: 2"))
    proc = start(fit("run", 400, config=config), tmp_path)
    wait_for_line(proc, "step:5/400")
    code, err = stopped(proc, sig)
    assert code == status, err[-3000:]
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("golf-lit")]
    assert lines == [f"golf-lit fit: interrupted by {sig.name}; partial outputs removed (resume with --ckpt_path "
                     "last)"], err[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["every2.yaml", "run"]  # the lock is gone
    assert not (tmp_path / "run" / "artifact").exists()
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name != "last.ckpt"]  # no temp file
    step = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"]
    assert step >= 4
    proc = start(fit("run", step + 1, "--ckpt_path", "last", config=config), tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == step + 1


@pytest.mark.slow
def test_interrupted_export_leaves_no_artifact_without_its_config(tmp_path, monkeypatch, capsys):
    """Ctrl-C (SIGINT is Python's KeyboardInterrupt) at the worst moment: the new artifact and its submission.json
    are written, its config.json is not. Raised at that exact point rather than by a timed signal, which a fast
    export can outrun (a real SIGTERM is sent to a fit in the test above)."""
    import golf_lit.runs.export as export

    assert main(fit(tmp_path / "run", 1)) == 0
    out = tmp_path / "run" / "artifact"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    written = []
    real_write = export.atomic_write_json

    def ctrl_c_before_config(path, data):
        if Path(path).name == "config.json":
            written.extend(sorted(p.name for p in Path(path).parent.iterdir()))
            raise KeyboardInterrupt
        return real_write(path, data)

    monkeypatch.setattr(export, "atomic_write_json", ctrl_c_before_config)
    capsys.readouterr()
    code = main(["export", "--ckpt", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--out", str(out),
                 "--zstd_levels", "3"])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err, err[-3000:]
    assert "final_model.int6.ptz" in written and "submission.json" in written  # interrupted mid-way, truly
    assert [ln for ln in err.splitlines() if ln.startswith("golf-lit")] == [
        "golf-lit export: interrupted by SIGINT; partial outputs removed"], err[-3000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous export, whole; no temp folder
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []


def test_seeds_checks_the_eval_window_before_training():
    """A short train_seq_len with the default stride (64) would train every seed and then fail in eval."""
    from golf_lit.runs.seeds import check_eval_windows

    with pytest.raises(ValueError, match=r"--eval-args .*train_seq_len 32.*sliding\.stride: .*seq_len=32, got 64"):
        check_eval_windows({"data": {"train_seq_len": 32}}, ["--strategy", "roundtrip,sliding"])
    check_eval_windows({"data": {"train_seq_len": 32}}, ["--sliding.stride", "16"])
    check_eval_windows({"data": {"train_seq_len": 32}}, ["--sliding.seq-len", "128"])
    check_eval_windows({"data": {"train_seq_len": 1024}}, [])


def test_tokenize_into_a_folder_in_use_is_refused(tmp_path, capsys):
    from golf_lit.data.paths import SAMPLE_TOKENIZER, resolve

    out = tmp_path / "out"
    docs = Path(__file__).parent / "data" / "fineweb_val_docs.jsonl"
    with FolderLock(out, "--out"):
        code = main(["data", "tokenize", "--docs", str(docs), "--tokenizer", str(resolve(SAMPLE_TOKENIZER)),
                     "--out", str(out), "--workers", "1", "--no-progress"])
        assert code == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("golf-lit data tokenize: error: --out:") and "in use" in err, err
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_train_shard_token_ids_are_checked_at_the_first_read(tmp_path):
    import numpy as np

    from golf_lit.data.shards import TokenStream, write_shard

    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(100, dtype=np.uint16))
    write_shard(tmp_path / "fineweb_train_000001.bin", np.full(100, 1500, dtype=np.uint16))
    stream = TokenStream(str(tmp_path / "fineweb_train_*.bin"), vocab_size=1024)
    assert stream.read(0, 50).tolist() == list(range(50))  # the first shard is fine
    with pytest.raises(ValueError, match=r"fineweb_train_000001\.bin: token id 1500 is outside the vocabulary of 1024"):
        stream.read(90, 20)  # crosses into the second shard
    assert TokenStream(str(tmp_path / "fineweb_train_*.bin")).read(100, 1).tolist() == [1500]  # unchecked without
