"""Seed statistics: t distribution and Welch's test against closed forms, a hand-worked example and scipy."""

from __future__ import annotations

import math

import pytest

from golf_lit.runs.stats import (
    betainc,
    bpb_to_nats_per_token,
    improvement_test,
    mean,
    nats_per_token_to_bpb,
    std,
    t_cdf,
    t_sf,
    welch,
)


@pytest.mark.parametrize("t", [-30.0, -2.5, -0.3, 0.0, 0.7, 1.0, 3.674, 12.0])
def test_t_cdf_closed_forms(t):
    # df = 1 is the Cauchy distribution, df = 2 and df = 4 have closed forms too
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-14)
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-14)
    u = t * t / 4
    df4 = 0.5 + 0.375 * t / math.sqrt(1 + u) * (1 - t * t / (12 * (1 + u)))
    assert t_cdf(t, 4) == pytest.approx(df4, abs=1e-14)


def test_betainc_edges_and_symmetry():
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3, abs=1e-15)  # uniform
    assert betainc(2.0, 1.0, 0.3) == pytest.approx(0.09, abs=1e-15)  # x^a when b = 1
    assert betainc(2.5, 0.5, 0.8) == pytest.approx(1 - betainc(0.5, 2.5, 0.2), abs=1e-14)
    assert t_sf(math.inf, 3) == 0.0 and t_sf(-math.inf, 3) == 1.0
    with pytest.raises(ValueError, match="df"):
        t_sf(1.0, 0)


def test_hand_worked_welch():
    # baseline 4, 5, 6 vs new 1, 2, 3: means 5 and 2, sample variances 1 and 1,
    # se = sqrt(1/3 + 1/3) = sqrt(2/3), df = (2/3)^2 / ((1/3)^2/2 + (1/3)^2/2) = 4.
    se, df = welch([1, 2, 3], [4, 5, 6])
    assert se == pytest.approx(math.sqrt(2 / 3), abs=1e-15) and df == pytest.approx(4.0, abs=1e-12)
    # margin 1: t = (3 - 1) / sqrt(2/3) = sqrt(6) = 2.449...; P(T_4 > sqrt 6) from the df = 4 closed form:
    # t^2 = 6, u = 1.5: F = 0.5 + 0.375 * sqrt(6)/sqrt(2.5) * (1 - 6/30) = 0.5 + 0.375 * 1.549193 * 0.8
    res = improvement_test([1, 2, 3], [4, 5, 6], delta=1.0, alpha=0.05)
    assert res.t == pytest.approx(math.sqrt(6), abs=1e-14)
    expected_p = 0.5 - 0.375 * math.sqrt(6 / 2.5) * 0.8  # = 0.035242...
    assert res.p_value == pytest.approx(expected_p, abs=1e-13)
    assert round(expected_p, 6) == 0.035242
    assert res.significant and res.improvement == 3.0
    # the same data cannot show an improvement of 3 (t = 0: p = 1/2) or more
    assert improvement_test([1, 2, 3], [4, 5, 6], delta=3.0).p_value == pytest.approx(0.5, abs=1e-15)


def test_mean_std_conventions():
    top = [1.05989, 1.06125, 1.06209]  # the leaderboard top's three seeds (PR #1855)
    assert mean(top) == pytest.approx(1.0610766667, abs=1e-10)
    # its README reports std 0.00090: the population std (0.000906; the sample std is 0.00111)
    assert abs(std(top, ddof=0) - 0.00090) < 1e-5 < abs(std(top) - 0.00090)
    assert std(top) == pytest.approx(std(top, ddof=0) * math.sqrt(3 / 2), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        welch([1.0], [1.0, 2.0])


def test_nats_bpb_conversion():
    # 0.005 nats/token on a set of 127,744 tokens and 303,761 bytes: 0.005 * 127744 / (303761 * ln 2) bpb
    d = nats_per_token_to_bpb(0.005, 127_744, 303_761)
    assert d == pytest.approx(0.005 * 127_744 / 303_761 / math.log(2), rel=1e-15)
    assert d == pytest.approx(0.0030335, abs=1e-7)
    assert bpb_to_nats_per_token(d, 127_744, 303_761) == pytest.approx(0.005, rel=1e-15)
    # consistent with how the scores themselves are defined: val_bpb = val_loss * tokens / (bytes * ln 2)
    nll_sum, tokens, nbytes = 5000.0, 1000, 2400
    assert nats_per_token_to_bpb(nll_sum / tokens, tokens, nbytes) == pytest.approx(nll_sum / (nbytes * math.log(2)))


def test_zero_variance_is_decided_without_dividing_by_zero():
    assert improvement_test([1.0, 1.0], [2.0, 2.0], delta=0.5).p_value == 0.0
    assert improvement_test([1.0, 1.0], [2.0, 2.0], delta=1.5).p_value == 1.0


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (0.7, 1, 1.5, 2, 3, 4.4, 7, 30, 250):
        for t in (-8.0, -1.3, -0.01, 0.0, 0.4, 1.96, 2.5, 6.0, 40.0):
            assert t_sf(t, df) == pytest.approx(float(stats.t.sf(t, df)), rel=1e-10, abs=1e-15), (t, df)
    new = [1.0604, 1.0611, 1.0598, 1.0620]
    base = [1.0661, 1.0652, 1.0670]
    delta = 0.002
    res = improvement_test(new, base, delta)
    # Welch's test of base - delta > new, i.e. of (base - delta) vs new with alternative "greater"
    ref = stats.ttest_ind([b - delta for b in base], new, equal_var=False, alternative="greater")
    assert res.t == pytest.approx(float(ref.statistic), rel=1e-9)
    assert res.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
