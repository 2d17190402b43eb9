"""`make demo`, shortened: the same code path end to end (toy data → shards → cache → 2-process local
training preempted half way → zero-shot results), every artifact checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from launcher.demo import ARTIFACTS, demo
from lit import checkpoint
from lit.io import read_jsonl


@pytest.mark.slow
def test_shortened_demo_leaves_every_artifact_and_resumes(tmp_path: Path) -> None:
    data, run_dir = tmp_path / "data", tmp_path / "runs" / "demo"
    overrides = [
        f"run_dir={run_dir}", f"data.root={data / 'toy-inat'}",
        f"data.train_shards={data / 'shards/train'}", f"data.val_shards={data / 'shards/val'}",
        f"data.train_embeddings={data / 'embeddings/train'}", f"data.val_embeddings={data / 'embeddings/val'}",
        "data.batch_size=16", "data.workers=1", "train.epochs=2", "train.warmup_steps=2", "eval.every_epochs=1",
    ]
    result = demo(overrides, preempt=True, train_per_class=8, val_per_class=2)

    for name in (*ARTIFACTS, "tensorboard"):
        assert (run_dir / name).exists(), name
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["slurm"]["tasks_per_node"] == 2
    assert json.loads((run_dir / "results.json").read_text()) == result
    assert result["num_classes"] == 32 and result["num_samples"] == 64
    prior = result["prior"]  # trained before LiT, so the final evaluation weighs the located images with it
    assert (run_dir / "prior" / "prior.pt").is_file() and 48 <= prior["located"] < 64 and prior["num_samples"] == 64
    assert prior["gain_top1"] == pytest.approx(prior["top1"] - result["top1"])
    records = read_jsonl(run_dir / "metrics.jsonl")
    starts = [r for r in records if r["type"] == "start"]
    assert len(starts) == 2 and starts[0]["resumed_from"] == "" and starts[1]["resumed_from"].startswith("step-")
    assert checkpoint.step_of(checkpoint.list_checkpoints(run_dir)[-1]) == starts[1]["total_steps"]
    stop = next(r for r in records if r["type"] == "stop")
    assert "SIGUSR2" in stop["reason"]
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == starts[0]["total_steps"]  # resumed, no step trained twice
    assert records[-1]["type"] == "done"
    assert (run_dir / "plots" / "training.png").stat().st_size > 10_000
