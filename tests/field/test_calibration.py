"""Temperature scaling: the fit recovers a known temperature, ECE is what it says, `lit calibrate` stores T and predict uses it."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lit.cli import main
from lit.data.inat import RANKS
from lit.data.taxonomy import Taxonomy, probabilities, rank_probabilities
from lit.data.toy_wide import generated_categories
from lit.eval import calibration
from lit.eval.calibration import (
    Calibration,
    EmbeddedImages,
    Logits,
    coverage_curve,
    expected_calibration_error,
    fit_temperature,
    measure,
    nll,
    rank_confidence,
    temperature_for,
)
from tests.field.conftest import FieldRun


def synthetic(temperature: float, n: int = 6000, classes: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): calibrated exactly at that temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 6.0
    p = np.exp(logits / temperature - (logits / temperature).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_recovers_a_known_temperature(true_t: float) -> None:
    logits, labels = synthetic(true_t)
    assert fit_temperature(Logits(logits, labels)) == pytest.approx(true_t, rel=0.08)


def direct_nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    """The NLL over every image at once, in memory: the reference of the streamed one."""
    z = logits / t
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]))


def test_the_streamed_fit_and_measures_equal_the_direct_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Embeddings x classes made 7 rows at a time give the minimum of the NLL and the same ECE and curves as all at once."""
    rng = np.random.default_rng(3)
    cats = generated_categories(60)
    emb = rng.standard_normal((500, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    classes = rng.standard_normal((60, 16)).astype(np.float32)
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    labels = ((emb @ classes.T) * 30 + rng.gumbel(size=(500, 60)) * 4).argmax(1)  # a noisy, overconfident classifier
    monkeypatch.setattr(calibration, "CHUNK_VALUES", 7 * 60)
    source = EmbeddedImages(emb, classes, 30.0, labels)
    logits = (np.float32(30.0) * (emb @ classes.T)).astype(np.float64)
    rows = np.flatnonzero(np.arange(500) % 3 != 0)
    t = fit_temperature(source, rows)
    grid = np.exp(np.linspace(np.log(t) - 0.05, np.log(t) + 0.05, 201))
    best = grid[np.argmin([direct_nll(logits[rows], labels[rows], g) for g in grid])]
    assert t == pytest.approx(best, rel=1e-3) and t > 1  # the minimum of the direct NLL, found in passes over chunks
    assert nll(source, t, rows) == pytest.approx(direct_nll(logits[rows], labels[rows], t), rel=1e-9)
    taxonomy = Taxonomy.of(cats)
    ece, curves, held_nll = measure(source, taxonomy, t, rows)
    probs = probabilities(logits[rows], t)
    for rank in ("species", "genus"):
        conf, correct = rank_confidence(probs, labels[rows], taxonomy, rank)
        assert ece[rank] == pytest.approx(100 * expected_calibration_error(conf, correct), abs=1e-3)
        assert curves[rank] == coverage_curve(conf, correct)
    assert held_nll == pytest.approx(direct_nll(logits[rows], labels[rows], t), rel=1e-9)


def test_rank_probabilities_sum_each_taxon() -> None:
    cats = generated_categories(50)
    taxonomy = Taxonomy.of(cats)
    probs = probabilities(np.random.default_rng(0).normal(size=(4, 50)))
    for depth, rank in enumerate(RANKS):
        ids = taxonomy.ids[depth]
        expected = np.stack([probs[:, ids == j].sum(1) for j in range(ids.max() + 1)], 1)
        np.testing.assert_allclose(rank_probabilities(probs, taxonomy, rank), expected, rtol=1e-12)


def test_calibration_memory_does_not_grow_with_images_times_classes() -> None:
    """4,000 images x 10,000 classes would be 320 MB of float64 logits; streamed, the peak stays at a few chunks."""
    rng = np.random.default_rng(0)
    cats = generated_categories(10_000)
    emb = rng.standard_normal((4000, 32)).astype(np.float32)
    classes = rng.standard_normal((10_000, 32)).astype(np.float32)
    source = EmbeddedImages(emb / np.linalg.norm(emb, axis=1, keepdims=True),
                            classes / np.linalg.norm(classes, axis=1, keepdims=True), 20.0, rng.integers(0, 10_000, 4000))
    taxonomy = Taxonomy.of(cats)
    _ = taxonomy.groups
    tracemalloc.start()
    t = fit_temperature(source, np.arange(2000))
    measure(source, taxonomy, t, np.arange(2000, 4000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    chunk_bytes = calibration.CHUNK_VALUES * 8
    assert peak < 8 * chunk_bytes < 4000 * 10_000 * 8, f"peak {peak / 2**20:.0f} MB"


def test_expected_calibration_error() -> None:
    conf = np.array([0.9, 0.9, 0.9, 0.9, 0.3, 0.3])
    correct = np.array([1, 1, 1, 0, 0, 1])
    # bin of 0.9: accuracy 0.75 → |0.75 - 0.9| x 4/6; bin of 0.3: accuracy 0.5 → |0.5 - 0.3| x 2/6
    assert expected_calibration_error(conf, correct) == pytest.approx(0.15 * 4 / 6 + 0.2 * 2 / 6)
    logits, labels = synthetic(2.5, n=4000, seed=1)
    for t, lo, hi in ((2.5, 0.0, 0.03), (1.0, 0.1, 1.0)):  # calibrated: small; overconfident at T=1: large
        z = np.exp(logits / t - (logits / t).max(1, keepdims=True))
        p = z / z.sum(1, keepdims=True)
        assert lo <= expected_calibration_error(p.max(1), p.argmax(1) == labels) <= hi
    curve = coverage_curve(np.array([0.1, 0.5, 0.9]), np.array([False, True, True]), (0.0, 0.4, 0.95))
    assert [(c["coverage"], c["accuracy"]) for c in curve] == [(100.0, pytest.approx(66.667)), (pytest.approx(66.667), 100.0),
                                                               (0.0, None)]


def test_lit_calibrate_stores_the_temperature_and_predict_uses_it(field_run: FieldRun, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(field_run.run, run)  # its own copy: other tests predict with T=1
    assert main(["calibrate", str(run), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ECE species" in printed and "ECE genus" in printed
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["fit_samples"] + cal["heldout_samples"] == 128 and 30 < cal["fit_samples"] < 98
    assert cal["step"] == 7 and cal["checkpoint"].endswith("step-00000007.pt") and cal["temperature"] > 0
    # the random tiny model is overconfident; held-out ECE must fall after scaling, at both ranks
    assert cal["ece_after"]["species"] < cal["ece_before"]["species"] and cal["ece_after"]["genus"] < cal["ece_before"]["genus"]
    assert cal["nll_after"] < cal["nll_before"]
    assert {"species_before", "species_after", "genus_before", "genus_after"} <= set(cal["coverage"])
    assert (run / "eval" / "calibration" / "plots" / "coverage.png").stat().st_size > 10_000
    assert main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / "eval"), "--quiet"]) == 0  # the eval report carries it
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())["calibration"]
    assert summary["ece_before"] == cal["ece_before"] and summary["ece_after"] == cal["ece_after"]
    assert summary["temperature"] == cal["temperature"] and summary["coverage_plot"].endswith("coverage.png")
    assert "expected calibration error at species" in capsys.readouterr().out
    image = str(field_run.images[0])
    assert main(["predict", "--checkpoint", str(run), image, "--json", "-k", "1"]) == 0
    calibrated = json.loads(capsys.readouterr().out.splitlines()[-1])["guesses"][0]["probability"]
    assert main(["predict", "--checkpoint", str(field_run.run), image, "--json", "-k", "1"]) == 0
    plain = json.loads(capsys.readouterr().out.splitlines()[-1])["guesses"][0]["probability"]
    assert calibrated < plain  # T > 1 flattens the top probability
    from lit.field.onnx_export import export_onnx
    from lit.field.onnx_predict import OnnxModel

    out, check = export_onnx(run, tmp_path / "export", verify_limit=16)  # the export carries the calibration
    assert check["ok"] and OnnxModel.load(out).temperature() == pytest.approx(cal["temperature"])
    assert json.loads((out / "manifest.json").read_text())["temperature"] == pytest.approx(cal["temperature"])
    stale = Calibration.read(run / "calibration.json")
    assert stale is not None
    stale.step = 3
    stale.save(run)
    assert temperature_for(run, str(run / "checkpoints" / "step-00000007.pt"), 7) == 1.0  # fit on another checkpoint: unused
