"""`Classifier`: the one way from photos to species, for a script, `lit predict` and `lit serve` alike.

    from lit import Classifier

    clf = Classifier.load("runs/demo")            # a run or checkpoint (torch), or an ONNX export (onnxruntime only)
    for p in clf.predict(["a.jpg", crop], top=3, min_confidence=0.6):
        print(p.path, p.guesses[0].taxon, p.guesses[0].probability, p.answer.rank, p.answer.taxon)

`predict` takes paths, PIL images (a detector's crops) or uint8 arrays (H x W x 3 or H x W), one
or many, and returns a `Prediction` per image (lit.field.scoring): the top-k taxa at `rank`
with their probability, lineage and most likely species, and the confident answer (the deepest
rank whose probability reaches `min_confidence`). The temperature `lit calibrate` stored is
applied, `subset` restricts the candidate classes as `lit predict --subset` does, and both
engines score the same way (one Scorer), so a checkpoint and its export give the same answers
within the export's verified bound. Nothing here imports torch: a checkpoint's engine does, when
one is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lit.data.inat import Category
from lit.field.batch import predict_files
from lit.field.engines import Predictor, load_predictor
from lit.field.images import BadImage, Skipped, open_image
from lit.field.onnx_predict import is_export
from lit.field.scoring import Prediction, Scorer
from lit.field.subset import parse_subset

ImageInput = str | Path | Image.Image | np.ndarray
"""A path, an opened PIL image, or a uint8 array (H x W x 3 RGB, or H x W gray)."""


def as_image(item: ImageInput, index: int) -> tuple[Image.Image, str]:
    """(RGB image, its name in the results): a path's, or `<image N>` for an image or array given in memory."""
    if isinstance(item, (str, Path)):
        return open_image(Path(item).expanduser()), str(item)
    if isinstance(item, Image.Image):
        return (item if item.mode == "RGB" else item.convert("RGB")), f"<image {index}>"
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (3, 4)):
            raise BadImage(f"image {index}: an array must be uint8 H x W x 3 (RGB), H x W x 4 or H x W, "
                           f"got {item.dtype} {item.shape}")
        return Image.fromarray(item).convert("RGB"), f"<image {index}>"
    raise TypeError(f"image {index}: expected a path, a PIL image or a uint8 array, got {type(item).__name__}")


class Classifier:
    """A trained model that names species: a checkpoint (torch) or an ONNX export (onnxruntime), scored one way."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    @classmethod
    def load(cls, target: str | Path, *, device: str = "auto", threads: int | None = None,
             categories: str | Path | None = None, templates: Sequence[str] | None = None) -> Classifier:
        """A run folder or checkpoint file (its newest checkpoint; torch), or an export folder (`lit export --onnx`).

        `categories` and `templates` choose the classes of a checkpoint (an export's are fixed);
        an export that failed or lacks its verification is refused (lit.field.onnx_verify).
        """
        if is_export(target):
            return cls(load_predictor(model=target, categories=categories, templates=templates, threads=threads))
        return cls(load_predictor(checkpoint=target, categories=categories, templates=templates, device=device))

    @property
    def categories(self) -> list[Category]:
        """The classes, in score order."""
        return self.predictor.categories

    @property
    def temperature(self) -> float:
        """The calibrated temperature applied to every answer (1.0 when the run was never calibrated)."""
        return self.predictor.temperature()

    def describe(self) -> dict[str, Any]:
        return self.predictor.describe()

    def scorer(self, *, top: int = 5, rank: str = "species", subset: str | Sequence[str] | None = None,
               min_confidence: float = 0.0) -> Scorer:
        """How logits become answers: calibrated temperature, candidate subset, top-k at `rank`, back-off threshold.

        `subset` is one or more `RANK=NAME[,NAME]` or a CSV of allowed taxa, as `lit predict --subset`.
        """
        specs = [subset] if isinstance(subset, str) else list(subset or [])
        return Scorer.of(self.categories, temperature=self.temperature, allowed=parse_subset(specs, self.categories),
                         k=top, rank=rank, min_confidence=min_confidence)

    def predict(self, images: ImageInput | Iterable[ImageInput], *, top: int = 5, rank: str = "species",
                subset: str | Sequence[str] | None = None, min_confidence: float = 0.0, batch_size: int = 32) -> list[Prediction]:
        """One Prediction per image, in order; an unreadable file raises BadImage naming it."""
        items = [images] if isinstance(images, (str, Path, Image.Image, np.ndarray)) else list(images)
        scorer = self.scorer(top=top, rank=rank, subset=subset, min_confidence=min_confidence)
        return self.score_images(items, scorer, batch_size)

    def score_images(self, items: Sequence[ImageInput], scorer: Scorer, batch_size: int = 32) -> list[Prediction]:
        """Predictions of images in memory or on disk with a prepared Scorer, `batch_size` at a time."""
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            opened = [as_image(item, start + i) for i, item in enumerate(items[start:start + batch_size])]
            logits = self.predictor.logits_of([im for im, _ in opened])
            out += scorer.score([name for _, name in opened], logits)
        return out

    def predict_files(self, paths: Sequence[Path], scorer: Scorer, **kwargs: Any) -> tuple[list[Prediction], list[Skipped]]:
        """Many files from disk with the engine's own loaders (workers, batches): predictions and the files skipped
        (lit.field.batch.predict_files; `lit predict`'s path)."""
        return predict_files(self.predictor, paths, scorer, **kwargs)


__all__ = ["Classifier", "ImageInput", "as_image"]
