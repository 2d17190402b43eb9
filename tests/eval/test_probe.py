"""The linear probe: our torch solver against scikit-learn's on the same features, and `lit probe` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lit.configlib import ConfigError
from lit.eval.probe import ProbeSettings, fit
from tests.conftest import tiny_config


def clusters(n_per_class: int, classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian classes on the unit sphere: a problem where a linear model is good but not perfect."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    x = centers[y] + rng.normal(scale=1.6, size=(len(y), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def test_the_torch_probe_matches_scikit_learns_logistic_regression() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = clusters(80, 20, 32, seed=0)
    train = torch.arange(len(y)) % 4 != 0  # a quarter of each class held out
    x_train, y_train, x_val, y_val = x[train], y[train], x[~train], y[~train]
    layer = fit(x_train.half(), y_train, 20, ProbeSettings(epochs=60, batch_size=64, lr=1e-2, weight_decay=1e-4))
    ours = float((layer(x_val).argmax(1) == y_val).float().mean())
    reference = sklearn.LogisticRegression(C=10.0, max_iter=2000).fit(x_train.numpy(), y_train.numpy())
    theirs = float((reference.predict(x_val.numpy()) == y_val.numpy()).mean())
    assert 0.3 < theirs < 0.99  # neither trivial nor separable: the comparison means something
    assert abs(ours - theirs) <= 0.04, (ours, theirs)


def test_lit_probe_reports_like_zero_shot_and_refuses_raw_shards(engine_data: dict, tmp_path: Path) -> None:
    from lit.cli import main
    from lit.config import save_config
    from lit.data.embed import embed_folder

    cfg = tiny_config(tmp_path / "run", engine_data, ["data.image_source=cached", "data.augment=false", f"data.train_embeddings={tmp_path / 'emb/train'}",
                                                      f"data.val_embeddings={tmp_path / 'emb/val'}"])
    embed_folder(cfg, engine_data["train"], tmp_path / "emb/train", batch_size=32, dtype="float32", device="cpu")
    embed_folder(cfg, engine_data["val"], tmp_path / "emb/val", batch_size=32, dtype="float32", device="cpu")
    save_config(cfg, tmp_path / "job.yaml")
    assert main(["probe", str(tmp_path / "job.yaml"), "--epochs", "5", "--out", str(tmp_path / "probe")]) == 0
    result = json.loads((tmp_path / "probe/results.json").read_text())
    assert result["num_classes"] == 32 and result["num_samples"] == 128 and result["setup"]["train_samples"] == 384
    assert 0 <= result["top1"] <= result["top5"] <= 100 and result["per_rank"]["species"] == result["top1"]
    assert result["per_rank"]["kingdom"] >= result["per_rank"]["genus"] >= result["per_rank"]["species"]
    assert (tmp_path / "probe/plots/accuracy.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="data.train_embeddings"):
        from lit.eval.probe import probe

        probe(tiny_config(tmp_path / "run", engine_data, [f"data.train_embeddings={engine_data['train']}",
                                                         f"data.val_embeddings={tmp_path / 'emb/val'}"]), ProbeSettings(epochs=1))
