"""Warmdown multiplier and Muon momentum ramp, checked against values worked out by hand (docs/record-stack.md §7,
§6.1)."""

from __future__ import annotations

import pytest

from golf_lit.optim.schedules import lr_multiplier, muon_momentum, warmdown_frac_multiplier

CAP_MS = 600_000.0

# record settings, steady 100 ms/step: warmdown_ms = 3000 * 100 = 300,000 ms, so the decay starts at 300 s
WALLCLOCK_TABLE = [
    # step, elapsed_ms, expected multiplier
    (0, 0.0, 1.0),  # no history yet: warmdown_ms = 0, remaining = cap > 0
    (1000, 100_000.0, 1.0),
    (2990, 299_000.0, 1.0),  # remaining 301,000 > 300,000
    (3000, 300_000.0, 1.0),  # remaining 300,000 == warmdown_ms: 300,000 / 300,000
    (4500, 450_000.0, 0.5),  # remaining 150,000 / 300,000
    (5400, 540_000.0, 0.2),  # remaining 60,000 / 300,000
    (5999, 599_900.0, 100.0 / 300_000.0),  # last step before the cap: remaining 100 ms
    (6000, 600_000.0, 0.0),  # at the cap
    (6100, 610_000.0, 0.0),  # past the cap: remaining clamps at 0
]


@pytest.mark.parametrize("step,elapsed_ms,expected", WALLCLOCK_TABLE)
def test_wallclock_warmdown_table(step, elapsed_ms, expected):
    m = lr_multiplier(step, elapsed_ms, warmdown_iters=3000, iterations=20_000, max_wallclock_ms=CAP_MS)
    assert m == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_wallclock_warmdown_follows_the_running_step_time():
    # 6 s/step after 10 steps: warmdown_ms = 100 * 6,000 = 600,000 >= remaining 540,000 -> 0.9
    assert lr_multiplier(10, 60_000.0, warmdown_iters=100, iterations=20_000, max_wallclock_ms=CAP_MS) == 0.9
    # the same elapsed time at 1 ms/step (60,000 steps) is far from the warmdown
    assert lr_multiplier(60_000, 60_000.0, warmdown_iters=100, iterations=20_000, max_wallclock_ms=CAP_MS) == 1.0


# no cap, iterations 1000, warmdown 200: decay over steps 800..999
STEP_TABLE = [
    (0, 1.0),
    (799, 1.0),
    (800, 1.0),  # (1000 - 800) / 200
    (900, 0.5),
    (950, 0.25),
    (999, 0.005),
    (1000, 1.0),  # the seed's rule is 1 again at step >= iterations (never trained)
]


@pytest.mark.parametrize("cap", [None, 0.0])
@pytest.mark.parametrize("step,expected", STEP_TABLE)
def test_step_based_fallback_table(step, expected, cap):
    m = lr_multiplier(step, 123_456.0, warmdown_iters=200, iterations=1000, max_wallclock_ms=cap)
    assert m == pytest.approx(expected)


def test_step_based_fallback_when_warmdown_exceeds_iterations():
    # warmdown 2000 > iterations 1000: decay already under way at step 0, (1000 - 0) / 2000
    assert lr_multiplier(0, 0.0, warmdown_iters=2000, iterations=1000, max_wallclock_ms=None) == 0.5


@pytest.mark.parametrize("cap", [None, CAP_MS])
@pytest.mark.parametrize("warmdown_iters", [0, -5])
def test_no_warmdown_gives_one(cap, warmdown_iters):
    assert lr_multiplier(999, 599_999.0, warmdown_iters=warmdown_iters, iterations=1000, max_wallclock_ms=cap) == 1.0


@pytest.mark.parametrize(
    "step,expected",
    [(0, 0.92), (150, 0.927), (750, 0.955), (1200, 0.976), (1500, 0.99), (1501, 0.99), (10_000, 0.99)],
)
def test_muon_momentum_ramp(step, expected):
    assert muon_momentum(step, start=0.92, end=0.99, warmup_steps=1500) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("warmup_steps", [0, -1])
def test_muon_momentum_without_warmup(warmup_steps):
    assert muon_momentum(0, start=0.92, end=0.99, warmup_steps=warmup_steps) == 0.99


# Leaderboard-top rule (docs/top-stack.md §4.3) at its settings, warmdown_frac 0.85 and min_lr 0.1:
# the decay starts at frac 0.15 and hits the floor at frac 1 - 0.85 * 0.1 = 0.915.
FRAC_TABLE = [
    # frac, expected multiplier
    (0.0, 1.0),
    (0.1, 1.0),
    (0.149, 1.0),
    (0.15, 1.0),  # (1 - 0.15) / 0.85
    (0.575, 0.5),  # 0.425 / 0.85
    (0.83, 0.2),  # 0.17 / 0.85
    (0.915, 0.1),  # 0.085 / 0.85: reaches the floor
    (0.95, 0.1),  # 0.05 / 0.85 = 0.0588... is floored
    (1.0, 0.1),
    (1.3, 0.1),  # past the budget (the stop comes one step late): still the floor
]


@pytest.mark.parametrize("frac,expected", FRAC_TABLE)
def test_warmdown_frac_table(frac, expected):
    assert warmdown_frac_multiplier(frac, warmdown_frac=0.85, min_lr=0.1) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("frac,expected", [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (1.0, 0.0), (1.5, 0.0)])
def test_warmdown_frac_whole_budget_without_floor(frac, expected):
    assert warmdown_frac_multiplier(frac, warmdown_frac=1.0, min_lr=0.0) == pytest.approx(expected, abs=1e-15)


def test_warmdown_frac_zero_disables():
    assert warmdown_frac_multiplier(0.999, warmdown_frac=0.0, min_lr=0.1) == 1.0


def test_top_budget_times():
    # 600 s cap minus 0.5 s GPTQ reserve = 599,500 ms: decay from 89,925 ms, floor from 548,542.5 ms
    budget = 599_500.0
    assert warmdown_frac_multiplier(89_924.0 / budget, warmdown_frac=0.85, min_lr=0.1) == 1.0
    assert warmdown_frac_multiplier(89_925.0 / budget, warmdown_frac=0.85, min_lr=0.1) == pytest.approx(1.0)
    assert warmdown_frac_multiplier(548_542.0 / budget, warmdown_frac=0.85, min_lr=0.1) > 0.1
    assert warmdown_frac_multiplier(548_543.0 / budget, warmdown_frac=0.85, min_lr=0.1) == 0.1
