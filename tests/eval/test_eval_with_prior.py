"""Eval and calibrate with the location prior: the same samples counted image-only and with the prior, the weight fit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from lit import dist
from lit.config import Config, with_overrides
from lit.eval.report import print_report
from lit.eval.runner import evaluate_checkpoint, evaluate_model
from lit.model import BuiltModel
from lit.prior.train import train_prior
from tests.eval.conftest import save_tiny_checkpoint

# A prior fit to the validation split's own places: as informative as a prior can be, so its gain is unmistakable.
PRIOR = ["prior.split=val", "prior.epochs=60", "prior.batch_size=64", "prior.width=64", "prior.depth=2", "prior.lr=0.005",
         "prior.pos_weight=32"]


@pytest.fixture(scope="module")
def run_with_prior(tmp_path_factory: pytest.TempPathFactory, toy_val: Path, tiny: BuiltModel) -> Config:
    from tests.eval.conftest import make_config

    run = tmp_path_factory.mktemp("eval-prior") / "run"
    cfg = with_overrides(make_config(run, toy_val), [f"data.root={toy_val.parent / 'toy'}", *PRIOR])
    train_prior(cfg, progress=False)
    save_tiny_checkpoint(cfg, tiny)
    return cfg


def test_eval_counts_every_sample_with_and_without_the_prior(run_with_prior: Config, tiny: BuiltModel) -> None:
    result = evaluate_model(run_with_prior, tiny, dist.resolve())
    prior = result["prior"]
    val = json.loads((Path(run_with_prior.data.root) / "val.json").read_text())
    located = sum(im["latitude"] is not None for im in val["images"])
    assert prior["num_samples"] == result["num_samples"] == 128 and prior["located"] == located
    assert 100 < located < 128  # the toy set leaves about a tenth without a place
    assert prior["weight"] == 1.0 and not prior["weight_calibrated"]
    assert prior["top1"] > result["top1"] + 15, (result["top1"], prior["top1"])  # a random tower, an informed prior
    assert prior["gain_top1"] == pytest.approx(prior["top1"] - result["top1"])
    assert prior["per_rank"]["kingdom"] >= prior["per_rank"]["species"]


def test_the_report_shows_the_prior_beside_the_image(run_with_prior: Config, tiny: BuiltModel) -> None:
    result = evaluate_model(run_with_prior, tiny, dist.resolve())
    console = Console(record=True, width=160)
    print_report(result, console, hardest=0)
    text = console.export_text()
    assert "With the location prior" in text and "not calibrated: run lit calibrate" in text
    assert f"{result['top1']:.2f}" in text and f"{result['prior']['top1']:.2f}" in text


def test_a_run_without_a_prior_reports_none(config_for: Callable[..., Config], toy_val: Path, tiny: BuiltModel,
                                            tmp_path: Path) -> None:
    result = evaluate_model(config_for(tmp_path / "run", toy_val), tiny, dist.resolve())
    assert "prior" not in result


def test_calibrate_fits_the_prior_weight_and_eval_uses_it(run_with_prior: Config) -> None:
    from lit.field.calibrate import calibrate, report_rows

    cal, _ = calibrate(run_with_prior.run_dir, device="cpu", progress=False)
    p: dict[str, Any] = cal.prior
    assert cal.prior_weight is not None and cal.prior_weight > 0.1
    assert p["located_fit"] + p["located_heldout"] + p["unlocated"] == 128
    assert p["nll_with_prior"] < p["nll_image_only"] and p["top1_with_prior"] > p["top1_image_only"]
    assert any("location prior" in row[0] for row in report_rows(cal))
    result, _ = evaluate_checkpoint(run_with_prior.run_dir, device="cpu", progress=False)
    assert result["prior"]["weight"] == pytest.approx(cal.prior_weight) and result["prior"]["weight_calibrated"]
    assert result["prior"]["temperature"] == pytest.approx(cal.temperature)


def test_a_sigmoid_models_bias_changes_no_count(run_with_prior: Config, tiny: BuiltModel) -> None:
    """Eval scores a sigmoid model (train.loss=siglip) as scale x cosine + bias: one constant per image, so the ranking and
    the prior's softmax (the temperature's probabilities) are those of the same model without a bias."""
    from lit.model import build_model
    from tests.eval.conftest import TINY

    sigmoid = build_model(TINY, loss="siglip")
    missing, _ = sigmoid.model.load_state_dict(tiny.model.state_dict(), strict=False)  # same weights and scale, bias kept
    assert missing == ["logit_bias"]
    sigmoid.model.eval()
    plain, biased = evaluate_model(run_with_prior, tiny, dist.resolve()), evaluate_model(run_with_prior, sigmoid, dist.resolve())
    assert (plain["setup"]["logit_bias"], biased["setup"]["logit_bias"]) == (0.0, -10.0)
    assert biased["setup"]["logit_scale"] == plain["setup"]["logit_scale"]
    for key in ("top1", "top5", "per_rank", "mean_per_class"):
        assert biased[key] == plain[key] and biased["prior"][key] == pytest.approx(plain["prior"][key]), key
