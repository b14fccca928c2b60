"""WallClockLimit budget and fraction with a reserve; Warmdown rules on a stand-in trainer (docs/top-stack.md §4.3)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from callbacks import WallClockLimit, Warmdown


def trainer_with(clock: WallClockLimit | None, step: int = 0, max_steps: int = -1) -> SimpleNamespace:
    return SimpleNamespace(callbacks=[clock] if clock else [], global_step=step, max_steps=max_steps)


def clock_at(ms: float, cap: float | None = 600.0, reserve: float = 0.0) -> WallClockLimit:
    clock = WallClockLimit(cap, reserve_seconds=reserve)
    clock.elapsed_ms = ms  # paused clock: training_ms() == elapsed_ms
    return clock


def test_budget_and_fraction():
    clock = clock_at(299_750.0, reserve=0.5)
    assert clock.budget_ms() == 599_500.0 and clock.fraction() == 0.5
    assert clock_at(300_000.0).budget_ms() == 600_000.0 and clock_at(300_000.0).fraction() == 0.5
    assert clock_at(1.0, cap=None).budget_ms() is None and clock_at(1.0, cap=None).fraction() is None


@pytest.mark.parametrize("cap,reserve", [(600, 600), (600, 700), (600, -1.0), (10, float("nan"))])
def test_reserve_must_fit_in_the_cap(cap, reserve):
    with pytest.raises(ValueError, match="WallClockLimit.reserve_seconds"):
        WallClockLimit(cap, reserve_seconds=reserve)


def test_top_rule_on_the_clock_fraction():
    wd = Warmdown(warmdown_frac=0.85, min_lr=0.1)
    for ms, expected in [(0.0, 1.0), (89_925.0, 1.0), (344_712.5, 0.5), (548_542.5, 0.1), (599_000.0, 0.1)]:
        # budget 599,500 ms: 344,712.5 ms is frac 0.575 -> 0.425 / 0.85
        assert wd.multiplier(trainer_with(clock_at(ms, reserve=0.5), step=99)) == pytest.approx(expected)


def test_top_rule_without_cap_uses_steps():
    wd = Warmdown(warmdown_frac=0.5, min_lr=0.25)
    got = [wd.multiplier(trainer_with(clock_at(0.0, cap=None), step=s, max_steps=8)) for s in range(8)]
    # frac = s / 8; decay from frac 0.5: (1 - frac) / 0.5 = 1, 0.75, 0.5, 0.25 (the floor)
    assert got == pytest.approx([1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25])
    assert wd.multiplier(trainer_with(None, step=7, max_steps=8)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="Warmdown.warmdown_frac"):
        wd.multiplier(trainer_with(None, step=7, max_steps=-1))


def test_record_rule_ends_at_the_budget():
    wd = Warmdown(warmdown_iters=3000)
    # 100 ms/step; budget 599,500 ms: warmdown 300,000 ms, remaining at 449,500 ms = 150,000 -> 0.5
    assert wd.multiplier(trainer_with(clock_at(449_500.0, reserve=0.5), step=4495)) == pytest.approx(0.5)
    assert wd.multiplier(trainer_with(clock_at(599_500.0, reserve=0.5), step=5995)) == 0.0
    # without a reserve it is the record's rule unchanged (tests/test_schedules.py)
    assert wd.multiplier(trainer_with(clock_at(450_000.0), step=4500)) == pytest.approx(0.5)


def test_min_lr_floors_the_record_rule():
    wd = Warmdown(warmdown_iters=3000, min_lr=0.1)
    assert wd.multiplier(trainer_with(clock_at(600_000.0), step=6000)) == 0.1
    assert wd.multiplier(trainer_with(clock_at(450_000.0), step=4500)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kw,match", [({"warmdown_frac": 1.5}, "warmdown_frac"), ({"min_lr": -0.1}, "min_lr"), ({"min_lr": 2}, "min_lr")]
)
def test_warmdown_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=rf"Warmdown\.{match}"):
        Warmdown(**kw)
