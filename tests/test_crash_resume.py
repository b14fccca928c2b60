"""A tiny CPU fit killed with SIGKILL at several points resumes with ``--ckpt_path last`` to the very weights of an
uninterrupted run, and every checkpoint/artifact left on disk loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from golf_lit.artifact import load_artifact_state_dict
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES
from golf_lit.model.config import ModelConfig
from golf_lit.model.gpt import GPT
from golf_lit.runs.export import ARTIFACT_NAME
from golf_lit.train.checkpoint import load_checkpoint

from .test_train import TINY_MODEL

MAX_STEPS = 30


def write_config(run: Path) -> Path:
    """A tiny run: last.ckpt after every step, a record-log line per step, the artifact at the end. No wall-clock
    cap, so the schedule depends on steps only and two runs are bit-identical on CPU."""
    cfg = {
        "seed_everything": 1337,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": MAX_STEPS,
            "val_check_interval": 10_000, "check_val_every_n_epoch": None, "num_sanity_val_steps": 0,
            "enable_progress_bar": False, "enable_model_summary": False, "logger": False,
            "default_root_dir": str(run), "use_distributed_sampler": False,
            "callbacks": [
                {"class_path": "golf_lit.callbacks.Warmdown", "init_args": {"warmdown_iters": 10}},
                {"class_path": "golf_lit.callbacks.EMA", "init_args": {"decay": 0.9}},
                {"class_path": "golf_lit.callbacks.RecordLog", "init_args": {"train_log_every": 1}},
                {"class_path": "golf_lit.callbacks.ArtifactExport", "init_args": {"dirpath": None}},
                {"class_path": "golf_lit.callbacks.ResumableCheckpoint",
                 "init_args": {"dirpath": str(run / "checkpoints"), "save_last": True, "save_top_k": 0,
                               "every_n_train_steps": 1}},
            ],
        },
        "model": {**TINY_MODEL, "compile": False, "optim": {"muon_momentum_warmup_steps": 4}},
        "data": {"train_files": SAMPLE_TRAIN_FILES, "val_files": SAMPLE_VAL_FILES, "tokenizer_path": SAMPLE_TOKENIZER,
                 "train_batch_tokens": 256, "train_seq_len": 32, "grad_accum_steps": 1, "val_batch_tokens": 512,
                 "val_max_tokens": 1024},
    }
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "golf_lit", "fit", "--config", str(config), *extra]
    return subprocess.Popen(cmd, cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (busy polling); False if it exited first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    return False


def kill_after_lines(proc: subprocess.Popen, prefix: str, n: int) -> bool:
    seen = 0
    for line in proc.stdout:
        seen += line.startswith(prefix)
        if seen >= n:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.wait()
    return False


def ckpt_temp_files(ckdir: Path) -> list[str]:
    return [n for n in os.listdir(ckdir) if n.startswith(".last.ckpt.")] if ckdir.is_dir() else []


def check_left_on_disk(run: Path) -> None:
    """Every file SIGKILL left behind loads, except hidden ``.NAME.*.tmp`` files of an interrupted atomic write
    (never read: a resume looks for last.ckpt only, eval for the artifact's name only)."""
    template = GPT(ModelConfig(**TINY_MODEL)).state_dict()
    for p in run.rglob("*"):
        if not p.is_file() or (p.name.startswith(".") and p.name.endswith(".tmp")):
            continue
        if p.suffix == ".ckpt":
            assert "state_dict" in load_checkpoint(p), p
        elif p.name == ARTIFACT_NAME:
            assert load_artifact_state_dict(p, template).keys() == template.keys()


@pytest.mark.slow
def test_sigkill_mid_step_mid_checkpoint_and_mid_export_then_resume_is_exact(tmp_path):
    """Kill points: (1) after the 5th ``step:`` record-log line on stdout (mid-training); (2) as soon as a
    ``.last.ckpt.*.tmp`` file appears (a checkpoint write in progress: whether the kill lands before or after
    the rename is up to timing, so the test asserts only that whichever last.ckpt is on disk loads and resumes);
    (3) as soon as the artifact folder appears (the export at the end of training has started). After each kill
    ``--ckpt_path last`` resumes; the final checkpoint and artifact equal an uninterrupted run's exactly."""
    ref_run, run = tmp_path / "ref", tmp_path / "crash"
    ref = start(write_config(ref_run))
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out[-3000:]

    config = write_config(run)
    ckdir = run / "checkpoints"
    # (1) mid-training
    assert kill_after_lines(start(config), "step:", 5)
    check_left_on_disk(run)
    step1 = load_checkpoint(ckdir / "last.ckpt")["global_step"]
    assert 1 <= step1 < MAX_STEPS
    # (2) during a checkpoint write (the one after the resumed step, or a later one)
    proc = start(config, "--ckpt_path", "last")
    assert kill_when(proc, lambda: bool(ckpt_temp_files(ckdir))), proc.stdout.read()[-3000:]
    check_left_on_disk(run)
    step2 = load_checkpoint(ckdir / "last.ckpt")["global_step"]
    assert step1 <= step2 < MAX_STEPS
    # (3) during the export
    proc = start(config, "--ckpt_path", "last")
    assert kill_when(proc, (run / "artifact").is_dir), proc.stdout.read()[-3000:]
    check_left_on_disk(run)
    assert load_checkpoint(ckdir / "last.ckpt")["global_step"] == MAX_STEPS
    # resume to the end
    proc = start(config, "--ckpt_path", "last")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    check_left_on_disk(run)

    got, want = load_checkpoint(ckdir / "last.ckpt"), load_checkpoint(ref_run / "checkpoints" / "last.ckpt")
    assert got["global_step"] == want["global_step"] == MAX_STEPS
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for k, v in want["state_dict"].items():
        assert torch.equal(got["state_dict"][k], v), k
    template = GPT(ModelConfig(**TINY_MODEL)).state_dict()
    a = load_artifact_state_dict(run / "artifact" / ARTIFACT_NAME, template)
    b = load_artifact_state_dict(ref_run / "artifact" / ARTIFACT_NAME, template)
    for k, v in b.items():
        assert torch.equal(a[k], v), k
