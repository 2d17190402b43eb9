"""The dataset at the paper's shape: 10,000 classes in the official layout, real or generated taxonomy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit.cli import main
from lit.data.inat import RANKS, load_categories_json, load_split
from lit.data.toy_wide import PAPER_CLASSES, generated_categories, write_wide_inat
from tests.data.conftest import CATEGORIES_CSV


def test_the_generated_taxonomy_has_the_paper_shape() -> None:
    cats = generated_categories()
    assert len(cats) == PAPER_CLASSES and [c.id for c in cats] == list(range(PAPER_CLASSES))
    assert len({c.name for c in cats}) == PAPER_CLASSES and len({c.image_dir_name for c in cats}) == PAPER_CLASSES
    per_rank = {rank: len({tuple(c.taxon(r) for r in RANKS[: i + 1]) for c in cats}) for i, rank in enumerate(RANKS)}
    assert per_rank["kingdom"] == 3 and per_rank["species"] == PAPER_CLASSES
    assert all(per_rank[a] < per_rank[b] for a, b in zip(RANKS, RANKS[1:]))  # every rank splits the one above
    assert per_rank["genus"] == 2500  # four species a genus: the near-ties a fine-grained classifier meets
    assert {c.kingdom for c in cats} == {"Animalia", "Plantae", "Fungi"} and len({c.supercategory for c in cats}) >= 8
    assert generated_categories(seed=0) == cats and generated_categories(seed=1) != cats
    few = generated_categories(12)
    assert len(few) == 12 and len({c.kingdom for c in few}) == 3  # spread over the tree, not one corner of it


def test_a_small_wide_set_loads_like_the_official_one(tmp_path: Path) -> None:
    root = write_wide_inat(tmp_path / "wide", classes=40, train_per_class=2, val_per_class=1, image_size=24)
    train, val = load_split(root, "train"), load_split(root, "val")
    assert len(train.images) == 80 and len(val.images) == 40
    assert {r.category_id for r in val.images} == set(range(40))
    assert all((root / r.file_name).is_file() for r in train.images)
    assert json.loads((root / "val.json").read_text())["info"]["version"] == "toy-wide"
    assert load_categories_json(root / "train.json") == generated_categories(40)


def test_the_real_table_through_the_command_line(tmp_path: Path) -> None:
    if not CATEGORIES_CSV.is_file():
        pytest.skip(f"{CATEGORIES_CSV} is not there (../shared/data)")
    out = tmp_path / "wide"
    assert main(["toy-inat", str(out), "--wide", "300", "--categories-csv", str(CATEGORIES_CSV), "--train-per-class", "1",
                 "--val-per-class", "1", "--image-size", "16"]) == 0
    cats = load_categories_json(out / "val.json")
    assert len(cats) == 300 and cats[0].name == "Lumbricus terrestris" and cats[0].id == 0
    assert main(["toy-inat", str(tmp_path / "bad"), "--wide", "20000", "--categories-csv", str(CATEGORIES_CSV)]) == 2
    assert not (tmp_path / "bad").exists()
