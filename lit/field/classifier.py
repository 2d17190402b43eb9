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

Where and when a photo was taken weighs its answer by the model's location prior (`lit prior`):
`places` gives one place for all images or one per image (a lit.data.places.Place, or
(lat, lon) or (lat, lon, date) with date "YYYY-MM-DD" or a datetime.date; None: unknown), and
each path's or PIL image's EXIF (GPS, time of capture) fills what was not given (`exif=False`:
never read). A located Prediction keeps the image-only answer in `image_only`; one without a
place is exactly the image-only answer.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from PIL import Image

from lit.data.inat import Category
from lit.data.places import Place
from lit.errors import UsageError
from lit.field.batch import predict_files
from lit.field.engines import Predictor, load_predictor
from lit.field.exif import PlaceUsed, exif_place, given_place, merge, place_finder
from lit.field.images import BadImage, Skipped, open_image
from lit.field.onnx_predict import is_export
from lit.field.scoring import Prediction, Scorer
from lit.field.subset import parse_subset

ImageInput = str | Path | Image.Image | np.ndarray
"""A path, an opened PIL image, or a uint8 array (H x W x 3 RGB, or H x W gray)."""
PlaceInput: TypeAlias = "Place | tuple[float, float] | tuple[float, float, str | dt.date | None] | None"
"""Where and when one photo was taken: a Place, (lat, lon) or (lat, lon, date); None: unknown."""


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


def as_place(value: Any, index: int | None = None) -> PlaceUsed | None:
    """A place given to `predict` (source "given"); UsageError naming the value when it is not one."""
    what = "places" if index is None else f"places[{index}]"
    try:
        if value is None:
            return None
        if isinstance(value, Place):
            def known(v: float) -> float | None:
                return None if math.isnan(v) else v

            given_place(known(value.lat), known(value.lon), None, "given", lat_name="lat", lon_name="lon")  # checks them
            dated = not math.isnan(value.day)
            if dated and not 1 <= value.day <= 366:
                raise UsageError("day", f"{value.day!r} is not a day of the year (1-366)")
            return PlaceUsed(value, "given", None, "given" if dated else None) if value.located or dated else None
        if isinstance(value, (tuple, list)) and len(value) in (2, 3):
            date = value[2] if len(value) == 3 else None
            if isinstance(date, (dt.date, dt.datetime)):
                date = date.isoformat()
            return given_place(value[0], value[1], date, "given", lat_name="lat", lon_name="lon", date_name="date")
    except UsageError as err:
        raise UsageError(what, str(err)) from err
    raise UsageError(what, f"{value!r}: give a lit.data.places.Place, (lat, lon) or (lat, lon, 'YYYY-MM-DD')")


def _one_place(places: Any) -> bool:
    return isinstance(places, Place) or (isinstance(places, (tuple, list)) and len(places) in (2, 3)
                                         and not isinstance(places[0], (Place, tuple, list)) and places[0] is not None)


def expand_places(places: Any, count: int) -> list[PlaceUsed | None] | None:
    """One place per image from one for all or one per image (None: none given)."""
    if places is None:
        return None
    if _one_place(places) or isinstance(places, (str, bytes)) or not isinstance(places, Iterable):
        return [as_place(places)] * count
    given = list(places)
    if len(given) != count:
        raise UsageError("places", f"{len(given)} places for {count} images: give one for all or one per image")
    return [as_place(p, i) for i, p in enumerate(given)]


def exif_of(item: ImageInput) -> PlaceUsed | None:
    """The place in a path's or PIL image's EXIF (an array has none)."""
    if isinstance(item, (str, Path)):
        return exif_place(Path(item).expanduser())
    return exif_place(item) if isinstance(item, Image.Image) else None


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
                         k=top, rank=rank, min_confidence=min_confidence, prior=self.predictor.log_prior,
                         prior_weight=self.predictor.prior_weight)

    def predict(self, images: ImageInput | Iterable[ImageInput], *, top: int = 5, rank: str = "species",
                subset: str | Sequence[str] | None = None, min_confidence: float = 0.0, batch_size: int = 32,
                places: PlaceInput | Sequence[PlaceInput] = None, exif: bool = True) -> list[Prediction]:
        """One Prediction per image, in order; an unreadable file raises BadImage naming it.

        `places`: one place for all images or one per image, over what EXIF says (`exif`).
        """
        items = [images] if isinstance(images, (str, Path, Image.Image, np.ndarray)) else list(images)
        scorer = self.scorer(top=top, rank=rank, subset=subset, min_confidence=min_confidence)
        return self.score_images(items, scorer, batch_size, places=expand_places(places, len(items)), exif=exif)

    def score_images(self, items: Sequence[ImageInput], scorer: Scorer, batch_size: int = 32, *,
                     places: Sequence[PlaceUsed | None] | None = None, exif: bool = True) -> list[Prediction]:
        """Predictions of images in memory or on disk with a prepared Scorer, `batch_size` at a time; `places` (one
        per item) over each item's EXIF."""
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            opened = [as_image(item, start + i) for i, item in enumerate(chunk)]
            where = [merge(places[start + i] if places is not None else None, exif_of(item) if exif else None)
                     for i, item in enumerate(chunk)]
            logits = self.predictor.logits_of([im for im, _ in opened])
            out += scorer.score([name for _, name in opened], logits, where)
        return out

    def predict_files(self, paths: Sequence[Path], scorer: Scorer, *, place: PlaceUsed | None = None, exif: bool = True,
                      **kwargs: Any) -> tuple[list[Prediction], list[Skipped]]:
        """Many files from disk with the engine's own loaders (workers, batches): predictions and the files skipped
        (lit.field.batch.predict_files; `lit predict`'s path). `place` (the flags) wins over each file's EXIF."""
        return predict_files(self.predictor, paths, scorer, where=place_finder(place, exif), **kwargs)


__all__ = ["Classifier", "ImageInput", "PlaceInput", "as_image", "as_place", "exif_of", "expand_places"]
