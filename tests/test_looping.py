"""LoopingSwitch: one-time switch at model.enable_looping_at, logged, checkpointed, resumed, and DDP-safe."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
from golf_lit.callbacks import ArtifactExport, CompilePriming, LoopingSwitch, WallClockLimit
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from golf_lit.optim.config import OptimConfig
from golf_lit.train.module import GolfLM

from .test_train import TINY_MODEL, Recorder, make_trainer, tiny_data

LOOPED = dict(TINY_MODEL, num_loops=1, loop_start=0, loop_end=1)  # 2 blocks -> virtual order 0,1,0,1


def looped_module(enable_looping_at: float = 0.5, **kw) -> GolfLM:
    return GolfLM(
        optim=OptimConfig(muon_momentum_warmup_steps=4), **{**LOOPED, "enable_looping_at": enable_looping_at, **kw}
    )


class LoopLog(Callback):
    """Which form every training step ran in."""

    def __init__(self) -> None:
        self.forms: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.forms.append(pl_module.gpt.looping_active)


def test_switch_by_steps_once_logged_and_checkpointed(tmp_path, capsys):
    L.seed_everything(0)
    log, switch = LoopLog(), LoopingSwitch()
    module = looped_module(0.5)
    assert not module.gpt.looping_active  # trains plain until the switch
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1)
    make_trainer(tmp_path, [switch, log, ckpt], max_steps=4).fit(module, tiny_data())
    assert log.forms == [False, False, True, True]  # frac = global_step / max_steps reaches 0.5 before step 3
    out = capsys.readouterr().out
    assert out.count("layer_loop:enabled") == 1 and "layer_loop:enabled step:2 frac:0.500" in out
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["looping_active"] is True
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("LoopingSwitch"))
    assert state == {"switched_step": 2, "switched_frac": 0.5}


def test_switch_uses_the_wall_clock_fraction(tmp_path, monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr("golf_lit.callbacks.wallclock.time.perf_counter", lambda: clock["t"])

    class Tick(Callback):  # every step takes 100 ms of a 1 s budget
        def on_train_batch_end(self, *args) -> None:
            clock["t"] += 0.1

    log = LoopLog()
    make_trainer(tmp_path, [Tick(), WallClockLimit(1.0), LoopingSwitch(), log], max_steps=100).fit(
        looped_module(0.35), tiny_data()
    )
    assert log.forms == [False] * 4 + [True] * 6  # 400 ms / 1000 ms >= 0.35 before the 5th step; the cap ends at 10

    class Budget(WallClockLimit):  # a clock with fraction() (cap minus reserve) is preferred over training_ms/max_ms
        def fraction(self):
            return 2 * self.training_ms() / self.max_ms

    clock["t"], log = 1000.0, LoopLog()
    make_trainer(tmp_path, [Tick(), Budget(1.0), LoopingSwitch(), log], max_steps=3).fit(
        looped_module(0.35), tiny_data()
    )
    assert log.forms == [False, False, True]


def test_resume_after_the_switch_continues_looped(tmp_path, capsys):
    class Killed(Exception):
        pass

    class Kill(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 4:
                raise Killed  # the step-3 checkpoint (looped since step 3) is the last one written

    def callbacks(run):
        return [
            LoopingSwitch(),
            Recorder(),
            LoopLog(),
            ModelCheckpoint(dirpath=tmp_path / run, save_last=True, save_top_k=0, every_n_train_steps=1),
        ]

    L.seed_everything(0)
    full = callbacks("a")
    make_trainer(tmp_path / "a", full, max_steps=6).fit(looped_module(0.3), tiny_data())
    assert full[2].forms == [False, False, True, True, True, True]  # 2/6 >= 0.3
    L.seed_everything(0)
    with pytest.raises(Killed):
        make_trainer(tmp_path / "b", [*callbacks("b"), Kill()], max_steps=6).fit(looped_module(0.3), tiny_data())
    capsys.readouterr()
    resumed = callbacks("b")
    module = looped_module(0.3)
    make_trainer(tmp_path / "b", resumed, max_steps=6).fit(module, tiny_data(), ckpt_path=tmp_path / "b" / "last.ckpt")
    assert resumed[2].forms == [True] * 3 and resumed[0].switched_step == 2
    assert "layer_loop:enabled" not in capsys.readouterr().out  # not switched (or logged) twice
    assert resumed[1].losses == full[1].losses[3:]
    for a, b in zip(full[1].weights[-1].values(), resumed[1].weights[-1].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_training_end_switches_on_for_export(tmp_path, capsys):
    log = LoopLog()
    module = looped_module(1.0)
    make_trainer(tmp_path, [LoopingSwitch(), log], max_steps=2).fit(module, tiny_data())
    assert log.forms == [False, False] and module.gpt.looping_active
    assert "layer_loop:enabled step:2 frac:1.000 (end of training" in capsys.readouterr().out


def test_misconfigured_switch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs callbacks.LoopingSwitch"):
        make_trainer(tmp_path, [], max_steps=1).fit(looped_module(0.5), tiny_data())
    with pytest.raises(ValueError, match="LoopingSwitch before callbacks.ArtifactExport"):
        make_trainer(tmp_path, [ArtifactExport(), LoopingSwitch()], max_steps=1).fit(looped_module(0.5), tiny_data())
    assert looped_module(0.0).gpt.looping_active  # enable_looping_at 0: looped from the start, no callback needed


class SaveGradsAndForm(Callback):
    """Rank 0's all-reduced gradients and the model form of the last step."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_rank == 0:
            grads = {k: p.grad.clone() for k, p in pl_module.gpt.named_parameters()}
            torch.save({"grads": grads, "looping": pl_module.gpt.looping_active}, self.path)


def _ddp_looping_run(tmp_path, devices: int, grad_accum: int):
    L.seed_everything(0)
    module = looped_module(
        0.5, num_layers=3, skip_gates_enabled=True, parallel_start_layer=2, attn_gate_variant="sparse"
    )
    trainer = make_trainer(
        tmp_path,
        [CompilePriming(1), LoopingSwitch(), SaveGradsAndForm(tmp_path / "grads.pt")],
        max_steps=2,  # step 1 plain, step 2 looped
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
    )
    trainer.fit(module, tiny_data(grad_accum_steps=grad_accum))
    saved = torch.load(tmp_path / "grads.pt")
    return float(trainer.callback_metrics["train/loss"]), saved


@pytest.mark.slow
def test_two_ranks_switch_looping_mid_run_without_unused_parameters(tmp_path):
    """Plain DDP (no find_unused_parameters) through the switch; the looped step's gradients equal one rank's."""
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    loss2, s2 = _ddp_looping_run(tmp_path / "ddp", devices=2, grad_accum=1)
    loss1, s1 = _ddp_looping_run(tmp_path / "one", devices=1, grad_accum=2)
    assert s2["looping"] and s1["looping"]
    assert loss2 == pytest.approx(loss1, rel=1e-6)
    assert set(s1["grads"]) == set(s2["grads"])
    for k in s1["grads"]:
        torch.testing.assert_close(s2["grads"][k], s1["grads"][k], rtol=1e-4, atol=1e-7)
