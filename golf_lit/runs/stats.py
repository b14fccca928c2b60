"""Seed statistics without scipy: mean/std, Student's t distribution, Welch's t-test, nats <-> bits per byte.

The challenge accepts a new record only if it improves on the previous one by at least 0.005 nats with
p < 0.01 over several seeds. :func:`improvement_test` tests exactly that one-sided hypothesis with Welch's
t-test (unequal variances) on per-seed val_bpb, after converting the margin to bits per byte
(:func:`nats_per_token_to_bpb`; the conversion is exact for runs on the same tokenizer and validation set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

LN2 = math.log(2.0)


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean."""
    if not xs:
        raise ValueError("mean of no values")
    return math.fsum(xs) / len(xs)


def variance(xs: Sequence[float], ddof: int = 1) -> float:
    """Variance with ``len(xs) - ddof`` in the denominator (ddof=1: the unbiased sample variance)."""
    if len(xs) <= ddof:
        raise ValueError(f"variance needs more than {ddof} values, got {len(xs)}")
    m = mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - ddof)


def std(xs: Sequence[float], ddof: int = 1) -> float:
    """Standard deviation (ddof=1 sample std; ddof=0 the population std that record READMEs report)."""
    return math.sqrt(variance(xs, ddof))


def mean_se(xs: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean, std / sqrt(n) (None for one value; (None, None) for none)."""
    if not xs:
        return None, None
    return mean(xs), (std(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None)


def nats_per_token_to_bpb(nats: float, tokens: float, num_bytes: float) -> float:
    """A per-token loss difference in nats as bits per byte: ``nats * tokens / (bytes * ln 2)``.

    val_bpb = val_loss * tokens / (bytes * ln 2) on a fixed validation set, so a val_loss margin maps to a
    val_bpb margin through the set's tokens-per-byte ratio.
    """
    if tokens <= 0 or num_bytes <= 0:
        raise ValueError(f"need positive token and byte counts, got {tokens} and {num_bytes}")
    return nats * tokens / (num_bytes * LN2)


def bpb_to_nats_per_token(bpb: float, tokens: float, num_bytes: float) -> float:
    """Inverse of :func:`nats_per_token_to_bpb`."""
    if tokens <= 0 or num_bytes <= 0:
        raise ValueError(f"need positive token and byte counts, got {tokens} and {num_bytes}")
    return bpb * num_bytes * LN2 / tokens


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction 1 / (1 + d1 / (1 + d2 / (1 + ...))) of I_x(a, b), by the modified Lentz method."""
    tiny, eps = 1e-300, 1e-16
    f, c, d = 1.0, 1.0, 0.0
    for j in range(1, 10_000):
        m = j // 2
        if j % 2:  # d_{2m+1}
            coef = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:  # d_{2m}
            coef = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + coef * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + coef / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(c * d - 1.0) < eps:
            return 1.0 / f
    raise ArithmeticError(f"incomplete beta: continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc: a and b must be > 0, got {a}, {b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point: use the symmetry
        return 1.0 - betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    return math.exp(log_front) / a * _beta_continued_fraction(a, b, x)


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (> 0, need not be an integer) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t distribution: df must be > 0, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t."""
    return 1.0 - t_sf(t, df)


@dataclass(frozen=True)
class ImprovementTest:
    """One-sided Welch test of "the new runs improve on the baseline by more than ``delta``" (all in val_bpb).

    Attributes:
        quantity: What was tested (``"val_bpb"``).
        n_new / n_baseline: Seeds on each side.
        mean_new / mean_baseline: Means.
        improvement: ``mean_baseline - mean_new`` (positive = better).
        delta: The margin in the tested quantity (bits per byte).
        delta_nats: The margin as given, in nats per token (None if given in bpb).
        t, df: Welch's statistic ``(improvement - delta) / se`` and Welch-Satterthwaite degrees of freedom.
        p_value: P(T >= t) under H0 "improvement <= delta".
        alpha: Significance level; ``significant`` is ``p_value < alpha``.
    """

    quantity: str
    n_new: int
    n_baseline: int
    mean_new: float
    mean_baseline: float
    improvement: float
    delta: float
    delta_nats: float | None
    t: float
    df: float
    p_value: float
    alpha: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return asdict(self)


def welch(new: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """Standard error of ``mean(baseline) - mean(new)`` and the Welch-Satterthwaite degrees of freedom."""
    if len(new) < 2 or len(baseline) < 2:
        raise ValueError(f"Welch's t-test needs at least 2 values per side, got {len(new)} and {len(baseline)}")
    vn, vb = variance(new) / len(new), variance(baseline) / len(baseline)
    se2 = vn + vb
    if se2 == 0.0:
        return 0.0, math.inf
    df = se2 * se2 / (vn * vn / (len(new) - 1) + vb * vb / (len(baseline) - 1))
    return math.sqrt(se2), df


def improvement_test(
    new: Sequence[float],
    baseline: Sequence[float],
    delta: float,
    alpha: float = 0.01,
    delta_nats: float | None = None,
    quantity: str = "val_bpb",
) -> ImprovementTest:
    """Is ``mean(baseline) - mean(new) > delta`` with ``p < alpha`` (one-sided Welch's t-test)?

    Args:
        new: Per-seed scores of the new runs (lower is better).
        baseline: Per-seed scores of the baseline, same quantity.
        delta: Required improvement in that quantity (>= 0).
        alpha: Significance level.
        delta_nats: The margin in nats per token it was converted from (for the report).
        quantity: Name of the tested quantity.
    """
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    se, df = welch(new, baseline)
    mn, mb = mean(new), mean(baseline)
    gap = mb - mn - delta
    if se == 0.0:
        t = math.copysign(math.inf, gap) if gap else 0.0
        p = 0.0 if gap > 0 else 1.0
    else:
        t = gap / se
        p = t_sf(t, df)
    return ImprovementTest(quantity, len(new), len(baseline), mn, mb, mb - mn, delta, delta_nats, t, df, p, alpha,
                           p < alpha)
