"""Temperature scaling: the fit recovers a known temperature, ECE is what it says, `lit calibrate` stores T and predict uses it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lit.cli import main
from lit.serve.calibration import Calibration, coverage_curve, expected_calibration_error, fit_temperature, temperature_for
from tests.serve.conftest import FieldRun


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
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.08)


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
    from lit.serve.onnx_export import export_onnx
    from lit.serve.onnx_predict import OnnxModel

    out, check = export_onnx(run, tmp_path / "export", verify_limit=16)  # the export carries the calibration
    assert check["ok"] and OnnxModel.load(out).temperature() == pytest.approx(cal["temperature"])
    assert json.loads((out / "manifest.json").read_text())["temperature"] == pytest.approx(cal["temperature"])
    stale = Calibration.read(run / "calibration.json")
    assert stale is not None
    stale.step = 3
    stale.save(run)
    assert temperature_for(run, str(run / "checkpoints" / "step-00000007.pt"), 7) == 1.0  # fit on another checkpoint: unused
