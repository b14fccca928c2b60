"""Each golf-lit callback on its own, Lightning-test style: a BoringModel-sized module, one behaviour per test.

``Tiny`` implements exactly the interface ``GolfLM`` declares for callbacks (``gpt``, ``lr_multiplier``,
``last_train_loss``, ``last_val``, ``lightning_optimizers``, ``accumulate_gradients``, ``optimizer_step_all``) on a
4x4 linear layer, and ``TinyData`` the data module's ``step_batch``; so these tests also show that the callbacks
need nothing else. Clocks are patched: no test depends on real time.
"""

from __future__ import annotations

import json

import lightning.pytorch as L
import pytest
import torch
from golf_lit.callbacks import (
    EMA,
    ArtifactExport,
    CompilePriming,
    RecordLog,
    ResumableCheckpoint,
    WallClockLimit,
    Warmdown,
)
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from golf_lit.runs.export import ARTIFACT_NAME

from .test_train import make_trainer, tiny_data, tiny_module


class Tiny(L.LightningModule):
    """GolfLM's callback interface on a 4x4 linear layer (loss: mean squared output)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.gpt = torch.nn.Linear(4, 4, bias=False)
        self.lr_multiplier = 1.0
        self.last_train_loss: torch.Tensor | None = None
        self.last_val: tuple[float, float] | None = None

    def configure_optimizers(self):
        return torch.optim.SGD(self.gpt.parameters(), lr=0.1, momentum=0.9)

    def lightning_optimizers(self) -> list:
        opts = self.optimizers()
        return opts if isinstance(opts, list) else [opts]

    def accumulate_gradients(self, x: torch.Tensor) -> torch.Tensor:
        loss = self.gpt(x).pow(2).mean()
        self.manual_backward(loss)
        return loss.detach()

    def compile_forms(self) -> list[bool]:
        return [False]

    def compile_form(self) -> bool:
        return False

    def set_compile_form(self, form: bool) -> None:
        assert form is False

    def optimizer_step_all(self, step: int, count_step: bool = True) -> None:
        for opt in self.lightning_optimizers():
            for group in opt.optimizer.param_groups:
                group["lr"] = 0.1 * self.lr_multiplier
            opt.step() if count_step else opt.optimizer.step()
            opt.optimizer.zero_grad(set_to_none=True)

    def training_step(self, batch, batch_idx):
        self.last_train_loss = self.accumulate_gradients(*batch)
        self.optimizer_step_all(self.global_step)
        return self.last_train_loss

    def validation_step(self, batch, batch_idx) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.last_val = (1.5, 2.25)


class TinyData(L.LightningDataModule):
    """Step ``k``'s batch is a fixed function of ``k``; ``step_batch`` records which steps were read."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[int] = []

    @staticmethod
    def _batch(step: int) -> tuple[torch.Tensor]:
        return (torch.randn(2, 4, generator=torch.Generator().manual_seed(step)),)

    def step_batch(self, step: int) -> tuple[torch.Tensor]:
        self.read.append(step)
        return self._batch(step)

    def train_dataloader(self) -> DataLoader:
        start = self.trainer.global_step
        return DataLoader([self._batch(s) for s in range(start, start + 100)], batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader([self._batch(-1)], batch_size=None)


class Weights(Callback):
    """Copies of the weights: before training and after every step."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.init = pl_module.gpt.weight.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.steps.append(pl_module.gpt.weight.detach().clone())
        self.losses.append(float(pl_module.last_train_loss))


class Clock:
    """A patched ``time.perf_counter`` that moves only when told to."""

    def __init__(self, monkeypatch) -> None:
        self.t = 1000.0
        monkeypatch.setattr("golf_lit.callbacks.wallclock.time.perf_counter", lambda: self.t)


class Tick(Callback):
    """Each training step takes ``step_s`` seconds and each validation ``val_s`` seconds of the patched clock."""

    def __init__(self, clock: Clock, step_s: float = 0.1, val_s: float = 0.0) -> None:
        self.clock, self.step_s, self.val_s = clock, step_s, val_s

    def on_train_batch_end(self, *args) -> None:
        self.clock.t += self.step_s

    def on_validation_batch_end(self, *args) -> None:
        self.clock.t += self.val_s


def fit(tmp_path, callbacks, max_steps, data=None, **kw) -> tuple[L.Trainer, Tiny]:
    L.seed_everything(0)
    module = Tiny()
    trainer = make_trainer(tmp_path, callbacks, max_steps=max_steps, **kw)
    trainer.fit(module, datamodule=data or TinyData())
    return trainer, module


# --------------------------------------------------------------------------------------------------------- EMA


def test_ema_swaps_in_the_decayed_average_at_train_end(tmp_path):
    w = Weights()
    ema = EMA(decay=0.5)
    _, module = fit(tmp_path, [w, ema], max_steps=2)
    expected = 0.25 * w.init + 0.25 * w.steps[0] + 0.5 * w.steps[1]  # shadow starts at the initial weights
    torch.testing.assert_close(module.gpt.weight, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ema.averaged_state_dict()["weight"], expected, rtol=1e-6, atol=1e-7)
    assert not torch.equal(expected, w.steps[1])  # the swap changed something


def test_ema_weights_read_back_from_a_checkpoint_dict(tmp_path):
    ema = EMA(decay=0.5)
    trainer, _ = fit(tmp_path, [ema], max_steps=2)
    ckpt = trainer._checkpoint_connector.dump_checkpoint()
    from_ckpt = EMA.averaged_state_dict_from_checkpoint(ckpt)
    assert set(from_ckpt) == {"weight"}
    torch.testing.assert_close(from_ckpt["weight"], ema.averaged_state_dict()["weight"], rtol=0, atol=0)
    assert EMA.averaged_state_dict_from_checkpoint({"callbacks": {}}) is None


def test_ema_copy_into_rejects_other_parameter_names():
    with pytest.raises(ValueError, match="missing.*'weight'"):
        EMA.copy_into(torch.nn.Linear(4, 4, bias=False), {"bias": torch.zeros(4)})


# ---------------------------------------------------------------------------------------------------- Warmdown


def test_warmdown_without_a_clock_follows_the_last_steps(tmp_path):
    seen = []

    class Mult(Callback):
        def on_train_batch_start(self, trainer, pl_module, *args) -> None:
            seen.append(pl_module.lr_multiplier)

    fit(tmp_path, [Warmdown(warmdown_iters=4), Mult()], max_steps=6)  # Mult runs after Warmdown: sees the new value
    assert seen == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.5, 0.25])  # (6 - step) / 4 once step >= 2


def test_warmdown_with_a_capped_clock_ends_at_the_cap(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    seen = []

    class Mult(Callback):
        def on_train_batch_start(self, trainer, pl_module, *args) -> None:
            seen.append(pl_module.lr_multiplier)

    cbs = [Tick(clock, 0.125), WallClockLimit(max_wallclock_seconds=1.0), Warmdown(warmdown_iters=4), Mult()]
    trainer, _ = fit(tmp_path, cbs, max_steps=100)
    assert trainer.global_step == 8  # 8 x 125 ms reaches the 1 s cap
    # step_ms = 125, warmdown_ms = 4 x 125 = 500: the multiplier is min(1, (1000 - elapsed) / 500)
    assert seen == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25])


# ---------------------------------------------------------------------------------------------- WallClockLimit


def test_wallclock_stops_at_the_cap_and_excludes_validation(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    wall = WallClockLimit(max_wallclock_seconds=0.45)
    trainer, _ = fit(tmp_path, [Tick(clock, 0.1, val_s=10.0), wall], max_steps=50, val_check_interval=2)
    assert trainer.global_step == 5  # 5 x 100 ms >= 450 ms; the 10 s validations do not count
    assert wall.training_ms() == pytest.approx(500.0)


def test_wallclock_without_a_cap_never_stops(tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    wall = WallClockLimit(max_wallclock_seconds=None)
    trainer, _ = fit(tmp_path, [Tick(clock, 100.0), wall], max_steps=7)
    assert trainer.global_step == 7 and wall.training_ms() == pytest.approx(700_000.0)


def test_wallclock_state_continues_after_a_reload(monkeypatch):
    clock = Clock(monkeypatch)
    saved = {"elapsed_ms": 1234.0}
    wall = WallClockLimit(600)
    wall.load_state_dict(saved)
    assert wall.training_ms() == 1234.0
    clock.t += 5.0  # not started: the clock does not run until the next training batch
    assert wall.training_ms() == 1234.0
    assert wall.state_dict() == saved


# ---------------------------------------------------------------------------------------------- CompilePriming


def test_compile_priming_reads_steps_by_index_and_restores_everything(tmp_path):
    runs = []
    for callbacks in ([], [CompilePriming(warmup_steps=3)]):
        w, data = Weights(), TinyData()
        trainer, module = fit(tmp_path, [*callbacks, w], max_steps=4, data=data)
        runs.append((w, trainer, module, data))
    (plain, _, _, data0), (primed, trainer, module, data1) = runs
    assert data0.read == [] and data1.read == [0, 1, 2]  # priming read steps 0..2 through step_batch
    assert trainer.global_step == 4  # priming steps are not counted
    assert primed.losses == plain.losses  # training saw the same weights, momentum and data as without priming
    torch.testing.assert_close(primed.steps[-1], plain.steps[-1], rtol=0, atol=0)


def test_compile_priming_really_steps(tmp_path):
    """The priming steps change the weights (then restored), so the test above is not vacuous."""

    class Peek(CompilePriming):
        def on_train_start(self, trainer, pl_module) -> None:
            before = pl_module.gpt.weight.detach().clone()
            original = pl_module.optimizer_step_all
            seen = []

            def spy(step, count_step=True):
                original(step, count_step)
                seen.append(pl_module.gpt.weight.detach().clone())

            pl_module.optimizer_step_all = spy
            super().on_train_start(trainer, pl_module)
            pl_module.optimizer_step_all = original
            assert len(seen) == 2 and not torch.equal(seen[-1], before)
            torch.testing.assert_close(pl_module.gpt.weight, before, rtol=0, atol=0)

    fit(tmp_path, [Peek(warmup_steps=2)], max_steps=1)


# --------------------------------------------------------------------------------------------------- RecordLog


def test_record_log_lines_have_the_record_shape(tmp_path, monkeypatch, capsys):
    clock = Clock(monkeypatch)
    w = Weights()
    callbacks = [Tick(clock, 0.1), WallClockLimit(600), RecordLog(train_log_every=2), w]
    fit(tmp_path, callbacks, max_steps=3, val_check_interval=3)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step:")]
    # Tick is listed first, so each line already includes its step's 100 ms
    assert lines == [
        f"step:1/3 train_loss:{w.losses[0]:.4f} train_time:100ms step_avg:100.00ms",
        f"step:2/3 train_loss:{w.losses[1]:.4f} train_time:200ms step_avg:100.00ms",
        f"step:3/3 train_loss:{w.losses[2]:.4f} train_time:300ms step_avg:100.00ms",
        "step:3/3 val_loss:1.5000 val_bpb:2.2500 train_time:300ms step_avg:100.00ms",
    ]


def test_record_log_without_a_clock_prints_no_times(tmp_path, capsys):
    fit(tmp_path, [RecordLog(train_log_every=0)], max_steps=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step:")]
    assert len(lines) == 2 and all(ln.split()[1].startswith("train_loss:") and len(ln.split()) == 2 for ln in lines)


# ----------------------------------------------------------------------------------------- ResumableCheckpoint


def test_resumable_checkpoint_saves_every_n_steps_and_at_the_stop(tmp_path, monkeypatch):
    saved = []

    class Spy(ResumableCheckpoint):
        def _save_checkpoint(self, trainer, filepath) -> None:
            saved.append((trainer.global_step, filepath.rsplit("/", 1)[-1]))
            super()._save_checkpoint(trainer, filepath)

    ckpt = Spy(dirpath=tmp_path / "ck", save_last=True, save_top_k=0, every_n_train_steps=3)
    fit(tmp_path, [ckpt], max_steps=7)
    assert saved == [(3, "last.ckpt"), (6, "last.ckpt"), (7, "last.ckpt")]
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["global_step"] == 7


# ---------------------------------------------------------------------------------------------- ArtifactExport


def test_artifact_export_exports_the_ema_weights_in_either_order(tmp_path):
    """Listing ArtifactExport before EMA (the swapped YAML order) exports the same EMA weights, not the live ones."""
    from golf_lit.artifact import load_artifact_state_dict
    from golf_lit.model.config import ModelConfig
    from golf_lit.model.gpt import GPT

    class Live(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            self.state = {k: v.detach().clone() for k, v in pl_module.gpt.state_dict().items()}

    blobs = []
    for order in ("ema-first", "export-first"):
        L.seed_everything(0)
        live, ema = Live(), EMA(decay=0.5)
        export = ArtifactExport(dirpath=str(tmp_path / order), eval_pre_quant=False)
        callbacks = [live, ema, export] if order == "ema-first" else [live, export, ema]
        make_trainer(tmp_path / order, callbacks, max_steps=2).fit(tiny_module(), tiny_data())
        blobs.append((tmp_path / order / ARTIFACT_NAME).read_bytes())
        cfg = json.loads((tmp_path / order / "config.json").read_text())
        fresh = GPT(ModelConfig(**cfg["model"]))
        exported = load_artifact_state_dict(tmp_path / order / ARTIFACT_NAME, fresh.state_dict())["tok_emb.weight"]
        to_ema = (exported - ema.averaged_state_dict()["tok_emb.weight"]).abs().mean()
        to_live = (exported - live.state["tok_emb.weight"]).abs().mean()
        assert to_ema * 10 < to_live, (order, float(to_ema), float(to_live))
    assert blobs[0] == blobs[1]


def test_artifact_export_checks_its_directory_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    steps = Weights()
    with pytest.raises(ValueError, match="ArtifactExport.dirpath.*file"):
        fit(tmp_path, [steps, ArtifactExport(dirpath=str(blocker / "artifact"))], max_steps=1)
    assert steps.losses == []
