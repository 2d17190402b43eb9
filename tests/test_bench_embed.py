"""The embed benchmark's measuring functions on a tiny input: the rows it reports, never its speed.

Speed lives in `make bench`; here a few dozen 500x375 JPEGs, one round, check that every
variant runs `embed_folder` end to end into a fresh folder and that the rows carry the
promised metrics, units and goal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import _common as common
from bench import embed


@pytest.fixture()
def tiny_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "OUT", tmp_path)  # toy images, shards and embed outputs under tmp_path
    monkeypatch.setattr(embed, "LATEST", {})
    monkeypatch.setattr(common, "settle", lambda **_: 0.0)  # no waiting for a quiet machine: nothing here is timed
    return tmp_path


def test_embed_rows_have_their_units_and_the_goal(tiny_out: Path) -> None:
    data = embed.dataset(train_per_class=1, default_per_class=1, samples_per_shard=(8, 8))  # 32 + 32 images
    assert data.images(data.cheap) == len(data.jpegs) == 32 and data.images(data.default) == 32
    vs = embed.measure(data, repeats=1, max_wait=0.0, warmup=())
    assert set(vs) == set(embed.VARIANTS) and all(len(v.rates) == 1 and len(v.cpu_ms) == 1 for v in vs.values())
    assert all(r > 0 for v in vs.values() for r in v.rates + v.cpu_ms)
    assert not list((tiny_out / "work" / "embed").glob("*/manifest.json"))  # every run's output folder was removed

    rows = embed.rows(vs, data)
    units = {r["metric"]: r["unit"] for r in rows}
    assert all(len(r["values"]) == 1 for r in rows)
    assert units["lit embed, lit-tiny, 2 workers"] == "images/s" == units["lit embed, lit-tiny, 0 workers (main process decodes)"]
    assert units["JPEG decode + eval transform (224 px), 500x375, 1 core"] == "images/s"
    assert units["lit embed, default tower: 2 workers / 0 (new / old code path)"] == "ratio"
    assert units["lit embed, lit-tiny: 2 workers / 0"] == "ratio" and units["lit embed CPU, lit-tiny, 2 workers"] == "ms/image"
    goals = {r["metric"]: r["goal"] for r in rows if "goal" in r}
    assert goals == {"lit embed, lit-tiny, 2 workers / 1-core decode + eval transform": pytest.approx(1.6)}
    params = rows[0]["params"]
    assert params["images"] == {"cheap": 32, "default": 32, "decoded": 32} and params["workers"] == 2
    share = next(r for r in rows if r["metric"].endswith("share of its workers' decode rate"))
    assert 0 < share["values"][0] <= 1


def test_efficiency_is_a_share_of_the_workers_rate_capped_at_one() -> None:
    assert embed.efficiency([160.0, 500.0], [100.0, 200.0], workers=2) == [pytest.approx(0.8), 1.0]


def test_the_projection_takes_this_runs_embed_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import projection

    monkeypatch.setattr(embed, "LATEST", {"embed": [120.0, 150.0, 90.0], "decode_own": [100.0, 100.0, 100.0], "workers": 2,
                                           "measured_by": "the embed benchmark, earlier in this run"})
    share, about = projection.embed_share()
    assert share == [pytest.approx(0.6), pytest.approx(0.75), pytest.approx(0.45)]
    assert about["measured_by"] == "the embed benchmark, earlier in this run" and about["embed_images_s"] == 120.0
