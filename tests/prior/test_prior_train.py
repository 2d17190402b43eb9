"""The location prior learns synthetic ranges, is deterministic, resumes bitwise and reports what it skipped."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lit.config import Config, load_config
from lit.data.toy import toy_categories
from lit.errors import DataError
from lit.prior.net import encode
from lit.prior.store import CHECKPOINT_FILE, PRIOR_FILE, Prior
from lit.prior.train import complete, train_prior

REGIONS = {  # category index → (lat, lon) centre of its only region
    0: (50.0, 10.0),    # Europe
    1: (40.0, -100.0),  # North America
    2: (-25.0, 135.0),  # Australia
    3: (0.0, -60.0),    # Amazon
}
SEASON = {3: 180.0}  # species 3 only around day 180


def write_ranges(root: Path, per_class: int = 120, bad: bool = True) -> Path:
    """A split JSON (no image files needed) whose species live in one disjoint region each."""
    cats = toy_categories()[: len(REGIONS)]
    rng = np.random.default_rng(0)
    images: list[dict[str, Any]] = []
    for i, cat in enumerate(cats):
        lat0, lon0 = REGIONS[i]
        for _ in range(per_class):
            day = int(np.clip(rng.normal(SEASON[i], 10), 1, 365)) if i in SEASON else int(rng.integers(1, 366))
            date = f"2019-{(np.datetime64('2019-01-01') + day - 1).astype(object).month:02d}-" \
                   f"{(np.datetime64('2019-01-01') + day - 1).astype(object).day:02d} 12:00:00+00:00"
            images.append({"id": len(images), "file_name": f"x/{len(images)}.jpg", "width": 8, "height": 8, "date": date,
                           "latitude": float(lat0 + rng.normal(0, 4)), "longitude": float(lon0 + rng.normal(0, 4)),
                           "_cat": cat.id})
    if bad:  # unusable places: counted, never trained on
        for lat, lon in ((None, None), (float("nan"), float("nan")), (95.0, 10.0), ("north", 3.0)):
            images.append({"id": len(images), "file_name": f"x/{len(images)}.jpg", "width": 8, "height": 8,
                           "latitude": lat, "longitude": lon, "date": "2019-06-01 12:00:00+00:00", "_cat": cats[0].id})
    doc = {"images": [{k: v for k, v in im.items() if k != "_cat"} for im in images],
           "annotations": [{"id": im["id"], "image_id": im["id"], "category_id": im["_cat"]} for im in images],
           "categories": [c.to_json() for c in cats]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.json").write_text(json.dumps(doc).replace("NaN", "NaN"))
    return root


def job(tmp_path: Path, root: Path, *overrides: str) -> Config:
    return load_config(None, [f"data.root={root}", f"run_dir={tmp_path / 'run'}", "prior.epochs=12", "prior.batch_size=128",
                              "prior.width=64", "prior.depth=2", "prior.lr=0.005", "prior.pos_weight=64", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("prior")
    cfg = job(tmp, write_ranges(tmp / "data"))
    return cfg, train_prior(cfg, progress=False)


def presence(prior: Prior, lat: float, lon: float, day: float = math.nan) -> np.ndarray:
    return prior.log_presence(torch.tensor([[lat, lon, day]])).exp()[0].numpy()


def test_each_species_is_present_in_its_region_and_absent_elsewhere(trained: tuple[Config, dict[str, Any]]) -> None:
    cfg, summary = trained
    prior = Prior.load(Path(cfg.run_dir) / "prior" / PRIOR_FILE)
    assert summary["observations"] == 4 * 120 and summary["classes"] == 4
    for i, (lat, lon) in REGIONS.items():
        day = SEASON.get(i, math.nan)
        here = presence(prior, lat, lon, day)
        assert int(np.argmax(here)) == i, (i, here)
        elsewhere = [presence(prior, *REGIONS[j], day)[i] for j in REGIONS if j != i]
        assert here[i] > 0.5 and max(elsewhere) < 0.1 * here[i], (i, here[i], elsewhere)


def test_the_season_is_learned_and_an_unknown_date_means_any_time(trained: tuple[Config, dict[str, Any]]) -> None:
    cfg, _ = trained
    prior = Prior.load(Path(cfg.run_dir) / "prior" / PRIOR_FILE)
    lat, lon = REGIONS[3]
    summer, winter, anytime = (presence(prior, lat, lon, d)[3] for d in (180.0, 10.0, math.nan))
    assert summer > 3 * winter
    assert winter < anytime <= summer * 1.2


def test_unusable_places_are_counted_not_used(trained: tuple[Config, dict[str, Any]]) -> None:
    cfg, summary = trained
    assert summary["skipped"] == 4
    assert summary["unplaced"] == {"no coordinates": 2, "unusable coordinates": 2}
    assert json.loads((Path(cfg.run_dir) / "prior" / "summary.json").read_text())["skipped"] == 4
    assert not (Path(cfg.run_dir) / "prior" / CHECKPOINT_FILE).exists()
    assert len((Path(cfg.run_dir) / "prior" / "metrics.jsonl").read_text().splitlines()) == 12


def test_same_seed_same_prior_a_stopped_run_resumes_bitwise_and_a_finished_one_is_kept(
        tmp_path: Path, trained: tuple[Config, dict[str, Any]]) -> None:
    full_cfg, _ = trained
    cfg = job(tmp_path, Path(full_cfg.data.root))
    calls = {"n": 0}

    def stop_after_30() -> bool:
        calls["n"] += 1
        return calls["n"] > 30  # mid-epoch (4 steps an epoch)

    assert train_prior(cfg, should_stop=stop_after_30, progress=False)["stopped"]
    assert (tmp_path / "run" / "prior" / CHECKPOINT_FILE).is_file() and not complete(cfg)[0]
    train_prior(cfg, progress=False)
    a = Prior.load(Path(full_cfg.run_dir) / "prior" / PRIOR_FILE).net.state_dict()
    b = Prior.load(tmp_path / "run" / "prior" / PRIOR_FILE).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    done, detail = complete(cfg)
    assert done, detail
    mtime = (tmp_path / "run" / "prior" / PRIOR_FILE).stat().st_mtime_ns
    train_prior(cfg, progress=False)
    assert (tmp_path / "run" / "prior" / PRIOR_FILE).stat().st_mtime_ns == mtime
    assert not complete(job(tmp_path, Path(full_cfg.data.root), "prior.seed=1"))[0]


def test_a_split_without_places_is_a_data_error(tmp_path: Path) -> None:
    root = write_ranges(tmp_path / "data", per_class=1, bad=False)
    doc = json.loads((root / "train.json").read_text())
    for im in doc["images"]:
        im["latitude"] = im["longitude"] = None
    (root / "train.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="none of its 4 images has usable latitude"):
        train_prior(job(tmp_path, root), progress=False)


def test_encoding_wraps_the_date_line_and_hides_an_unknown_day() -> None:
    x = encode(torch.tensor([[10.0, 180.0, 1.0], [10.0, -180.0, 366.25], [10.0, 0.0, math.nan]]), use_date=True)
    assert torch.allclose(x[0], x[1], atol=1e-5)
    assert x[2, 4:].abs().sum() == 0
