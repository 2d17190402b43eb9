"""Reading and validating iNat2021 annotation files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from lit.data.inat import (
    CATEGORY_KEYS,
    RANKS,
    Category,
    DatasetError,
    load_categories_csv,
    load_categories_json,
    load_split,
)
from tests.data.conftest import TRAIN_PER_CLASS, VAL_PER_CLASS


def _doc(root: Path, split: str = "train") -> dict[str, Any]:
    return json.loads((root / f"{split}.json").read_text())


def _write(tmp_path: Path, doc: Any, split: str = "train") -> Path:
    (tmp_path / f"{split}.json").write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return tmp_path


def test_load_split_reads_the_official_layout(toy_root: Path) -> None:
    split = load_split(toy_root, "train")
    assert split.name == "train" and split.root == toy_root
    assert len(split.categories) == 32
    assert len(split.images) == 32 * TRAIN_PER_CLASS
    assert split.source_sha256 == hashlib.sha256((toy_root / "train.json").read_bytes()).hexdigest()
    img = split.images[0]
    assert (toy_root / img.file_name).is_file() and img.width == img.height == 48
    assert img.file_name.startswith(f"train/{split.category_by_id[img.category_id].image_dir_name}/")
    assert len(load_split(toy_root, "val").images) == 32 * VAL_PER_CLASS
    assert len(load_split(toy_root, "train_mini").images) == 32 * max(1, TRAIN_PER_CLASS // 4)


def test_category_taxon_and_official_json(toy_root: Path) -> None:
    coronet = load_split(toy_root, "val").category_by_id[3308]
    assert [coronet.taxon(r) for r in RANKS] == [
        "Animalia", "Chordata", "Aves", "Caprimulgiformes", "Trochilidae", "Boissonneaua", "Boissonneaua flavescens"]
    as_json = coronet.to_json()
    assert tuple(as_json) == CATEGORY_KEYS and as_json["class"] == "Aves"
    with pytest.raises(KeyError, match="unknown rank"):
        coronet.taxon("tribe")


def test_load_categories_json_takes_a_split_file_or_a_bare_list(toy_root: Path, tmp_path: Path) -> None:
    from_split = load_categories_json(toy_root / "train.json")
    (tmp_path / "categories.json").write_text(json.dumps([c.to_json() for c in from_split]))
    assert load_categories_json(tmp_path / "categories.json") == from_split


def test_real_categories_csv(categories_csv: Path) -> None:
    categories = load_categories_csv(categories_csv)
    assert len(categories) == 10_000 and len({c.id for c in categories}) == 10_000
    by_id = {c.id: c for c in categories}
    assert by_id[3308].name == "Boissonneaua flavescens" and by_id[3308].supercategory == "Birds"
    assert by_id[2].common_name == by_id[2].name == "Serpula columbiana"
    assert len({c.supercategory for c in categories}) == 11


def test_malformed_json_names_the_file(tmp_path: Path) -> None:
    root = _write(tmp_path, '{"images": [')
    with pytest.raises(DatasetError, match=r"train\.json: malformed JSON") as err:
        load_split(root, "train")
    assert err.value.source == str(root / "train.json")


def test_missing_category_field_names_file_record_and_field(toy_root: Path, tmp_path: Path) -> None:
    doc = _doc(toy_root)
    del doc["categories"][3]["genus"]
    cid = doc["categories"][3]["id"]
    with pytest.raises(DatasetError) as err:
        load_split(_write(tmp_path, doc), "train")
    assert err.value.record == f"categories[3] (id {cid})" and err.value.field == "genus"
    assert str(tmp_path / "train.json") in str(err.value) and "'genus'" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "record", "field"),
    [
        (lambda d: d["categories"][1].update(name="  "), "categories[1]", "name"),
        (lambda d: d["categories"][2].update(id="x"), "categories[2]", "id"),
        (lambda d: d["images"][5].pop("file_name"), "images[5]", "file_name"),
        (lambda d: d["annotations"][7].update(category_id=999_999), "annotations[7]", "category_id"),
        (lambda d: d["annotations"][8].update(image_id=-1), "annotations[8]", "image_id"),
        (lambda d: d["annotations"].pop(0), "images[0]", "id"),
        (lambda d: d.pop("annotations"), "", "annotations"),
    ],
)
def test_invalid_records_are_named(toy_root: Path, tmp_path: Path, mutate: Any, record: str, field: str) -> None:
    doc = _doc(toy_root)
    mutate(doc)
    with pytest.raises(DatasetError) as err:
        load_split(_write(tmp_path, doc), "train")
    assert err.value.record.startswith(record) and err.value.field == field


def test_public_test_has_no_annotations(toy_root: Path) -> None:
    with pytest.raises(DatasetError, match="public_test has no labels"):
        load_split(toy_root, "public_test")


def test_null_nan_and_missing_optional_values(toy_root: Path, tmp_path: Path) -> None:
    doc = _doc(toy_root)
    doc["images"][0].update(latitude=float("nan"), longitude=None, location_uncertainty=float("nan"), width=None)
    doc["categories"][0]["common_name"] = None  # no English name: falls back to the binomial
    doc["categories"][1].pop("image_dir_name")
    doc["categories"][2]["common_name"] = "  Western \t Honey   Bee "
    root = _write(tmp_path, json.dumps(doc))  # json writes NaN as the official files do
    split = load_split(root, "train")
    first, second, third = split.categories[:3]
    assert first.common_name == first.name
    assert second.image_dir_name == ""
    assert third.common_name == "Western Honey Bee"
    assert split.images[0].width == 0


def test_duplicate_ids_are_errors(toy_root: Path, tmp_path: Path) -> None:
    doc = _doc(toy_root)
    doc["categories"][4]["id"] = doc["categories"][0]["id"]
    with pytest.raises(DatasetError, match="duplicate id") as err:
        load_split(_write(tmp_path, doc), "train")
    assert err.value.record.startswith("categories[4]")


def test_csv_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "cats.csv"
    header = ",id,name,common_name,supercategory,kingdom,phylum,class,order,family,genus,specific_epithet,image_dir_name"
    path.write_text(header + "\n0,seven,Pica hudsonia,Black-billed Magpie,Birds,Animalia,Chordata,Aves,Passeriformes,"
                    "Corvidae,Pica,hudsonia,x\n")
    with pytest.raises(DatasetError) as err:
        load_categories_csv(path)
    assert err.value.record == "categories[0] (id seven)" and err.value.field == "id"


def test_category_is_frozen() -> None:
    cat = Category(1, "Pica hudsonia", "Black-billed Magpie", "Birds", "Animalia", "Chordata", "Aves",
                   "Passeriformes", "Corvidae", "Pica", "hudsonia")
    with pytest.raises(AttributeError):
        cat.name = "x"  # type: ignore[misc]
