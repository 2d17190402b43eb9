"""Shared fixtures: a small toy dataset and its shards, built once per session with the real code."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from lit.config import Config

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def engine_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Toy iNat (12 train / 4 val images per class, 64 px) as train and val shards of 32 samples."""
    from lit.config import CaptionConfig, ShardConfig
    from lit.data.shards import build_shards
    from lit.data.toy import write_toy_inat

    base = tmp_path_factory.mktemp("engine-data")
    root = write_toy_inat(base / "toy", seed=0, train_per_class=12, val_per_class=4, image_size=64)
    shard_cfg = ShardConfig(samples_per_shard=32, workers=1)
    build_shards(root, "train", base / "shards" / "train", shard_cfg, CaptionConfig(), progress=False)
    build_shards(root, "val", base / "shards" / "val", ShardConfig(samples_per_shard=32, workers=1, shuffle=False), CaptionConfig(), progress=False)
    return {"root": root, "train": base / "shards" / "train", "val": base / "shards" / "val"}


def tiny_config(run_dir: Path, data: dict[str, Path], overrides: Sequence[str] = ()) -> Config:
    """The tiny random model on the engine data: a few fast steps per epoch."""
    from lit.config import load_config

    base = [
        f"run_dir={run_dir}", "model.name=lit-tiny", "model.image_weights=",
        f"data.root={data['root']}", f"data.train_shards={data['train']}", f"data.val_shards={data['val']}",
        "data.image_source=raw", "data.augment=true", "data.batch_size=8", "data.workers=2", "data.shuffle_buffer=16", "data.samples_per_epoch=64",
        "train.epochs=2", "train.warmup_steps=3", "train.lr=1e-3", "train.log_every=1",
        "checkpoint.every_steps=2", "eval.final=false", "eval.every_epochs=0",
    ]
    return load_config(None, [*base, *overrides])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly which groups of tests were skipped and why: a passing run with the SLURM tests skipped is not the whole suite."""
    groups: dict[tuple[str, str], int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        path = report.nodeid.split("::")[0]
        group = "/".join(path.split("/")[:2]) if path.count("/") >= 2 else path
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        groups[(group, reason)] = groups.get((group, reason), 0) + 1
    if not groups:
        return
    terminalreporter.section("skipped test groups (the suite did not run whole)", sep="=", yellow=True)
    for (group, reason), count in sorted(groups.items()):
        terminalreporter.line(f"{group}: {count} test(s) skipped: {reason}")
