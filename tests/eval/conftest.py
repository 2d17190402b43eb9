"""Shared fixtures for the evaluation tests: a tiny random model, small toy shards, a saved checkpoint."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Make helper modules of this folder importable in spawned processes too.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from lit.config import CaptionConfig, Config, ModelConfig, ShardConfig, config_from_dict  # noqa: E402
from lit.configlib import to_dict  # noqa: E402
from lit.model import BuiltModel, build_model  # noqa: E402

TINY = ModelConfig(name="lit-tiny", image_weights="")


@pytest.fixture(scope="session")
def tiny() -> BuiltModel:
    """The tiny random model (fast), in eval mode."""
    built = build_model(TINY)
    built.model.eval()
    return built


@pytest.fixture(scope="session")
def toy_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Validation shards of the toy dataset: 32 classes x 4 images, 4 shards, class order kept."""
    from lit.data.shards import build_shards
    from lit.data.toy import write_toy_inat

    root = tmp_path_factory.mktemp("toy-small")
    write_toy_inat(root / "toy", seed=0, train_per_class=1, val_per_class=4, image_size=48, test_per_class=0)
    build_shards(root / "toy", "val", root / "val", ShardConfig(samples_per_shard=32, workers=1, shuffle=False),
                 CaptionConfig(), progress=False)
    return root / "val"


def make_config(run_dir: Path, val: Path, model: ModelConfig = TINY, **sections: dict[str, Any]) -> Config:
    """A CPU job config on the given validation shards; `sections` update config sections."""
    tree = to_dict(Config())
    tree.update(run_dir=str(run_dir), model=to_dict(model))
    tree["data"].update(val_shards=str(val), workers=0, image_source="raw")
    tree["train"].update(device="cpu")
    tree["eval"].update(batch_size=16, hardest=5)
    for name, values in sections.items():
        tree[name].update(values)
    return config_from_dict(tree, "test")


@pytest.fixture
def config_for() -> Callable[..., Config]:
    return make_config


def save_tiny_checkpoint(cfg: Config, built: BuiltModel, step: int = 7) -> Path:
    """A checkpoint of `built` in cfg.run_dir, as training writes it (only what evaluation reads matters)."""
    from lit import checkpoint
    from lit.config import dump_config
    from lit.model import fingerprint

    state = {
        "step": step, "samples_seen": 0, "total_steps": step, "epoch": 0, "rng": [], "world_size": 1,
        "model": {k: v for k, v in built.model.state_dict().items() if not k.startswith("visual.")},
        "optimizer": {}, "scaler": {}, "tower_fingerprint": fingerprint(built.model, built.preprocess_val),
        "config": dump_config(cfg),
    }
    return checkpoint.save(cfg.run_dir, state, keep_last=1)
