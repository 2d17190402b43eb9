"""Read and validate iNat2021 annotation files into typed, frozen records.

A dataset root holds `train.json`, `train_mini.json`, `val.json` and `public_test.json`
(no annotations) plus the image folders their `file_name`s name. Every problem a user
must fix raises `DatasetError` naming the file, the record (index and id) and the field.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from lit.data.places import NOWHERE, Place, record_place
from lit.errors import DataError

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
SPLITS = ("train", "train_mini", "val", "public_test")
# Official category keys, in the order of the official files. `class` is `class_` on Category.
CATEGORY_KEYS = (
    "id", "name", "common_name", "supercategory", "kingdom", "phylum", "class", "order",
    "family", "genus", "specific_epithet", "image_dir_name",
)
# Keys a category must have with a non-empty value; `common_name` falls back to `name`
# (iNat repeats the binomial when there is no English name) and `image_dir_name` to "".
REQUIRED_CATEGORY_KEYS = (
    "id", "name", "supercategory", "kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet",
)
_MISSING_TEXT = {"", "nan", "none", "null"}


class DatasetError(DataError, ValueError):
    """A dataset problem a user must fix: names the file, the record, the field and what is wrong."""

    def __init__(self, source: str | Path, message: str, record: str = "", field: str = "") -> None:
        self.source, self.record, self.field = str(source), record, field
        where = ": ".join(p for p in (str(source), record, f"field {field!r}" if field else "") if p)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Category:
    """One species with its iNat metadata; missing optional text is ""."""

    id: int
    name: str
    common_name: str
    supercategory: str
    kingdom: str
    phylum: str
    class_: str
    order: str
    family: str
    genus: str
    specific_epithet: str
    image_dir_name: str = ""

    def taxon(self, rank: str) -> str:
        """The taxon at `rank` (one of RANKS); `species` is the binomial `name`."""
        if rank == "species":
            return self.name
        if rank not in RANKS:
            raise KeyError(f"unknown rank {rank!r}; choose from {', '.join(RANKS)}")
        return getattr(self, "class_" if rank == "class" else rank)

    def taxonomy(self) -> dict[str, str]:
        """Names and every rank: name, common_name, supercategory, kingdom ... species."""
        return {"name": self.name, "common_name": self.common_name, "supercategory": self.supercategory,
                **{rank: self.taxon(rank) for rank in RANKS}}

    def to_json(self) -> dict[str, Any]:
        """The category with the official key names."""
        return {k: getattr(self, "class_" if k == "class" else k) for k in CATEGORY_KEYS}


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image: its id, path relative to the dataset root, label, size and where and when it was taken."""

    id: int
    file_name: str
    category_id: int
    width: int
    height: int
    place: Place = NOWHERE
    """Latitude, longitude, day of year (NaN where the record has none or they are unusable)."""


@dataclass(frozen=True)
class Split:
    """A validated annotation file: its categories and annotated images."""

    name: str
    root: Path
    categories: tuple[Category, ...]
    images: tuple[ImageRecord, ...]
    source_sha256: str
    annotation_file: Path = field(default=Path(), compare=False)
    unplaced: Mapping[str, int] = field(default_factory=dict, compare=False)
    """Images whose coordinates are unusable, counted by reason ("no coordinates", "latitude 95.0 is outside -90..90", ...)."""

    @cached_property
    def category_by_id(self) -> Mapping[int, Category]:
        """Categories keyed by id (`split.category_by_id[3308]`)."""
        return {c.id: c for c in self.categories}


