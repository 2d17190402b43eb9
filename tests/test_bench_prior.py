"""The prior's benchmark measures a training step at 10,000 classes and what the prior adds to one photo (nothing timed here)."""

from __future__ import annotations

import pytest

from bench import prior


def test_the_prior_benchmark_projects_training_and_states_the_per_photo_goal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prior, "STEPS", 1)
    monkeypatch.setattr(prior, "PREDICT_REPEATS", 5)
    rows = prior.run()
    step, ratio, epoch, photo, section = rows
    assert step["values"][0] > 0 and 0 < ratio["values"][0] < 1.5
    assert epoch["values"][0] == pytest.approx(step["values"][0] * 1312 / 3600)
    assert photo["goal"] == 1.0 and photo["values"][0] > 0
    assert "iNat2021" in section["markdown"] and section["section"] == "Location prior at iNat2021's shape"
