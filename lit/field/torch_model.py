"""A trained checkpoint as a predictor: image tower, class embeddings (kept by lit.eval.classifier_cache), logit scale and bias.

`CheckpointModel.logits` gives what `lit.field.scoring` turns into answers, so the checkpoint
and its ONNX export (lit.field.onnx_predict) share one scoring path. Its preprocessing is
open_clip's eval transform behind `Preprocessing.reduce` (lit.field.images): the same resize and
crop as the export's, in the same bounded memory for images of extreme aspect ratios.

The run's location prior (`lit prior`, lit.prior.store.find_prior on the run's config) is loaded
with the checkpoint when there is one; `log_prior` gives its log presence in the model's class
order and `prior_weight` the weight `lit calibrate` fit (lit.prior.combine.DEFAULT_WEIGHT before).
A prior that does not know some of the classes (`--categories` of another dataset) is left out
with a warning: those classes can still be named from the image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lit.config import Config
from lit.configlib import ConfigError
from lit.data.inat import Category, DatasetError, load_categories_csv, load_categories_json
from lit.errors import DataError
from lit.eval.calibration import prior_weight_for, temperature_for
from lit.eval.templates import TemplateSet
from lit.field.batch import LogitBatch
from lit.field.images import MAX_ASPECT, BadImage, Preprocessing
from lit.log import logger
from lit.model import BuiltModel, clip_api, logit_params, preprocess_cfg
from lit.prior.combine import DEFAULT_WEIGHT
from lit.prior.store import Prior, find_prior


@dataclass(frozen=True)
class BoundedTransform:
    """open_clip's eval transform of an image already resized and cropped by `reduction` (Preprocessing.reduce).

    On the reduced image, which has the model's size, open_clip's Resize and CenterCrop change nothing:
    a photo up to MAX_ASPECT gives exactly open_clip's tensor. Without a reduction (a tower whose
    preprocessing the numpy path does not implement: `longest`, a non-square `shortest`), open_clip's
    transform runs alone and, unless it is `longest` (bounded by itself), a more extreme image is refused.
    """

    transform: Callable[[Any], torch.Tensor]
    reduction: Preprocessing | None
    refuse_beyond: float | None = None

    @classmethod
    def of(cls, built: BuiltModel) -> BoundedTransform:
        cfg = preprocess_cfg(built.model)
        try:
            return cls(built.preprocess_val, Preprocessing.of(cfg))
        except (ConfigError, KeyError, TypeError, ValueError):
            return cls(built.preprocess_val, None, None if cfg.get("resize_mode") == "longest" else MAX_ASPECT)

    def __call__(self, image: Any) -> torch.Tensor:
        if self.reduction is not None:
            return self.transform(self.reduction.reduce(image))
        w, h = image.size
        if self.refuse_beyond is not None and max(w, h) > self.refuse_beyond * min(w, h):
            raise BadImage(f"{w}x{h} pixels: an aspect ratio over {self.refuse_beyond:g}:1 is refused by this model's "
                           "preprocessing (its resize would hold the long side at full scale)")
        return self.transform(image)


def read_categories(path: str | Path) -> list[Category]:
    """Categories from a categories.json / split JSON, or a CSV with the official columns (`categories`)."""
    path = Path(path)
    try:
        return load_categories_csv(path) if path.suffix.lower() == ".csv" else load_categories_json(path)
    except DatasetError as err:
        raise ConfigError(str(path), "categories", str(err)) from err


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder of a checkpoint (RUN for RUN/checkpoints/step-N.pt)."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def load_run_prior(cfg: Config, run_dir: Path, categories: Sequence[Category],
                   device: torch.device) -> tuple[Prior | None, torch.Tensor | None, str]:
    """The run's prior and its column of each category, or (None, None, why not: "" when the run has none).

    The prior is looked for where the run is now (a moved run folder), then where its config says.
    """
    path = None
    if not cfg.prior.out:
        path = find_prior(replace(cfg, run_dir=str(run_dir)))
    path = path or find_prior(cfg)
    if path is None:
        return None, None, ""
    prior = Prior.load(path, device)
    try:
        return prior, prior.columns([c.id for c in categories]), ""
    except DataError as err:
        logger.warning("the location prior is not used: %s", err)
        return None, None, str(err)


@dataclass
class CheckpointModel:
    """What prediction needs from a checkpoint; `classifier` rows are unit-norm class embeddings [C, D]; the run's
    location prior and its columns for `categories` (None without one)."""

    checkpoint: Path
    cfg: Config
    built: BuiltModel
    categories: list[Category]
    templates: tuple[str, ...]
    classifier: torch.Tensor
    device: torch.device
    step: int
    prior: Prior | None = None
    prior_columns: torch.Tensor | None = None
    prior_problem: str = ""

    @classmethod
    def load(cls, checkpoint: str | Path, categories: str | Path | None = None, templates: Sequence[str] | None = None,
             device: str = "auto") -> CheckpointModel:
        """The newest checkpoint of a run (or a file), with class embeddings built once and kept on disk."""
        from lit import dist
        from lit.checkpoint import model_from_checkpoint, resolve_checkpoint
        from lit.eval.classifier_cache import cache_dir, classifier_key, load_or_build
        from lit.eval.runner import load_categories, val_folder
        from lit.eval.templates import resolve_templates
        from lit.eval.zeroshot import build_classifier

        dev = dist.pick_device(dist.DistInfo(0, 1, 0, "single"), device)
        path = resolve_checkpoint(checkpoint)
        cfg, built, state = model_from_checkpoint(path, dev)
        if categories:
            cats = read_categories(categories)
        else:
            folder, key = val_folder(cfg)
            cats = load_categories(folder, key)
        names = tuple(templates) if templates else tuple(cfg.eval.templates)
        sets: list[TemplateSet] = resolve_templates(names, cfg.captions)
        classifier = load_or_build(cache_dir(path), classifier_key(path, cats, sets),
                                   lambda: build_classifier(built.model.eval(), built.tokenizer, cats, sets, device=dev), dev)
        prior, columns, problem = load_run_prior(cfg, run_dir_of(path), cats, dev)
        return cls(path, cfg, built, cats, names, classifier.to(dev).float(), dev, int(state["step"]), prior, columns, problem)

    @property
    def run_dir(self) -> Path:
        """The run folder of the checkpoint (RUN for RUN/checkpoints/step-N.pt)."""
        return run_dir_of(self.checkpoint)

    @cached_property
    def preprocess(self) -> BoundedTransform:
        """open_clip's eval transform in bounded memory (BoundedTransform)."""
        return BoundedTransform.of(self.built)

    @property
    def logit_scale(self) -> float:
        return logit_params(self.built.model)[0]

    @property
    def logit_bias(self) -> float:
        """The trained logit bias of a sigmoid model (train.loss=siglip); 0.0 for a CLIP-loss model."""
        return logit_params(self.built.model)[1]

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [N, D] (float32) of preprocessed images [N, 3, H, W]."""
        feats = clip_api(self.built.model).encode_image(images.to(self.device))
        return F.normalize(feats.float(), dim=-1)

    def logits(self, images: torch.Tensor) -> np.ndarray:
        """logit_scale x cosine(image, class) + logit_bias: [N, C] float32."""
        logits = (self.logit_scale * self.embed(images) @ self.classifier.T).cpu().numpy()
        return logits + np.float32(self.logit_bias) if self.logit_bias else logits

    def batches(self, paths: Sequence[Path], batch_size: int, workers: int) -> Iterator[LogitBatch]:
        """Logits of the readable files, batch by batch, decoded by DataLoader workers (lit.field.batch.Engine)."""
        from lit.field.inputs import image_loader

        workers = min(workers, -(-len(paths) // batch_size))  # no more workers than batches: each costs a start-up
        for batch in image_loader(paths, self.preprocess, batch_size, workers):
            logits = self.logits(batch.images) if batch.images is not None else np.zeros((0, len(self.categories)), np.float32)
            yield batch.indices, logits, batch.bad

    def logits_of(self, images: Sequence[Any]) -> np.ndarray:
        """Logits of opened RGB images (the web app's path)."""
        return self.logits(torch.stack([self.preprocess(im) for im in images]))

    def temperature(self) -> float:
        """The temperature `lit calibrate` stored for this checkpoint (1.0 without one)."""
        return temperature_for(self.run_dir, str(self.checkpoint), self.step)

    def log_prior(self, places: np.ndarray) -> np.ndarray | None:
        """log p(present) [N, C] float32 at places [N, 3] (lat, lon, day; NaN unknown) in class order; None without a prior."""
        if self.prior is None:
            return None
        rows = torch.from_numpy(np.ascontiguousarray(places, dtype=np.float32).reshape(-1, 3))
        return self.prior.log_presence(rows, self.prior_columns).float().cpu().numpy()

    @property
    def prior_weight(self) -> float:
        """The prior's weight `lit calibrate` fit for this checkpoint (DEFAULT_WEIGHT without one)."""
        weight = prior_weight_for(self.run_dir, str(self.checkpoint), self.step)
        return DEFAULT_WEIGHT if weight is None else weight

    def describe(self) -> dict[str, Any]:
        return {"kind": "checkpoint", "checkpoint": str(self.checkpoint), "step": self.step, "model": self.cfg.model.name,
                "classes": len(self.categories), "templates": list(self.templates),
                "prior": None if self.prior is None else str(self.prior.path),
                **({"prior_problem": self.prior_problem} if self.prior_problem else {})}


__all__ = ["CheckpointModel", "load_run_prior", "run_dir_of"]
