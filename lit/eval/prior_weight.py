"""The location prior's weight, fit like the temperature: the w minimising the NLL of softmax(z / T + w log prior).

`lit calibrate` fits T on the image alone first, then w on the fitting half's located samples
(T held), and measures both on the held-out half. The NLL is convex in w (a log-sum-exp of
functions affine in w), so a safeguarded Newton step in [0, HIGH] finds it in a few passes,
each streaming the logits and the prior a chunk of rows at a time (memory: a chunk, not N x C).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from lit.eval.calibration import CHUNK_VALUES, LogitSource, newton_in_bracket

HIGH = 50.0
"""The largest weight fit: a prior whose presences are all close (overlapping ranges) can need a large exponent to
separate species; beyond this, the prior alone would decide every located answer."""

LogPrior = Callable[[np.ndarray], np.ndarray]
"""Rows → log p(present) [len(rows), C] of those samples' places (zeros for a sample without one)."""


class Weighed(LogitSource):
    """`source`'s logits at temperature T plus w x the log prior: their softmax is p(species | image) x prior^w, renormalised."""

    def __init__(self, source: LogitSource, temperature: float, weight: float, log_prior: LogPrior) -> None:
        self.source, self.temperature, self.weight, self.log_prior = source, float(temperature), float(weight), log_prior
        self.targets, self.num_classes = source.targets, source.num_classes

    def make(self, rows: np.ndarray) -> np.ndarray:
        z = np.asarray(self.source.make(rows), dtype=np.float64) / self.temperature
        return z if self.weight == 0.0 else z + self.weight * np.asarray(self.log_prior(rows), dtype=np.float64)


def _parts(source: LogitSource, rows: np.ndarray, temperature: float, log_prior: LogPrior) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    size = max(1, CHUNK_VALUES // max(1, source.num_classes))
    for start in range(0, len(rows), size):
        part = rows[start:start + size]
        z = np.asarray(source.make(part), dtype=np.float64) / temperature
        yield z, np.asarray(log_prior(part), dtype=np.float64), source.targets[part]


def _slope(source: LogitSource, rows: np.ndarray, temperature: float, log_prior: LogPrior, w: float) -> tuple[float, float]:
    """d NLL / dw and d² NLL / dw² (mean over rows): E_p[b] - b_true and Var_p[b], b the log prior."""
    d1 = d2 = 0.0
    for z, b, t in _parts(source, rows, temperature, log_prior):
        s = z + w * b
        e = np.exp(s - s.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        mean = (p * b).sum(axis=1)
        d1 += float((mean - b[np.arange(len(t)), t]).sum())
        d2 += float((p * (b - mean[:, None]) ** 2).sum())
    return d1 / len(rows), d2 / len(rows)


def fit_prior_weight(source: LogitSource, rows: np.ndarray, temperature: float, log_prior: LogPrior, high: float = HIGH,
                     rtol: float = 1e-6, max_passes: int = 40) -> float:
    """The weight in [0, high] minimising the NLL over `rows` (located samples) at temperature T."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        raise ValueError("no located samples to fit the prior's weight on")
    slope, curve = _slope(source, rows, temperature, log_prior, 0.0)
    if slope >= 0:
        return 0.0  # the prior does not help these samples at all
    lo, hi = 0.0, high
    if _slope(source, rows, temperature, log_prior, high)[0] <= 0:
        return float(high)
    w = newton_in_bracket(lambda x: _slope(source, rows, temperature, log_prior, x), 0.0, (slope, curve), lo, hi,
                          lambda a, b: 0.5 * (a + b), lambda x: rtol * max(1.0, x), max_passes)
    return float(w)


def top1(source: LogitSource, rows: np.ndarray) -> float:
    """Top-1 accuracy (percent) of `source` over `rows`."""
    hits = 0
    size = max(1, CHUNK_VALUES // max(1, source.num_classes))
    for start in range(0, len(rows), size):
        part = rows[start:start + size]
        hits += int((np.asarray(source.make(part)).argmax(axis=1) == source.targets[part]).sum())
    return round(100.0 * hits / max(1, len(rows)), 3)


__all__ = ["LogPrior", "Weighed", "fit_prior_weight", "top1"]
