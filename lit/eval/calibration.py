"""Temperature scaling, in numpy: the fit, expected calibration error, coverage against accuracy, the stored file.

A temperature T divides the logits before the softmax; T is the value minimizing the negative
log-likelihood of the true classes on the fitting half of the validation set. The NLL is convex
in beta = 1/T, with derivative mean(E_p[z] - z_true) and second derivative mean(Var_p[z]), so a
safeguarded Newton search in beta (bisection where a step would leave the bracket) finds it in a
handful of passes. Every pass streams: logits are made a chunk of images at a time from a
`LogitSource` (for `lit calibrate`, unit-norm image embeddings [N, D] and class embeddings
[C, D]), so memory grows with N x D and chunk x C, never with N x C (10,000 classes x 100,000
validation images would be 4 GB of float32 logits). RUN/calibration.json keeps T with what it
was fit on (checkpoint file and step, templates, classes) and the measures on the held-out half.
Prediction uses it only for that checkpoint (a stale file is reported, not used).

A sigmoid model (train.loss=siglip) is calibrated the same way, on its logits scale x cosine + bias:
probabilities over species are softmax(logits / T) for every model (lit.field.scoring says why), so
its bias cancels and T, ECE and the back-off up the taxonomy need nothing of their own.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit.data.taxonomy import Taxonomy, probabilities, rank_probabilities
from lit.io import write_json
from lit.log import logger

FILE = "calibration.json"
BINS = 15
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))


CHUNK_VALUES = 1 << 22
"""Logits made at once while streaming (4M values: 32 MB in float64, the precision of the sums)."""


class LogitSource(ABC):
    """Logits of N images over C classes, made a chunk of rows at a time; `targets` [N] are the true classes."""

    targets: np.ndarray
    num_classes: int

    @abstractmethod
    def make(self, rows: np.ndarray) -> np.ndarray:
        """Logits [len(rows), C] of these rows (float32 or float64)."""

    def chunks(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(logits float64 [b, C], targets [b]) over `rows`, b x C at most CHUNK_VALUES."""
        size = max(1, CHUNK_VALUES // max(1, self.num_classes))
        for start in range(0, len(rows), size):
            part = rows[start:start + size]
            yield np.asarray(self.make(part), dtype=np.float64), self.targets[part]


class Logits(LogitSource):
    """Logits already in memory [N, C] (small problems, tests)."""

    def __init__(self, logits: np.ndarray, targets: np.ndarray) -> None:
        self.logits, self.targets, self.num_classes = np.asarray(logits), np.asarray(targets), int(np.shape(logits)[1])

    def make(self, rows: np.ndarray) -> np.ndarray:
        return self.logits[rows]


class EmbeddedImages(LogitSource):
    """logit_scale x embeddings [N, D] @ classes [C, D].T + logit_bias, made on demand: memory N x D, not N x C.

    The bias is a sigmoid model's (train.loss=siglip; 0 for a CLIP-loss model): one constant for every class
    of an image, so softmax(logits / T), its NLL and the T that minimises it are those of the cosine scores.
    """

    def __init__(self, embeddings: np.ndarray, classes: np.ndarray, logit_scale: float, targets: np.ndarray,
                 logit_bias: float = 0.0) -> None:
        self.embeddings, self.classes = np.asarray(embeddings, np.float32), np.asarray(classes, np.float32)
        self.logit_scale, self.targets, self.num_classes = float(logit_scale), np.asarray(targets), int(self.classes.shape[0])
        self.logit_bias = float(logit_bias)

    def make(self, rows: np.ndarray) -> np.ndarray:
        logits = np.float32(self.logit_scale) * (self.embeddings[rows] @ self.classes.T)
        return logits + np.float32(self.logit_bias) if self.logit_bias else logits


def _all(source: LogitSource, rows: np.ndarray | None) -> np.ndarray:
    return np.arange(len(source.targets)) if rows is None else np.asarray(rows)


def nll(source: LogitSource, temperature: float, rows: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of the targets under softmax(logits / T), over `rows` (default: all)."""
    rows = _all(source, rows)
    total = 0.0
    for z, t in source.chunks(rows):
        z = z / temperature
        m = z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
        total += float((log_norm - z[np.arange(len(t)), t]).sum())
    return total / max(1, len(rows))


def _nll_slope(source: LogitSource, rows: np.ndarray, beta: float) -> tuple[float, float]:
    """d NLL / d beta and d² NLL / d beta² at beta = 1/T (mean over rows): E_p[z] - z_true and Var_p[z]."""
    d1 = d2 = 0.0
    for z, t in source.chunks(rows):
        s = beta * z
        e = np.exp(s - s.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        mean = (p * z).sum(axis=1)
        d1 += float((mean - z[np.arange(len(t)), t]).sum())
        d2 += float(((p * (z - mean[:, None]) ** 2).sum(axis=1)).sum())
    return d1 / len(rows), d2 / len(rows)


def newton_in_bracket(slope: Callable[[float], tuple[float, float]], x: float, first: tuple[float, float], lo: float, hi: float,
                      middle: Callable[[float, float], float], tol: Callable[[float], float], max_passes: int) -> float:
    """The root of a 1-D convex problem's slope in [lo, hi]: Newton steps inside the bracket, else `middle(lo, hi)`.

    `slope(x)` gives (first, second derivative); `first` is its value at the start `x`; the bracket shrinks
    to the side the slope's sign points to; it stops when a step moves less than `tol(x)`.
    """
    d1, d2 = first
    for _ in range(max_passes):
        if d1 > 0:
            hi = x
        else:
            lo = x
        step = x - d1 / d2 if d2 > 0 else math.nan
        new = step if lo < step < hi else middle(lo, hi)
        done = abs(new - x) <= tol(x)
        x = new
        if done:
            break
        d1, d2 = slope(x)
    return x


def fit_temperature(source: LogitSource, rows: np.ndarray | None = None, low: float = 0.01, high: float = 100.0,
                    rtol: float = 1e-8, max_passes: int = 60) -> float:
    """The T in [low, high] minimizing the NLL over `rows`: safeguarded Newton in beta = 1/T, one pass over the logits a step.

    A minimum at a bound (a model no better than chance is best at T = high) is found in two passes.
    """
    rows = _all(source, rows)
    lo, hi = 1.0 / high, 1.0 / low  # the bracket in beta: the slope is < 0 left of the minimum and > 0 right of it
    beta = min(max(1.0, lo), hi)
    slope, curve = _nll_slope(source, rows, beta)
    bound = lo if slope > 0 else hi
    if bound != beta and (_nll_slope(source, rows, bound)[0] > 0) == (slope > 0):
        return float(1.0 / bound)  # the slope keeps its sign up to the bound: the minimum is there
    beta = newton_in_bracket(lambda b: _nll_slope(source, rows, b), beta, (slope, curve), lo, hi,
                             lambda a, b: math.sqrt(a * b), lambda b: rtol * b, max_passes)  # bisection in log beta
    return float(1.0 / beta)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence| x bin share (0..1)."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def rank_confidence(probs: np.ndarray, targets: np.ndarray, taxonomy: Taxonomy, rank: str) -> tuple[np.ndarray, np.ndarray]:
    """(probability of the most likely taxon at `rank`, whether it is the true one) per sample."""
    from lit.data.inat import RANKS

    depth = RANKS.index(rank)
    taxa = rank_probabilities(probs, taxonomy, rank)
    best = taxa.argmax(axis=1)
    return taxa[np.arange(len(best)), best], best == taxonomy.ids[depth][targets]


def coverage_curve(confidence: np.ndarray, correct: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict[str, float | None]]:
    """For each threshold P: the share of images answered (confidence >= P) and the accuracy of those answers (percent)."""
    out: list[dict[str, float | None]] = []
    for p in thresholds:
        kept = confidence >= p
        out.append({"min_confidence": p, "coverage": round(100.0 * float(kept.mean()), 3),
                    "accuracy": round(100.0 * float(correct[kept].mean()), 3) if kept.any() else None})
    return out


@dataclass
class Calibration:
    """A fitted temperature and what it was fit on and measured with."""

    temperature: float
    checkpoint: str = ""
    step: int | None = None
    templates: list[str] = field(default_factory=list)
    num_classes: int = 0
    fit_samples: int = 0
    heldout_samples: int = 0
    ece_before: dict[str, float] = field(default_factory=dict)
    ece_after: dict[str, float] = field(default_factory=dict)
    nll_before: float | None = None
    nll_after: float | None = None
    coverage: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    prior_weight: float | None = None
    """The location prior's weight fit with T (None: the run had no prior when calibrated)."""
    prior: dict[str, Any] = field(default_factory=dict)
    """The prior's fit and held-out measures (samples located, NLL and ECE with and without it)."""

    def save(self, folder: str | Path) -> Path:
        return write_json(Path(folder) / FILE, asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> Calibration | None:
        """The calibration stored in a file (None when there is none or it is unreadable, with a warning)."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError) as err:
            logger.warning("%s is unreadable (%s): predicting without a calibrated temperature", path, err)
            return None


def temperature_for(folder: str | Path, checkpoint: str | None = None, step: int | None = None) -> float:
    """The stored temperature of `folder` (1.0 without one); a file fit on another checkpoint is not used."""
    cal = Calibration.read(Path(folder) / FILE)
    if cal is None:
        return 1.0
    if checkpoint is not None and (Path(cal.checkpoint).name != Path(checkpoint).name or cal.step != step):
        logger.warning("%s was fit on %s (step %s), not on %s: predicting with T=1; rerun `lit calibrate`",
                       Path(folder) / FILE, Path(cal.checkpoint).name, cal.step, Path(checkpoint).name)
        return 1.0
    return float(cal.temperature)


def prior_weight_for(folder: str | Path, checkpoint: str | None = None, step: int | None = None) -> float | None:
    """The stored prior weight of `folder`, under the same rule as `temperature_for` (None: none fit for this checkpoint)."""
    cal = Calibration.read(Path(folder) / FILE)
    if cal is None or cal.prior_weight is None:
        return None
    if checkpoint is not None and (Path(cal.checkpoint).name != Path(checkpoint).name or cal.step != step):
        return None
    return float(cal.prior_weight)


def measure(source: LogitSource, taxonomy: Taxonomy, temperature: float,
            rows: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, Any], float]:
    """ECE (percent) at species and genus, their coverage curves and the NLL at temperature T, over `rows` (one pass)."""
    rows = _all(source, rows)
    conf: dict[str, list[np.ndarray]] = {"species": [], "genus": []}
    correct: dict[str, list[np.ndarray]] = {"species": [], "genus": []}
    for z, t in source.chunks(rows):
        probs = probabilities(z, temperature)
        for rank in conf:
            c, ok = rank_confidence(probs, t, taxonomy, rank)
            conf[rank].append(c)
            correct[rank].append(ok)
    ece, curves = {}, {}
    for rank in conf:
        c, ok = np.concatenate(conf[rank]), np.concatenate(correct[rank])
        ece[rank] = round(100.0 * expected_calibration_error(c, ok), 3)
        curves[rank] = coverage_curve(c, ok)
    return ece, curves, nll(source, temperature, rows)


__all__ = ["BINS", "CHUNK_VALUES", "FILE", "THRESHOLDS", "Calibration", "EmbeddedImages", "LogitSource", "Logits", "coverage_curve",
           "expected_calibration_error", "fit_temperature", "measure", "newton_in_bracket", "nll", "prior_weight_for", "rank_confidence", "temperature_for"]
