"""Checkpoints: reload through Lightning's API, safe loading (no code runs), whole-or-nothing writes, strict resume."""

from __future__ import annotations

import errno
import os

import lightning.pytorch as L
import pytest
import torch
from golf_lit.callbacks import EMA, ResumableCheckpoint

from golf_lit.cli import main
from golf_lit.optim.config import OptimConfig
from golf_lit.train.checkpoint import (
    CheckpointError,
    SafeCheckpointIO,
    load_checkpoint,
    load_checkpoint_model,
    resolve_resume_path,
)
from golf_lit.train.module import GolfLM

from .test_cli import ROOT
from .test_train import TINY_MODEL, make_trainer, tiny_data, tiny_module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step tiny run with EMA: its last.ckpt, the module and the EMA callback."""
    tmp = tmp_path_factory.mktemp("ckpt")
    L.seed_everything(0)
    module, ema = tiny_module(), EMA(decay=0.5)
    ckpt = ResumableCheckpoint(dirpath=tmp, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = make_trainer(tmp, [ema, ckpt], max_steps=2, plugins=[SafeCheckpointIO()])
    trainer.fit(module, tiny_data())
    return tmp / "last.ckpt", module, ema


class Marker:
    """Unpickling this creates a file: what a hostile checkpoint would do (here harmlessly)."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def last_error(capsys) -> str:
    """The CLI's error line: the last stderr line, with no traceback before it (library warnings may precede it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("golf-lit "), err[-3000:]
    return line


# ------------------------------------------------------------------------------------------------------ reload


def test_hyperparameters_are_the_constructor_arguments(trained):
    path, module, _ = trained
    hp = load_checkpoint(path)["hyper_parameters"]
    assert hp["num_layers"] == TINY_MODEL["num_layers"] and hp["optim"]["muon_momentum_warmup_steps"] == 4
    assert "model" not in hp and hp["compile"] is False
    reloaded = GolfLM.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert reloaded.model_config == module.model_config and reloaded.optim_config == module.optim_config
    # the checkpoint holds the live weights of step 2 (EMA swaps in only at train end, after the last save)
    for k, v in reloaded.gpt.state_dict().items():
        assert v.shape == module.gpt.state_dict()[k].shape


def test_optim_is_accepted_as_a_dict():
    a = GolfLM(optim={"matrix_lr": 0.02}, **TINY_MODEL)
    assert a.optim_config == OptimConfig(matrix_lr=0.02)


def test_pre_flat_checkpoints_still_rebuild():
    old = {"model": dict(TINY_MODEL), "optim": OptimConfig().to_dict(), "compile": False}
    assert GolfLM(**old).model_config.num_layers == TINY_MODEL["num_layers"]


def test_export_loads_the_ema_weights_through_the_callback_api(trained):
    path, _, _ = trained
    ckpt = load_checkpoint(path)
    averaged = EMA.averaged_state_dict_from_checkpoint(ckpt)
    model, _ = load_checkpoint_model(path)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p, averaged[k].to(p.dtype), rtol=0, atol=0)
    live, _ = load_checkpoint_model(path, use_ema=False)
    sd = {k[len("gpt.") :]: v for k, v in ckpt["state_dict"].items()}
    assert all(torch.equal(v, sd[k]) for k, v in live.state_dict().items())
    assert not torch.equal(live.tok_emb.weight, model.tok_emb.weight)


# ------------------------------------------------------------------------------------------------ safe loading


def test_hostile_pickle_is_refused_by_export_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": Marker(marker)}, evil)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    message = str(info.value)
    assert str(evil) in message and "refused" in message and "io.open" in message
    assert "\n" not in message and "weights_only=False" not in message and "will likely succeed" not in message
    assert main(["export", "--ckpt", str(evil), "--out", str(tmp_path / "out")]) == 2
    err = last_error(capsys)
    assert "evil.ckpt" in err and "refused" in err
    assert not marker.exists()


def test_hostile_pickle_is_refused_when_resuming(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Marker(marker)}, evil)
    code = main(["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--ckpt_path", str(evil)])
    assert code == 2 and "evil.ckpt" in last_error(capsys)
    with pytest.raises(CheckpointError, match="evil.ckpt.*refused"):
        SafeCheckpointIO().load_checkpoint(evil, weights_only=False)  # whatever the caller asks for
    assert not marker.exists()


def test_truncated_checkpoint_is_refused_by_name(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, _, _ = trained
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt: not a readable checkpoint \(corrupt or truncated"):
        load_checkpoint(cut)
    assert main(["export", "--ckpt", str(cut), "--out", str(tmp_path / "out")]) == 2
    assert "cut.ckpt" in last_error(capsys)
    code = main(["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--ckpt_path", str(cut)])
    assert code == 2 and "cut.ckpt: not a readable checkpoint" in last_error(capsys)


# ------------------------------------------------------------------------------------------- whole or nothing


def test_full_disk_keeps_the_previous_checkpoint(trained, tmp_path, monkeypatch):
    path, module, ema = trained
    target = tmp_path / "last.ckpt"
    target.write_bytes(path.read_bytes())
    good = target.read_bytes()
    real_save = torch.save

    def half_then_enospc(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")  # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(OSError) as info:
        SafeCheckpointIO().save_checkpoint({"state_dict": {}}, target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    monkeypatch.setattr(torch, "save", real_save)
    SafeCheckpointIO().save_checkpoint({"state_dict": {}, "x": 1}, target)
    assert load_checkpoint(target) == {"state_dict": {}, "x": 1}


# ------------------------------------------------------------------------------------------------------ resume


def test_ckpt_path_last_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no last.ckpt in '{tmp_path}'.*last-if-present"):
        resolve_resume_path("last", [tmp_path])
    assert resolve_resume_path("last-if-present", [tmp_path]) is None
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert resolve_resume_path("last", [tmp_path]) == str(tmp_path / "last.ckpt")
    assert resolve_resume_path("some.ckpt", [tmp_path]) == "some.ckpt" and resolve_resume_path(None, []) is None


def smoke_args(tmp_path, max_steps: int, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.max_steps",
        str(max_steps),
        "--trainer.val_check_interval",
        "1000",
        "--trainer.enable_progress_bar",
        "false",
        "--data.val_max_tokens",
        "512",
        "--data.train_batch_tokens",
        "512",
        *extra,
    ]


@pytest.mark.slow
def test_cli_resume_last_strict_and_if_present(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ckdir = tmp_path / "checkpoints"  # <trainer.default_root_dir>/checkpoints
    monkeypatch.setattr("golf_lit.callbacks.artifact.ArtifactExport.on_train_end", lambda *a: None)
    assert main(smoke_args(tmp_path, 2, "--ckpt_path", "last")) == 2
    assert f"no last.ckpt in '{ckdir}'" in last_error(capsys)
    assert main(smoke_args(tmp_path, 2, "--ckpt_path", "last-if-present")) == 0  # nothing there: starts fresh
    assert load_checkpoint(ckdir / "last.ckpt")["global_step"] == 2  # saved at the stop
    assert main(smoke_args(tmp_path, 3, "--ckpt_path", "last")) == 0
    assert load_checkpoint(ckdir / "last.ckpt")["global_step"] == 3
    assert "step:3/3 train_loss:" in capsys.readouterr().out
    # an explicit path: its (flat) hyperparameters parse back into the CLI's model section, then it resumes
    assert main(smoke_args(tmp_path, 4, "--ckpt_path", str(ckdir / "last.ckpt"))) == 0
    assert load_checkpoint(ckdir / "last.ckpt")["global_step"] == 4


# -------------------------------------------------------------------------------------------- output directories


def test_unwritable_output_dirs_fail_before_work_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    args = smoke_args(blocker / "run", 2)
    assert main(args) == 2
    err = last_error(capsys)
    assert "trainer.default_root_dir" in err and str(blocker / "run") in err
    assert main(["export", "--ckpt", str(blocker), "--out", str(blocker / "art")]) == 2
    err = last_error(capsys)
    assert "--out" in err and str(blocker / "art") in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_read_only_dir_is_named(tmp_path):
    from golf_lit.io import require_writable_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="x.out: output directory .*ro/sub.* cannot be created"):
            require_writable_dir(ro / "sub", "x.out")
    finally:
        ro.chmod(0o755)


def test_write_errors_during_fit_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def enospc(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", enospc)
    monkeypatch.setattr("golf_lit.callbacks.artifact.ArtifactExport.on_train_end", lambda *a: None)
    assert main(smoke_args(tmp_path, 1)) == 2  # one line, status 2, as every refusal (issue #22 item 9)
    err = last_error(capsys)
    assert err.startswith("golf-lit fit: error: ") and "last.ckpt" in err and "No space left" in err
