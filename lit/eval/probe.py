"""A supervised ceiling of the frozen features: a linear classifier (logistic regression) on cached embeddings.

`lit probe JOB.yaml` trains softmax regression on the cached training embeddings
(data.train_embeddings, view 0) and reports validation top-1/top-5 and per-rank accuracy exactly
as the zero-shot report does (lit.eval.metrics). It says how much of the frozen tower's
information LiT's text side recovers; a sweep's report puts it beside zero-shot.

The solver is torch: mini-batch AdamW over the features held in memory as fp16, with a cosine
learning rate and weight decay. scikit-learn's LogisticRegression (lbfgs, multinomial) needs the
float64 features and N x C matrices of probabilities and gradients per iteration: at iNat2021
scale (2.7M x 768, 10,000 classes) about 446 GB, while this solver holds 4.3 GB (fp16
features, the weights with AdamW's state, a batch of logits; BENCHMARKS.md, "Linear probe solver"). On the toy set
both reach the same accuracy (tests/eval/test_probe.py checks it against scikit-learn).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lit.config import Config
from lit.configlib import ConfigError
from lit.data.folders import ShardFolder, open_folder
from lit.data.inat import Category
from lit.data.taxonomy import Taxonomy
from lit.eval.metrics import Counts, label_lookup, summarize, to_class_index
from lit.eval.runner import load_categories, write_outputs
from lit.log import logger


@dataclass(frozen=True)
class ProbeSettings:
    """How the linear probe is trained."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def read_features(folder: ShardFolder) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features [N, D] fp16, unit-norm; category ids [N]; bad samples) of an embeddings folder (view 0).

    Each row is normalized in float32 and stored in fp16 at once, into a tensor sized from the
    manifest's count: memory is N x D x 2 bytes (4.1 GB at iNat2021's 2.7M images x 768), never a
    float32 copy of the whole set.
    """
    import webdataset as wds

    feats: torch.Tensor | None = None
    labels = np.empty(max(1, folder.samples), dtype=np.int64)
    n = bad = 0
    dataset = wds.WebDataset(folder.urls, shardshuffle=False, empty_check=False).decode()
    for sample in dataset:
        try:
            array = np.asarray(sample["npy"], dtype=np.float32)
            label = int(sample["cls"])
        except (KeyError, ValueError, TypeError):
            bad += 1
            continue
        row = torch.from_numpy(array[0] if array.ndim == 2 else array)
        if feats is None:
            feats = torch.empty(max(1, folder.samples), row.numel(), dtype=torch.float16)
        if n == len(feats):  # more samples than the manifest said: grow (never expected)
            feats = torch.cat([feats, torch.empty_like(feats)])
            labels = np.concatenate([labels, np.empty_like(labels)])
        feats[n] = F.normalize(row, dim=0).half()
        labels[n] = label
        n += 1
    if feats is None or n == 0:
        raise ConfigError("", "data.train_embeddings", f"{folder.path} holds no readable embeddings: rerun `lit embed`")
    return feats[:n], torch.from_numpy(labels[:n].copy()), bad


def _targets(labels: torch.Tensor, categories: list[Category], key: str) -> torch.Tensor:
    targets = to_class_index(labels, label_lookup(categories))
    if bool((targets < 0).any()):
        missing = sorted(set(labels[targets < 0].tolist()))[:5]
        raise ConfigError("", key, f"labels {missing} are not in the validation categories: both splits must come from one dataset")
    return targets


def fit(x: torch.Tensor, y: torch.Tensor, classes: int, settings: ProbeSettings) -> torch.nn.Linear:
    """Softmax regression on (x, y) by mini-batch AdamW; deterministic for a seed."""
    gen = torch.Generator().manual_seed(settings.seed)
    layer = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.AdamW(layer.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(x) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    step = 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * settings.batch_size:(i + 1) * settings.batch_size]
            for group in opt.param_groups:
                group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(layer(x[idx].float()), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return layer


@torch.no_grad()
def evaluate(layer: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, categories: list[Category], hardest: int) -> dict[str, Any]:
    taxonomy = Taxonomy.of(categories)
    counts = Counts.zeros(len(categories))
    for i in range(0, len(x), 4096):
        counts.add(layer(x[i:i + 4096].float()), y[i:i + 4096], taxonomy.ids)
    return summarize(counts, categories, taxonomy, hardest)


def probe(cfg: Config, settings: ProbeSettings, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the probe on the job's cached training embeddings, evaluate on its validation ones; results.json in `out_dir`."""
    start = time.perf_counter()
    train = open_folder(cfg.data.train_embeddings, "data.train_embeddings", "lit embed")
    val = open_folder(cfg.data.val_embeddings, "data.val_embeddings", "lit embed")
    for folder, key in ((train, "data.train_embeddings"), (val, "data.val_embeddings")):
        if folder.manifest.get("kind") != "embeddings":
            raise ConfigError("", key, f"{folder.path} holds no cached embeddings: make them with `lit embed` (the probe needs the cache)")
    if train.manifest.get("fingerprint") != val.manifest.get("fingerprint"):
        raise ConfigError("", "data.val_embeddings", f"{val.path} and {train.path} were made by different image towers: "
                          "embed both splits with one model")
    categories = load_categories(val, "data.val_embeddings")
    x_train, labels_train, bad_train = read_features(train)
    x_val, labels_val, bad_val = read_features(val)
    y_train = _targets(labels_train, categories, "data.train_embeddings")
    y_val = _targets(labels_val, categories, "data.val_embeddings")
    torch.manual_seed(settings.seed)
    layer = fit(x_train, y_train, len(categories), settings)
    fit_s = time.perf_counter() - start
    result = evaluate(layer, x_val, y_val, categories, cfg.eval.hardest)
    result.update(
        method="linear probe (softmax regression on frozen features)", bad_samples=bad_train + bad_val,
        seconds=round(time.perf_counter() - start, 2), fit_seconds=round(fit_s, 2),
        setup={"train": str(train.path), "val": str(val.path), "train_samples": len(x_train), "dim": int(x_train.shape[1]),
               "fingerprint": train.manifest.get("fingerprint"), **settings.__dict__},
    )
    logger.info("linear probe: top-1 %.2f%%, top-5 %.2f%% on %d samples of %d classes (trained on %d, %.1f s)",
                result["top1"], result["top5"], result["num_samples"], result["num_classes"], len(x_train), result["seconds"])
    if out_dir is not None:
        write_outputs(result, Path(out_dir))
    return result


__all__ = ["ProbeSettings", "evaluate", "fit", "probe", "read_features"]
