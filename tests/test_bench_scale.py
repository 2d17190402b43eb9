"""The scale benchmark: its measuring of a `lit` stage, its projection and its section; the whole run at 200 classes (slow).

Speed and memory live in `make bench`; here nothing is timed, only that a stage is measured from a
bare parent (not carrying this process's memory), that the projection and the markdown are made
from the runs, and (slow) that each `lit` command of the benchmark still runs as written.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import pytest

from bench import _proctree, _scale_params, _scale_report, scale


def test_a_stage_is_measured_from_a_bare_parent(tmp_path: Path) -> None:
    stage = _proctree.run_stage("toy-inat", ["toy-inat", str(tmp_path / "inat"), "--wide", "40", "--train-per-class", "1",
                                         "--val-per-class", "1", "--image-size", "16"], tmp_path / "toy.log", tmp_path)
    assert (tmp_path / "inat" / "val.json").is_file()
    assert stage.wall_s > 0 and stage.cpu_s > 0 and stage.tree_pss > 0 and stage.hwm_rss > 10e6
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if mine > 2 * stage.hwm_rss:  # this process has torch loaded: a plain fork would report at least its size
        assert stage.hwm_rss < mine
    with pytest.raises(RuntimeError, match="exited"):
        _proctree.run_stage("bad", ["toy-inat"], tmp_path / "bad.log", tmp_path)


def _run(v: int, peaks: dict[str, float]) -> dict[str, Any]:
    stages = {name: {"wall_s": 1.0 + v, "cpu_s": 1.0, "load": 0.5, "peak_bytes": peaks.get(name, 1e9) * (v if name == "calibrate" else 1),
                     "latency_p50_ms": 10.0, "ready_s": 1.0} for name in _scale_params.STAGES}
    check = {"images": 100 * v, "ok": True, "top1_same": 100 * v, "top1_differs": 0, "near_ties": 3, "near_tie_top1_differs": 0,
             "decisive_top1_differs": 0, "score_max_abs_diff": 1e-4, "score_bound": 1e-3}
    return {"val_per_class": v, "val_images": 100 * v, "train_images": 200, "classes": 100, "photos": 20 * v, "samples_seen": 400,
            "stages": stages, "export_check": check, "probe": {"seconds": 2.0, "fit_seconds": 1.5, "train_samples": 200, "dim": 768},
            "predict_top1_agree": {"rows": 20 * v, "top1_same": 20 * v}, "uptime": "load average: 1.00, 1.00, 1.00"}


def test_projection_flags_growth_and_the_goal() -> None:
    runs = [_run(1, {"calibrate": 1e9}), _run(3, {"calibrate": 1e9})]  # calibrate: 1 GB per 100 images
    feature = {"images": [100, 200], "peak_bytes": [1e8, 2e8], "base_bytes": 5e7, "bytes_per_image": 1e6}
    long = {"replicas": 4, "images": 800, "stages": {n: {"wall_s": 2.0, "cpu_s": 1.0, "load": 0.5, "peak_bytes": 1e9}
                                                    for n in _scale_params.LONG}}
    proj = {p.stage: p for p in _scale_report.project(runs, feature, long)}
    assert set(proj) == set(_scale_params.STAGES) - {"toy-inat"}
    assert proj["calibrate"].grows and proj["calibrate"].bytes_per_image == pytest.approx(1e7)
    assert proj["calibrate"].peak_bytes == pytest.approx(1e9 + 1e7 * (_scale_params.INAT_VAL - 100))
    assert not proj["eval"].grows and proj["eval"].peak_bytes == 1e9
    assert proj["probe"].peak_bytes > 1e6 * _scale_params.INAT_TRAIN
    assert not proj["embed train"].grows and proj["embed train"].peak_bytes == 1e9  # flat from 200 to 800 training images
    result = {"runs": runs, "long": long, "feature_read": feature, "categories": "test",
              "projection": [p.__dict__ for p in proj.values()]}
    rows = _scale_report.rows(result)
    section = [r for r in rows if "section" in r]
    assert len(section) == 1 and section[0]["section"] == "Scale: the paper's class count"
    text = section[0]["markdown"]
    assert "| lit calibrate |" in text and "**NO**" in text and "images x classes: lit calibrate" in text
    goal = [r for r in rows if r.get("goal") is not None]
    assert len(goal) == 1 and goal[0]["values"][0] < 1  # the probe's 2.7 TB misses 16 GB


@pytest.mark.slow
def test_scale_benchmark_runs_every_stage(tmp_path: Path) -> None:
    result = scale.measure(tmp_path, val_per_class=(1, 2), classes=200, photos=25, requests=3, samples_per_epoch=512,
                           log=lambda _: None)
    runs = result["runs"]
    assert [r["val_images"] for r in runs] == [200, 400] and [r["photos"] for r in runs] == [25, 50]
    for r in runs:
        assert list(r["stages"]) == list(_scale_params.STAGES)
        for name, s in r["stages"].items():
            assert s["wall_s"] > 0 and s["peak_bytes"] > 10e6, name
        assert r["export_check"]["ok"] and r["export_check"]["images"] == r["val_images"]
        assert r["stages"]["serve"]["answered"] == 3
        assert r["predict_top1_agree"]["rows"] == r["photos"]
    assert set(result["long"]["stages"]) == set(_scale_params.LONG) and result["long"]["images"] == _scale_params.REPLICAS * runs[0]["train_images"]
    assert len(result["feature_read"]["peak_bytes"]) == 4  # at 200 images the read stays under the imports' high-water mark
    rows = _scale_report.rows(result)
    assert sum("section" in r for r in rows) == 1 and all(len(r["values"]) == 1 for r in rows if "section" not in r)
