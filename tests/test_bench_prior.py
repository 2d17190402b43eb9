"""The prior's benchmark measures a training step at 10,000 classes and what the prior adds to one photo (nothing timed here)."""

from __future__ import annotations

import pytest

from bench import prior, prior_toy


def test_the_prior_benchmark_projects_training_and_states_the_per_photo_goal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prior, "STEPS", 1)
    monkeypatch.setattr(prior, "PREDICT_REPEATS", 5)
    rows = prior.run()
    step, ratio, epoch, photo, section = rows
    assert step["values"][0] > 0 and 0 < ratio["values"][0] < 1.5
    assert epoch["values"][0] == pytest.approx(step["values"][0] * 1312 / 3600)
    assert photo["goal"] == 1.0 and photo["values"][0] > 0
    assert "iNat2021" in section["markdown"] and section["section"] == "Location prior at iNat2021's shape"


def _member(seed: int, image: float, prior: float) -> dict:
    ranks = {r: image + 10 * (7 - i) for i, r in enumerate(prior_toy.RANKS)}
    return {"seed": seed, "image": {"top1": image, "top5": image + 20, "per_rank": ranks},
            "prior": {"top1": prior, "top5": prior + 15, "per_rank": {r: v + prior - image for r, v in ranks.items()},
                      "located": 700, "num_samples": 768, "weight": 0.8 + seed / 10},
            "temperature": 1.0, "calibration": {"ece_image_only": {"species": 9.0}, "ece_with_prior": {"species": 6.0 + seed},
                                                 "nll_image_only": 2.5, "nll_with_prior": 2.0}}


def test_the_toy_prior_table_gives_mean_and_spread_per_measure_and_says_what_the_gain_means() -> None:
    rows = prior_toy.rows([_member(0, 30.0, 40.0), _member(1, 34.0, 46.0)])
    by = {r["metric"]: r for r in rows if "metric" in r}
    assert by["hard toy set, top-1 gain of the prior (same seed)"]["values"] == [10.0, 12.0]
    assert by["hard toy set, held-out ECE at species with the prior"]["values"] == [6.0, 7.0]
    text = rows[-1]["markdown"]
    assert "| top-1 | 32.0 ± 2.8 | 43.0 ± 4.2 | 11.0 ± 1.4 |" in text
    assert "(0.80, 0.90)" in text and "not evidence about real species" in text and "70.1 to 79.0" in text