def _clean_text(value: Any) -> str:
    """Normalized text of a metadata value; None, NaN and "nan"/"None" are missing ("")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = " ".join(str(value).split())
    return "" if text.lower() in _MISSING_TEXT else text


def _as_int(value: Any, source: str, record: str, key: str, from_text: bool = False) -> int:
    if from_text and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(source, f"expected an integer, got {value!r}", record, key)
    return value


def parse_category(raw: Any, source: str, index: int, from_text: bool = False) -> Category:
    """Validate one category mapping (official keys) into a Category."""
    if not isinstance(raw, Mapping):
        raise DatasetError(source, f"expected an object, got {type(raw).__name__}", f"categories[{index}]")
    record = f"categories[{index}] (id {raw.get('id', '?')})"
    for key in REQUIRED_CATEGORY_KEYS:
        if key not in raw:
            raise DatasetError(source, "missing; every category needs " + ", ".join(REQUIRED_CATEGORY_KEYS), record, key)
    cid = _as_int(raw["id"], source, record, "id", from_text)
    values: dict[str, str] = {}
    for key in CATEGORY_KEYS[1:]:
        value = raw.get(key)
        if value is not None and not isinstance(value, (str, float)):
            raise DatasetError(source, f"expected text, got {value!r}", record, key)
        values["class_" if key == "class" else key] = _clean_text(value)
        if key in REQUIRED_CATEGORY_KEYS and not values["class_" if key == "class" else key]:
            raise DatasetError(source, f"is empty ({value!r}); give the taxon's {key}", record, key)
    values["common_name"] = values["common_name"] or values["name"]
    return Category(id=cid, **values)


def _check_unique_ids(categories: Iterable[Category], source: str) -> None:
    seen: dict[int, int] = {}
    for i, c in enumerate(categories):
        if c.id in seen:
            raise DatasetError(source, f"duplicate id {c.id} (also categories[{seen[c.id]}])", f"categories[{i}] (id {c.id})", "id")
        seen[c.id] = i


def _read_json(path: Path) -> tuple[Any, str]:
    if not path.is_file():
        raise DatasetError(path, "file not found; a dataset root holds train.json, train_mini.json, val.json")
    data = path.read_bytes()
    try:
        return json.loads(data), hashlib.sha256(data).hexdigest()
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"malformed JSON: {err}; re-download or regenerate the file") from err


def load_categories_json(path: str | Path) -> list[Category]:
    """Categories of a split JSON (`categories` key) or of a bare JSON list (shard `categories.json`)."""
    path = Path(path)
    data, _ = _read_json(path)
    raw = data.get("categories") if isinstance(data, dict) else data
    if not isinstance(raw, list):
        raise DatasetError(path, "expected a list of categories or an object with a 'categories' list", "", "categories")
    categories = [parse_category(r, str(path), i) for i, r in enumerate(raw)]
    _check_unique_ids(categories, str(path))
    return categories


def load_categories_csv(path: str | Path) -> list[Category]:
    """Categories of a CSV with the official columns (a leading index and a `label` column are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    categories = [parse_category(r, str(path), i, from_text=True) for i, r in enumerate(rows)]
    _check_unique_ids(categories, str(path))
    return categories


def _record_label(raw: Any, section: str, i: int, source: str, keys: tuple[str, ...]) -> str:
    """How errors name `{section}[i]`, once it is an object holding `keys`; otherwise the error naming what is wrong."""
    if not isinstance(raw, dict):
        raise DatasetError(source, f"expected an object, got {type(raw).__name__}", f"{section}[{i}]")
    record = f"{section}[{i}] (id {raw.get('id', '?')})"
    for key in keys:
        if key not in raw:
            raise DatasetError(source, f"missing; every {section[:-1]} needs {' and '.join(keys)}", record, key)
    return record


def _check_image(raw: Any, i: int, source: str, images: Mapping[int, Any]) -> tuple[int, str, int, int]:
    """Validate one image in detail: (id, file_name, width, height), or the error naming what is wrong."""
    record = _record_label(raw, "images", i, source, ("id", "file_name"))
    iid = _as_int(raw["id"], source, record, "id")
    name = raw["file_name"]
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(source, f"expected a relative image path, got {name!r}", record, "file_name")
    size = [raw.get(k) for k in ("width", "height")]
    for j, (k, v) in enumerate(zip(("width", "height"), size)):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            size[j] = 0  # unknown size: the image header has it
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise DatasetError(source, f"expected a pixel count, got {v!r}", record, k)
    if iid in images:
        raise DatasetError(source, f"duplicate image id {iid} (also images[{images[iid][0]}])", record, "id")
    return iid, name, int(size[0]), int(size[1])


def _parse_images(raw: Any, source: str, unplaced: dict[str, int]) -> dict[int, tuple[int, str, int, int, Place]]:
    """image id -> (index, file_name, width, height, place); images without a usable place are counted in `unplaced`."""
    if not isinstance(raw, list):
        raise DatasetError(source, f"expected a list, got {type(raw).__name__}", "", "images")
    images: dict[int, tuple[int, str, int, int, Place]] = {}
    for i, img in enumerate(raw):
        try:  # the common case, checked fast; anything unusual gets the detailed check
            iid, name, w, h = img["id"], img["file_name"], img.get("width"), img.get("height")
            ok = (type(iid) is int and type(name) is str and bool(name.strip()) and type(w) is int and type(h) is int
                  and w >= 0 and h >= 0 and iid not in images)
        except (TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            iid, name, w, h = _check_image(img, i, source, images)
        place, problem = record_place(img)
        if problem:
            reason = problem if problem in ("no coordinates", "not a record") else "unusable coordinates"
            unplaced[reason] = unplaced.get(reason, 0) + 1
        images[iid] = (i, name, w, h, place)
    return images


def _annotation_error(ann: Any, i: int, source: str, images: Mapping[int, Any], category_ids: set[int],
                      labels: Mapping[int, int]) -> DatasetError:
    """The detailed error of an annotation that failed the fast check (raised here when it is not even a record)."""
    record = _record_label(ann, "annotations", i, source, ("image_id", "category_id"))
    iid = _as_int(ann["image_id"], source, record, "image_id")
    cid = _as_int(ann["category_id"], source, record, "category_id")
    if iid not in images:
        return DatasetError(source, f"image id {iid} is not in 'images'", record, "image_id")
    if cid not in category_ids:
        return DatasetError(source, f"category id {cid} is not in 'categories'", record, "category_id")
    return DatasetError(source, f"image {iid} has a second annotation (also {labels.get(iid)}); keep one label per image",
                        record, "image_id")


def _parse_annotations(raw: Any, source: str, images: Mapping[int, Any], category_ids: set[int]) -> dict[int, int]:
    """image id -> category id, checking references both ways."""
    if not isinstance(raw, list):
        raise DatasetError(source, f"expected a list, got {type(raw).__name__}", "", "annotations")
    labels: dict[int, int] = {}
    for i, ann in enumerate(raw):
        try:
            iid, cid = ann["image_id"], ann["category_id"]
            ok = type(iid) is int and type(cid) is int and iid in images and cid in category_ids and iid not in labels
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise _annotation_error(ann, i, source, images, category_ids, labels)
        labels[iid] = cid
    if len(labels) < len(images):
        iid, (i, *_rest) = next((k, v) for k, v in images.items() if k not in labels)
        raise DatasetError(source, "has no annotation; add one or remove the image", f"images[{i}] (id {iid})", "id")
    return labels


def load_split(root: str | Path, split: str) -> Split:
    """Load and fully validate `ROOT/{split}.json` (an annotated split: train, train_mini or val)."""
    root = Path(root)
    path = root / f"{split}.json"
    source = str(path)
    data, sha = _read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, f"the top level must be an object, got {type(data).__name__}")
    for key in ("images", "categories", "annotations"):
        if key not in data:
            hint = " (public_test has no labels: it cannot be captioned or sharded)" if key == "annotations" else ""
            raise DatasetError(path, f"missing top-level key{hint}", "", key)
    if not isinstance(data["categories"], list):
        raise DatasetError(path, "expected a list", "", "categories")
    categories = tuple(parse_category(r, source, i) for i, r in enumerate(data["categories"]))
    _check_unique_ids(categories, source)
    unplaced: dict[str, int] = {}
    images = _parse_images(data["images"], source, unplaced)
    labels = _parse_annotations(data["annotations"], source, images, {c.id for c in categories})
    records = tuple(
        ImageRecord(id=iid, file_name=name, category_id=labels[iid], width=w, height=h, place=place)
        for iid, (_, name, w, h, place) in images.items()
    )
    return Split(name=split, root=root, categories=categories, images=records, source_sha256=sha, annotation_file=path,
                 unplaced=unplaced)


__all__ = [
    "CATEGORY_KEYS", "RANKS", "SPLITS", "Category", "DatasetError", "ImageRecord", "Split",
    "load_categories_csv", "load_categories_json", "load_split", "parse_category",
]
