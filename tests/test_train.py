"""End-to-end training on tiny configs: loss falls, step counting, callbacks, resume, DDP equivalence."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
from golf_lit.callbacks import EMA, CompilePriming, RecordLog, WallClockLimit, Warmdown
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from golf_lit.data.datamodule import GolfDataModule
from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_TRAIN_FILES, SAMPLE_VAL_FILES
from golf_lit.optim.config import OptimConfig
from golf_lit.train.module import GolfLM

TINY_MODEL = dict(
    vocab_size=1024,
    num_layers=2,
    model_dim=64,
    num_heads=4,
    num_kv_heads=2,
    rope_dims=8,
    xsa_last_n=2,
    bigram_vocab_size=64,
    bigram_dim=64,
)


def tiny_module(**optim) -> GolfLM:
    return GolfLM(optim=OptimConfig(muon_momentum_warmup_steps=4, **optim), **TINY_MODEL)


def tiny_data(**kw) -> GolfDataModule:
    args = dict(
        train_files=SAMPLE_TRAIN_FILES,
        val_files=SAMPLE_VAL_FILES,
        tokenizer_path=SAMPLE_TOKENIZER,
        train_batch_tokens=256,
        train_seq_len=32,
        grad_accum_steps=1,
        val_batch_tokens=512,
        val_max_tokens=1024,
    )
    args.update(kw)
    return GolfDataModule(**args)


class Recorder(Callback):
    """Records the training loss and a copy of the weights after every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(pl_module.last_train_loss))
        self.weights.append({k: v.detach().clone() for k, v in pl_module.gpt.state_dict().items()})


def make_trainer(tmp_path, callbacks, max_steps, **kw) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        check_val_every_n_epoch=None,
        val_check_interval=10_000,
        default_root_dir=tmp_path,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    args.update(kw)
    return L.Trainer(callbacks=callbacks, **args)


def test_loss_falls_and_global_step_counts_optimizer_steps(tmp_path):
    L.seed_everything(0)
    rec = Recorder()
    module = tiny_module()
    trainer = make_trainer(tmp_path, [rec], max_steps=40)
    trainer.fit(module, tiny_data(train_batch_tokens=512))
    assert trainer.global_step == 40  # one per optimizer step, not per optimizer.step() call (3 optimizers)
    for opt in trainer.optimizers:
        if isinstance(opt, torch.optim.AdamW):
            assert all(int(s["step"]) == 40 for s in opt.state.values())
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert rec.losses[0] == pytest.approx(6.93, abs=0.1)  # ln(1024): the untrained model is near uniform
    assert first - last > 1.0, (first, last)


def test_ema_is_the_decayed_average_of_step_weights(tmp_path):
    L.seed_everything(0)
    module = tiny_module()
    w0 = {k: v.detach().clone() for k, v in module.gpt.state_dict().items()}
    rec = Recorder()
    trainer = make_trainer(tmp_path, [rec, EMA(decay=0.5)], max_steps=2)
    trainer.fit(module, tiny_data())
    w1, w2 = rec.weights
    for k, v in module.gpt.state_dict().items():  # EMA swapped in at the end
        expected = 0.25 * w0[k] + 0.25 * w1[k] + 0.5 * w2[k]
        torch.testing.assert_close(v, expected, rtol=1e-6, atol=1e-7)


