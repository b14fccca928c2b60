"""The golf-lit CLI: help, configs, record values, clear errors for bad keys and combinations, a smoke fit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from golf_lit.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def print_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_help_lists_commands(capsys):
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "eval", "export", "data"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


def test_fit_help_shows_field_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "-h"])
    out = capsys.readouterr().out
    assert "--model.xsa_last_n" in out and "Exclusive self attention on the last N layers" in out
    assert "--model.optim.matrix_lr" in out and "--data.train_batch_tokens" in out


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses(capsys, config):
    cfg = print_config(capsys, "--config", str(config))
    assert cfg["model"]["num_layers"] >= 1 and cfg["data"]["train_seq_len"] > 0


def test_record_config_reproduces_spec_14(capsys):
    cfg = print_config(capsys, "--config", str(ROOT / "configs" / "record.yaml"))
    model, optim, data, trainer = cfg["model"], cfg["model"]["optim"], cfg["data"], cfg["trainer"]
    expected_model = dict(
        num_layers=11,
        model_dim=512,
        num_heads=8,
        num_kv_heads=4,
        mlp_mult=3.0,
        vocab_size=1024,
        tie_embeddings=True,
        tied_embed_init_std=0.005,
        logit_softcap=30.0,
        rope_base=10000.0,
        rope_dims=16,
        qk_gain_init=1.5,
        ln_scale=True,
        xsa_last_n=11,
        value_residual=True,
        gated_attention=True,
        leaky_relu=True,
        leaky_slope=0.9,
        bigram_vocab_size=4096,
        bigram_dim=128,
        compile=True,
    )
    assert {k: model[k] for k in expected_model} == expected_model
    expected_optim = dict(
        matrix_lr=0.025,
        scalar_lr=0.025,
        tied_embed_lr=0.035,
        muon_momentum=0.99,
        muon_momentum_warmup_start=0.92,
        muon_momentum_warmup_steps=1500,
        muon_backend_steps=5,
        muon_wd=0.04,
        adam_wd=0.04,
        beta1=0.9,
        beta2=0.95,
        adam_eps=1e-8,
        grad_clip_norm=0.3,
    )
    assert {k: optim[k] for k in expected_optim} == expected_optim
    assert data["train_batch_tokens"] == 786_432 and data["train_seq_len"] == 2048
    assert data["grad_accum_steps"] is None and data["val_batch_tokens"] == 524_288
    assert trainer["precision"] == "bf16-mixed" and trainer["devices"] == 8 and trainer["max_steps"] == 20_000
    assert trainer["val_check_interval"] == 1000
    callbacks = {c["class_path"]: c.get("init_args", {}) for c in trainer["callbacks"]}
    assert callbacks["golf_lit.callbacks.WallClockLimit"]["max_wallclock_seconds"] == 600
    assert callbacks["golf_lit.callbacks.Warmdown"]["warmdown_iters"] == 3000
    assert callbacks["golf_lit.callbacks.EMA"]["decay"] == 0.997
    assert callbacks["golf_lit.callbacks.CompilePriming"]["warmup_steps"] == 20
    assert cfg["seed_everything"] == 1337


def test_override_reaches_the_model(capsys):
    cfg = print_config(capsys, "--config", str(ROOT / "configs" / "record.yaml"), "--model.xsa_last_n", "4")
    assert cfg["model"]["xsa_last_n"] == 4


def test_misspelt_key_fails_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--model.xsa_lastn", "3"])
    assert exit_info.value.code != 0
    assert "xsa_lastn" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, key",
    [
        (["--model.num_heads", "3"], "model.num_heads"),
        (["--model.num_kv_heads", "3"], "model.num_kv_heads"),
        (["--model.rope_dims", "7"], "model.rope_dims"),
        (["--model.rope_dims", "64"], "model.rope_dims"),
        (["--model.xsa_last_n", "3"], "model.xsa_last_n"),
        (["--data.train_batch_tokens", "1000"], "data.train_batch_tokens"),
        (["--model.vocab_size", "4096"], "model.vocab_size"),
        (["--data.train_files", "/nonexistent/fineweb_train_*.bin"], "/nonexistent/fineweb_train_"),
    ],
)
def test_invalid_combination_fails_before_training(capsys, tmp_path, override, key):
    code = main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "smoke.yaml"),
            "--trainer.default_root_dir",
            str(tmp_path),
            *override,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert key in err
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_smoke_config_trains_logs_and_checkpoints(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "golf_lit",
        "fit",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--trainer.max_steps",
        "4",
        "--trainer.val_check_interval",
        "2",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"^step:1/4 train_loss:\d+\.\d{4} train_time:\d+ms step_avg:", out.stdout, re.M)
    assert re.search(r"^step:4/4 val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4}", out.stdout, re.M)
    assert list(tmp_path.rglob("last.ckpt")) and list(tmp_path.rglob("metrics.csv"))


@pytest.mark.slow
def test_console_launch_on_two_cpu_ranks(tmp_path):
    """Lightning's DDP launcher re-runs the command line for rank 1, so the CLI must leave sys.argv intact."""
    cmd = [
        sys.executable,
        "-m",
        "golf_lit",
        "fit",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--trainer.devices",
        "2",
        "--trainer.strategy.class_path",
        "golf_lit.train.ddp.GolfDDP",
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--data.grad_accum_steps",
        "1",
        "--data.train_batch_tokens",
        "1024",
        "--data.val_max_tokens",
        "2048",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[rank: 1]" in out.stderr  # the second rank really ran
    assert re.search(r"^step:2/2 val_loss:\d+\.\d{4} val_bpb:", out.stdout, re.M)
    assert (tmp_path / "runs" / "smoke" / "artifact" / "submission.json").is_file()
