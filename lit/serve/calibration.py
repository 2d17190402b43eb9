"""Temperature scaling, in numpy: the fit, expected calibration error, coverage against accuracy, the stored file.

A temperature T divides the logits before the softmax; T is the value minimizing the negative
log-likelihood of the true classes on the fitting half of the validation set (a golden-section
search over log T: the NLL is convex in 1/T). RUN/calibration.json keeps it with what it was
fit on (checkpoint file and step, templates, classes) and the measures on the held-out half.
Prediction uses it only for that checkpoint (a stale file is reported, not used).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit.io import write_json
from lit.log import logger
from lit.serve.scoring import Taxonomy, probabilities, rank_probabilities

FILE = "calibration.json"
BINS = 15
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the targets under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(targets)), targets]))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, low: float = 0.01, high: float = 100.0, steps: int = 80) -> float:
    """The T in [low, high] minimizing the NLL (golden-section search over log T)."""
    a, b = math.log(low), math.log(high)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, targets, math.exp(c)), nll(logits, targets, math.exp(d))
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, targets, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, targets, math.exp(d))
    return float(math.exp((a + b) / 2))


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


def measure(logits: np.ndarray, targets: np.ndarray, taxonomy: Taxonomy, temperature: float) -> tuple[dict[str, float], dict[str, Any]]:
    """ECE (percent) at species and genus, and their coverage curves, at temperature T."""
    probs = probabilities(logits, temperature)
    ece, curves = {}, {}
    for rank in ("species", "genus"):
        conf, correct = rank_confidence(probs, targets, taxonomy, rank)
        ece[rank] = round(100.0 * expected_calibration_error(conf, correct), 3)
        curves[rank] = coverage_curve(conf, correct)
    return ece, curves


__all__ = ["BINS", "FILE", "THRESHOLDS", "Calibration", "coverage_curve", "expected_calibration_error", "fit_temperature",
           "measure", "nll", "rank_confidence", "temperature_for"]
