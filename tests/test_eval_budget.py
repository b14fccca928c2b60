"""Eval timings and budget (patched clock): phases are timed separately, a strategy that would start after the
budget is spent is refused with a message naming it, and the compile warm-up never sees validation tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from golf_lit.data.paths import SAMPLE_TOKENIZER, SAMPLE_VAL_FILES
from golf_lit.data.shards import write_shard
from golf_lit.eval.budget import EvalBudget, EvalBudgetError
from golf_lit.eval.cli import parse_config
from golf_lit.eval.evaluator import Evaluator, RankEvaluation
from golf_lit.eval.report import timing_line
from golf_lit.eval.strategies.roundtrip import Roundtrip
from golf_lit.eval.strategies.sliding import Sliding
from golf_lit.model.config import ModelConfig
from tests.conftest import write_artifact

MODEL = ModelConfig(num_layers=1, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, xsa_last_n=1,
                    bigram_vocab_size=0)
SMALL = ["--tokenizer", SAMPLE_TOKENIZER, "--accelerator", "cpu", "--num_threads", "1", "--progress", "false",
         "--sliding.seq_len", "64", "--sliding.stride", "32", "--sliding.batch_seqs", "4", "--ttt.chunk_tokens", "256",
         "--ttt.epochs", "1", "--roundtrip_batch_seqs", "4"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("budget"), MODEL)


def test_budget_helper():
    clock = FakeClock()
    budget = EvalBudget(600, clock)
    clock.now = 250.0
    budget.require("a")  # not spent: no error
    assert budget.record("a", 0.0) == 250.0
    clock.now = 600.0
    with pytest.raises(EvalBudgetError, match=r"eval_budget_seconds=600 is spent \(600.0s elapsed: a 250.0s\); "
                                              r"refusing to start b"):
        budget.require("b")
    budget.require("b", spent=False)  # rank 0's broadcast decision wins over the local clock
    assert budget.summary() == {"phases": {"a": 250.0}, "total_s": 600.0, "budget_s": 600.0, "fits": True}
    clock.now = 600.5
    assert budget.summary()["fits"] is False
    unlimited = EvalBudget(0, clock)
    clock.now = 1e9
    unlimited.require("anything")
    assert unlimited.summary()["budget_s"] is None and unlimited.summary()["fits"] is None


def slow(monkeypatch, cls, clock: FakeClock, seconds: float) -> None:
    """Make ``cls.score`` take ``seconds`` on the fake clock."""
    original = cls.score

    def score(self, ctx):
        out = original(self, ctx)
        clock.now += seconds
        return out

    monkeypatch.setattr(cls, "score", score)


def test_strategy_after_the_budget_is_refused_and_timings_are_reported(artifact, tmp_path, monkeypatch, capsys):
    clock = FakeClock()
    slow(monkeypatch, Roundtrip, clock, 350.0)
    slow(monkeypatch, Sliding, clock, 350.0)
    report = tmp_path / "eval.json"
    cfg = parse_config(["--artifact", str(artifact), "--val_files", SAMPLE_VAL_FILES, *SMALL, "--max_tokens", "300",
                        "--strategy", "roundtrip,sliding,ttt", "--report", str(report)])
    assert cfg.eval_budget_seconds == 600  # the challenge's default
    expected = (r"600 is spent \(700.0s elapsed: data 0.0s, deserialize 0.0s, warmup 0.0s, roundtrip 350.0s, "
                r"sliding_window 350.0s\); refusing to start ttt_sliding_window")
    with pytest.raises(EvalBudgetError, match=expected):
        Evaluator(cfg, clock=clock).run()
    got = json.loads(report.read_text())
    assert [r["name"] for r in got["results"]] == ["final_int6_roundtrip", "final_int6_sliding_window"]
    assert [r["seconds"] for r in got["results"]] == [350.0, 350.0]
    assert got["timings"]["phases"] == {"data": 0.0, "deserialize": 0.0, "warmup": 0.0, "roundtrip": 350.0,
                                        "sliding_window": 350.0}
    # a larger budget: everything runs, the total fits, and the timing line says so
    cfg.eval_budget_seconds = 800
    clock.now = 0.0
    out = Evaluator(cfg, clock=clock).run()
    assert [r["strategy"] for r in out["results"]] == ["roundtrip", "sliding", "ttt"]
    assert out["timings"]["total_s"] == 700.0 and out["timings"]["fits"] is True
    assert timing_line(out["timings"]) in capsys.readouterr().out
    assert timing_line(out["timings"]).endswith("total:700.00s budget:800s fits:true")


class Recording(nn.Module):
    """Stands in for torch.compile's wrapper: records every input it is called with."""

    def __init__(self, inner: nn.Module, calls: list) -> None:
        super().__init__()
        self.inner = inner
        self.calls = calls

    def forward(self, ids):
        self.calls.append(ids.detach().clone())
        return self.inner(ids)


def warmup_and_run_inputs(artifact: Path, val_files: str, monkeypatch) -> tuple[list, list, dict]:
    calls: list = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: Recording(module, calls))
    seen: dict = {}
    original = RankEvaluation.warmup

    def spy(self, ctx):
        original(self, ctx)
        seen["warmup"] = list(calls)

    monkeypatch.setattr(RankEvaluation, "warmup", spy)
    cfg = parse_config(["--artifact", str(artifact), "--val_files", val_files, *SMALL, "--compile", "true",
                        "--strategy", "roundtrip,sliding,ttt"])
    out = Evaluator(cfg).run()
    return seen["warmup"], calls[len(seen["warmup"]) :], out


def broken_warmup_on_validation_tokens(self, ctx):
    """Broken: warm up on the validation stream itself."""
    for strategy in self.strategies:
        strategy.warmup(ctx)


@pytest.mark.parametrize("broken", [False, True])
def test_warmup_never_sees_validation_tokens(artifact, tmp_path, monkeypatch, broken):
    if broken:
        monkeypatch.setattr(RankEvaluation, "warmup", broken_warmup_on_validation_tokens)
    g = torch.Generator().manual_seed(1)
    streams = []
    for k in range(2):  # two different validation sets
        write_shard(tmp_path / f"v{k}" / "val_000000.bin", torch.randint(0, 1024, (601,), generator=g))
        streams.append(warmup_and_run_inputs(artifact, str(tmp_path / f"v{k}" / "val_*.bin"), monkeypatch))
    (warm0, run0, out0), (warm1, run1, _) = streams
    assert warm0 and len(warm0) == len(warm1)
    shapes = {tuple(x.shape) for x in warm0}
    assert (4, 64) in shapes  # a full batch of roundtrip/sliding windows was compiled before the timed runs
    same = all(torch.equal(a, b) for a, b in zip(warm0, warm1))
    assert same != broken  # warm-up inputs do not depend on the validation tokens (the broken variant's do)
    assert not all(torch.equal(a, b) for a, b in zip(run0, run1))  # not vacuous: the scored runs do
    if not broken:
        assert "warmup" in out0["timings"]["phases"]
        assert list(out0["timings"]["phases"])[:3] == ["data", "deserialize", "warmup"]
