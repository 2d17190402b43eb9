"""metrics.jsonl and its TensorBoard mirror: the same numbers, read back with TensorBoard's own reader."""

from __future__ import annotations

import math
from pathlib import Path

from lit.io import read_jsonl
from lit.train.metrics_log import MetricsWriter


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file under RUN/tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_numeric_metrics_are_mirrored_to_tensorboard(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path, tensorboard=True)
    for step, loss in ((1, 2.5), (2, 1.75), (3, float("nan"))):
        writer.write("train", step, loss=loss, lr=1e-3 * step, recipe="paper", final=False)
    writer.write("eval", 3, top1=61.5)
    writer.close()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["loss"] for r in records if r["type"] == "train"] == [2.5, 1.75, None]  # NaN is null in JSON
    scalars = tensorboard_scalars(tmp_path)
    assert set(scalars) == {"train/loss", "train/lr", "eval/top1"}  # strings and flags are not scalars
    assert scalars["train/loss"] == [(1, 2.5), (2, 1.75)]
    assert [s for s, _ in scalars["train/lr"]] == [1, 2, 3]
    assert all(math.isclose(v, 1e-3 * s, rel_tol=1e-6) for s, v in scalars["train/lr"])
    assert scalars["eval/top1"] == [(3, 61.5)]


def test_tensorboard_off_and_other_ranks_write_no_events(tmp_path: Path) -> None:
    MetricsWriter(tmp_path / "off", tensorboard=False).write("train", 1, loss=1.0)
    MetricsWriter(tmp_path / "rank1", enabled=False, tensorboard=True).write("train", 1, loss=1.0)
    assert (tmp_path / "off" / "metrics.jsonl").is_file() and not (tmp_path / "off" / "tensorboard").exists()
    assert not (tmp_path / "rank1").exists()
