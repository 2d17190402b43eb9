"""Intervals over seeds: a difference of means with a seeded bootstrap and a t-interval (numpy and math only).

`difference(a, b)` is mean(a) - mean(b) with two 95 % intervals:
- paired (`pairs=True`, the same seeds on both sides, a[i] and b[i] from seed i): the differences
  d_i = a_i - b_i, resampled with replacement B times (percentile interval of the resampled means)
  and the t-interval mean(d) ± t(0.975, n-1) sd(d) / sqrt(n);
- unpaired: a and b resampled independently, and Welch's t-interval (Welch-Satterthwaite degrees of freedom).

The bootstrap is seeded (`BOOTSTRAP_SEED`): a report written twice says the same. With a handful of
seeds a percentile bootstrap is too narrow (its resamples cannot spread more than the values do),
so `Interval.excludes_zero` asks both intervals: a difference is told apart from noise only when
neither contains 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap and t intervals (None where too few values)."""

    estimate: float
    n: int
    """Values behind it: pairs when paired, else the smaller side."""
    paired: bool
    boot: tuple[float, float] | None
    t: tuple[float, float] | None

    @property
    def excludes_zero(self) -> bool:
        """Both intervals lie wholly on one side of 0 (the same side)."""
        sides = {_side(iv) for iv in (self.boot, self.t) if iv is not None}
        return self.boot is not None and len(sides) == 1 and 0 not in sides

    def flipped(self) -> Interval:
        """The same difference the other way round (b - a)."""
        def neg(iv: tuple[float, float] | None) -> tuple[float, float] | None:
            return None if iv is None else (-iv[1], -iv[0])
        return Interval(-self.estimate, self.n, self.paired, neg(self.boot), neg(self.t))


def _side(iv: tuple[float, float]) -> int:
    return 1 if iv[0] > 0 else -1 if iv[1] < 0 else 0


# ---------------------------------------------------------------- Student's t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0.5 <= p < 1), by bisection."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2.0


# ---------------------------------------------------------------- intervals


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(lo), float(hi)


def mean_interval(values: Sequence[float], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """The mean of `values` with a bootstrap and a t-interval (both None below 2 values)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return Interval(float(x.mean()) if n else math.nan, n, False, None, None)
    means = x[np.random.default_rng(seed).integers(0, n, size=(resamples, n))].mean(axis=1)
    half = t_quantile((1 + LEVEL) / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(float(x.mean()), n, False, _percentiles(means), (float(x.mean()) - half, float(x.mean()) + half))


def difference(a: Sequence[float], b: Sequence[float], pairs: bool, resamples: int = RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> Interval:
    """mean(a) - mean(b) with its intervals; `pairs`: a[i] and b[i] come from the same seed (equal lengths)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if pairs:
        if len(x) != len(y):
            raise ValueError(f"paired values need equal lengths, got {len(x)} and {len(y)}")
        return replace(mean_interval(x - y, resamples, seed), paired=True)
    estimate = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
    n = min(len(x), len(y))
    if n < 2:
        return Interval(estimate, n, False, None, None)
    rng = np.random.default_rng(seed)
    boot = (x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
            - y[rng.integers(0, len(y), size=(resamples, len(y)))].mean(axis=1))
    va, vb = float(x.var(ddof=1)) / len(x), float(y.var(ddof=1)) / len(y)
    if va + vb == 0.0:
        t: tuple[float, float] = (estimate, estimate)
    else:
        df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
        half = t_quantile((1 + LEVEL) / 2, df) * math.sqrt(va + vb)
        t = (estimate - half, estimate + half)
    return Interval(estimate, n, False, _percentiles(boot), t)


def ratio_interval(num: Sequence[float], den: Sequence[float], ceiling: float, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, tuple[float, float] | None]:
    """Share of the gap to `ceiling` that `num` closes over `den`: (mean(num) - mean(den)) / (ceiling - mean(den)).

    Paired by index (equal lengths): a bootstrap over seeds of the whole ratio (resamples where the
    gap is not positive are left out); the interval is None below 2 seeds.
    """
    x, y = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    gap = ceiling - float(y.mean())
    estimate = (float(x.mean()) - float(y.mean())) / gap if gap > 0 else math.nan
    if len(x) < 2 or len(x) != len(y) or not gap > 0:
        return estimate, None
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    mx, my = x[idx].mean(axis=1), y[idx].mean(axis=1)
    ok = ceiling - my > 0
    return estimate, _percentiles((mx[ok] - my[ok]) / (ceiling - my[ok]))


__all__ = ["BOOTSTRAP_SEED", "Interval", "LEVEL", "RESAMPLES", "difference", "mean_interval", "ratio_interval", "t_cdf",
           "t_quantile"]