def test_compile_priming_leaves_training_unchanged(tmp_path):
    runs = []
    for callbacks in ([], [CompilePriming(warmup_steps=3)]):
        L.seed_everything(0)
        rec = Recorder()
        module = tiny_module()
        trainer = make_trainer(tmp_path, [*callbacks, rec], max_steps=3)
        trainer.fit(module, tiny_data())
        runs.append(rec)
    assert runs[0].losses == runs[1].losses
    for a, b in zip(runs[0].weights[-1].values(), runs[1].weights[-1].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_warmdown_step_fallback_and_wallclock_cap(tmp_path, monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr("golf_lit.callbacks.wallclock.time.perf_counter", lambda: clock["t"])

    class Tick(Callback):  # each training step takes 100 ms, each validation 10 s (which must not count)
        def on_train_batch_end(self, *args) -> None:
            clock["t"] += 0.1

        def on_validation_batch_end(self, *args) -> None:
            clock["t"] += 10.0

    mults = []

    class Mult(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            mults.append(pl_module.lr_multiplier)

    wall = WallClockLimit(max_wallclock_seconds=0.45)
    trainer = make_trainer(
        tmp_path, [Tick(), wall, Warmdown(warmdown_iters=2), Mult()], max_steps=50, val_check_interval=2
    )
    trainer.fit(tiny_module(), tiny_data())
    assert trainer.global_step == 5  # 5 x 100 ms >= 450 ms; the 10 s validations are excluded
    assert wall.elapsed_ms == pytest.approx(500.0)
    # wall-clock warmdown: step_ms = 100, warmdown_ms = 200, remaining = 450 - elapsed
    assert mults == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.25])

    mults.clear()
    trainer = make_trainer(tmp_path, [Warmdown(warmdown_iters=4), Mult()], max_steps=6)
    trainer.fit(tiny_module(), tiny_data())
    assert mults == pytest.approx([1.0, 1.0, 1.0, 0.75, 0.5, 0.25])  # step-based: (6 - step) / 4 from step 2


def test_resume_continues_exactly(tmp_path):
    """A run killed after step 3 and resumed from last.ckpt reproduces the uninterrupted run exactly."""

    def callbacks(run: str):
        return [
            WallClockLimit(None),
            Warmdown(warmdown_iters=4),
            EMA(decay=0.9),
            Recorder(),
            ModelCheckpoint(dirpath=tmp_path / run, save_last=True, save_top_k=0, every_n_train_steps=1),
        ]

    class Killed(Exception):
        pass

    class Kill(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                raise Killed  # dies before the step-3 checkpoint is written (checkpoint callbacks run last)

    L.seed_everything(0)
    full = callbacks("a")
    make_trainer(tmp_path / "a", full, max_steps=6).fit(tiny_module(), tiny_data())

    L.seed_everything(0)
    killed = callbacks("b")
    with pytest.raises(Killed):
        make_trainer(tmp_path / "b", [*killed, Kill()], max_steps=6).fit(tiny_module(), tiny_data())
    ckpt = torch.load(tmp_path / "b" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    L.seed_everything(123)  # the resumed run must not depend on fresh randomness
    resumed = callbacks("b")
    make_trainer(tmp_path / "b", resumed, max_steps=6).fit(
        tiny_module(), tiny_data(), ckpt_path=tmp_path / "b" / "last.ckpt"
    )
    assert len(resumed[3].losses) == 4  # steps 3..6
    assert killed[3].losses[:2] + resumed[3].losses == full[3].losses
    for a, b in zip(full[3].weights[-1].values(), resumed[3].weights[-1].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for k in full[2].shadow:
        torch.testing.assert_close(full[2].shadow[k], resumed[2].shadow[k], rtol=0, atol=0)


def test_checkpoint_write_crash_keeps_previous(tmp_path, monkeypatch):
    L.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = make_trainer(tmp_path, [ckpt], max_steps=2)
    trainer.fit(tiny_module(), tiny_data())
    last = tmp_path / "last.ckpt"
    good = last.read_bytes()
    import fsspec.implementations.local as local

    def crash(self, *args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(local.LocalFileOpener, "write", crash)
    with pytest.raises(OSError, match="injected"):
        trainer.save_checkpoint(last)
    assert last.read_bytes() == good
    assert torch.load(last, weights_only=False)["global_step"] == 2


def test_record_log_lines(tmp_path, capsys):
    L.seed_everything(0)
    trainer = make_trainer(
        tmp_path, [WallClockLimit(600), RecordLog(train_log_every=2)], max_steps=4, val_check_interval=4
    )
    trainer.fit(tiny_module(), tiny_data())
    out = capsys.readouterr().out
    import re

    assert re.search(r"^step:1/4 train_loss:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms$", out, re.M)
    assert re.search(r"^step:4/4 val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} train_time:\d+ms step_avg:", out, re.M)


class SaveGrads(Callback):
    """Saves rank 0's (all-reduced, clipped) gradients just before the optimizers step."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_rank == 0:
            torch.save({k: p.grad.clone() for k, p in pl_module.gpt.named_parameters()}, self.path)


def _ddp_run(tmp_path, devices: int, grad_accum: int):
    L.seed_everything(0)
    module = tiny_module()
    # compile priming runs too, to show it is harmless under DDP (it restores everything it touched)
    trainer = make_trainer(
        tmp_path,
        [CompilePriming(2), SaveGrads(tmp_path / "grads.pt")],
        max_steps=1,
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
    )
    trainer.fit(module, tiny_data(grad_accum_steps=grad_accum))
    grads = torch.load(tmp_path / "grads.pt")
    return float(trainer.callback_metrics["train/loss"]), grads, module.gpt.state_dict()


def test_two_ranks_equal_one_rank_with_two_micro_batches(tmp_path):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    loss2, g2, w2 = _ddp_run(tmp_path / "ddp", devices=2, grad_accum=1)
    loss1, g1, w1 = _ddp_run(tmp_path / "one", devices=1, grad_accum=2)
    assert loss2 == pytest.approx(loss1, rel=1e-6)
    assert set(g1) == set(g2) and len(g1) == len(w1)
    for k in g1:  # DDP's averaged gradients equal the accumulated ones (summation order aside)
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-4, atol=1e-7)
    init = tiny_module().gpt.state_dict()
    for k in w1:
        # Muon's bf16 Newton-Schulz magnifies the last-ulp gradient differences for the zero-initialised
        # projections (rank-deficient gradients), so weights agree to ~2% of one lr-sized step.
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=0.02 * 0.025)
    assert not torch.equal(w1["blocks.0.attn.c_q.weight"], init["blocks.0.attn.c_q.weight"])  # a real step


def test_reserve_stops_the_clock_early_and_drives_the_fraction_warmdown(tmp_path, monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr("golf_lit.callbacks.wallclock.time.perf_counter", lambda: clock["t"])

    class Tick(Callback):  # each training step takes 100 ms
        def on_train_batch_end(self, *args) -> None:
            clock["t"] += 0.1

    mults = []

    class Mult(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            mults.append(pl_module.lr_multiplier)

    wall = WallClockLimit(max_wallclock_seconds=0.65, reserve_seconds=0.2)  # budget 450 ms
    trainer = make_trainer(tmp_path, [Tick(), wall, Warmdown(warmdown_frac=0.5, min_lr=0.3), Mult()], max_steps=50)
    trainer.fit(tiny_module(), tiny_data())
    assert trainer.global_step == 5  # 500 ms >= 450 ms; without the reserve it would run to 700 ms
    # frac at each step start = 100 k / 450: 0, 0.22, 0.44 -> 1; 0.67 -> 0.33 / 0.5; 0.89 -> 0.22, floored at 0.3
    assert mults == pytest.approx([1.0, 1.0, 1.0, 2.0 / 3.0, 0.3])
