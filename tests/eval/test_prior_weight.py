"""The prior's weight is fit like the temperature: recovered from samples drawn with a known weight."""

from __future__ import annotations

import numpy as np
import pytest

from lit.eval.calibration import Logits, nll
from lit.eval.prior_weight import Weighed, fit_prior_weight, top1


def drawn(weight: float, n: int = 6000, c: int = 40, seed: int = 0) -> tuple[Logits, np.ndarray]:
    """Image logits and a log prior; targets drawn from softmax(z + weight * b)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, c))
    b = np.log(rng.uniform(0.01, 1.0, (n, c)))
    s = z + weight * b
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(c, p=row) for row in p])
    return Logits(z, targets), b


@pytest.mark.parametrize("true", [0.5, 1.5])
def test_the_weight_that_drew_the_labels_is_found(true: float) -> None:
    source, b = drawn(true)
    rows = np.arange(len(source.targets))
    w = fit_prior_weight(source, rows, 1.0, lambda r: b[r])
    assert w == pytest.approx(true, abs=0.15)
    alone, weighed = Weighed(source, 1.0, 0.0, lambda r: b[r]), Weighed(source, 1.0, w, lambda r: b[r])
    assert nll(weighed, 1.0) < nll(alone, 1.0) and nll(alone, 1.0) == pytest.approx(nll(source, 1.0))
    assert top1(weighed, rows) > top1(alone, rows)
    for other in (0.5 * w, 1.5 * w + 0.1):  # the fit is the minimum
        assert nll(Weighed(source, 1.0, other, lambda r: b[r]), 1.0) > nll(weighed, 1.0)


def test_a_useless_prior_gets_no_weight_and_a_dominant_one_the_bound() -> None:
    source, _ = drawn(0.0)
    rng = np.random.default_rng(5)
    noise = np.log(rng.uniform(0.01, 1.0, (len(source.targets), source.num_classes)))
    anti = -np.eye(source.num_classes)[source.targets] * 5  # the prior says the true class is absent
    assert fit_prior_weight(source, np.arange(len(source.targets)), 1.0, lambda r: anti[r]) == 0.0
    assert fit_prior_weight(source, np.arange(500), 1.0, lambda r: noise[r]) < 0.3
    exact = np.eye(source.num_classes)[source.targets] * 3  # the prior names the class
    assert fit_prior_weight(source, np.arange(len(source.targets)), 1.0, lambda r: exact[r], high=4.0) == 4.0
