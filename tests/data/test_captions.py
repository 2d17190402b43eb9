"""Caption recipes, the paper's Figure 1, `mixed` draws and the metadata column selection."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from lit.cli import main as lit_main
from lit.config import CaptionConfig
from lit.data.captions import (
    RECIPE_COLUMNS,
    CaptionMaker,
    caption,
    class_texts,
    score_columns,
    whitespace_tokens,
)
from lit.data.inat import Category, load_categories_csv
from lit.data.toy import toy_categories

FIGURE_1 = {
    3308: "A photo of the Buff-tailed Coronet Birds Boissonneaua flavescens",
    2738: "A photo of the Common Blue Crab Animalia Callinectes sapidus",
    2159: "A photo of the Imperial Moth Insects Eacles imperialis",
    5407: "A photo of the Oakmoss Fungi Evernia prunastri",
    5213: "A photo of the Pacific Purple Sea Urchin Animalia Strongylocentrotus purpuratus",
    2087: "A photo of the Pine White Insects Neophasia menapia",
}


@pytest.fixture(scope="module")
def toy() -> dict[int, Category]:
    return {c.id: c for c in toy_categories()}


def test_figure_1_from_the_toy_table(toy: dict[int, Category]) -> None:
    assert {cid: caption(toy[cid], "paper") for cid in FIGURE_1} == FIGURE_1


def test_figure_1_from_the_real_categories(categories_csv: Path) -> None:
    by_id = {c.id: c for c in load_categories_csv(categories_csv)}
    assert {cid: caption(by_id[cid], "paper") for cid in FIGURE_1} == FIGURE_1


def test_every_recipe(toy: dict[int, Category]) -> None:
    coronet = toy[3308]
    assert caption(coronet, "taxonomic") == (
        "A photo of the Animalia Chordata Aves Caprimulgiformes Trochilidae Boissonneaua flavescens")
    assert caption(coronet, "scientific") == "A photo of the Boissonneaua flavescens"
    assert caption(coronet, "common") == "A photo of the Buff-tailed Coronet"
    assert caption(coronet, "common", prefix="") == "Buff-tailed Coronet"
    with pytest.raises(ValueError, match="unknown caption recipe"):
        caption(coronet, "mixed")


def test_a_repeated_field_is_dropped(toy: dict[int, Category]) -> None:
    serpula = toy[2]
    assert serpula.common_name == serpula.name
    assert caption(serpula, "paper") == "A photo of the Serpula columbiana Animalia"
    assert caption(serpula, "common") == "A photo of the Serpula columbiana"


def test_white_space_and_missing_fields(toy: dict[int, Category]) -> None:
    messy = replace(toy[2087], common_name="  Pine \t White ", supercategory="")
    assert caption(messy, "paper") == "A photo of the Pine White Neophasia menapia"
    for bad in ("nan", "None", ""):
        text = caption(replace(toy[2087], supercategory=bad, family=bad), "paper") + caption(
            replace(toy[2087], supercategory=bad, family=bad), "taxonomic")
        assert "nan" not in text.split() and "None" not in text.split() and "  " not in text


def test_every_paper_caption_of_the_toy_is_unique(toy: dict[int, Category]) -> None:
    for recipe in RECIPE_COLUMNS:
        assert len({caption(c, recipe) for c in toy.values()}) == len(toy)


def test_real_scale_paper_captions_and_selection(categories_csv: Path) -> None:
    categories = load_categories_csv(categories_csv)
    assert len({caption(c, "paper") for c in categories}) == 10_000
    scores = score_columns(categories)
    assert scores[0].identifies_all and scores[0].total == 10_000
    paper = next(s for s in scores if s.columns == RECIPE_COLUMNS["paper"])
    assert paper.unique == 10_000
    common = next(s for s in scores if s.columns == ("common_name",))
    assert common.unique < 10_000  # English names alone collide (and 169 are missing)


def test_mixed_is_seeded_per_sample_key_not_by_global_state(toy: dict[int, Category]) -> None:
    cfg = CaptionConfig(recipe="mixed")
    maker = CaptionMaker(cfg, seed=0)
    keys = [f"{i:08d}" for i in range(400)]
    random.seed(1)
    first = [maker.recipe_for(k) for k in keys]
    random.seed(2)
    assert [CaptionMaker(cfg, seed=0).recipe_for(k) for k in keys] == first
    assert Counter(first).keys() == set(cfg.mixed_recipes)
    assert [CaptionMaker(cfg, seed=1).recipe_for(k) for k in keys] != first
    assert maker(toy[3308], keys[0]) == caption(toy[3308], first[0])
    only_two = CaptionMaker(CaptionConfig(recipe="mixed", mixed_recipes=("common", "scientific")), seed=0)
    assert {only_two.recipe_for(k) for k in keys} == {"common", "scientific"}
    fixed = CaptionMaker(CaptionConfig(recipe="taxonomic", prefix="a photo of"), seed=0)
    assert fixed(toy[2], "00000001") == "a photo of Animalia Annelida Polychaeta Sabellida Serpulidae Serpula columbiana"


def test_class_texts(toy: dict[int, Category]) -> None:
    assert class_texts(toy[3308], "paper") == [FIGURE_1[3308]]
    texts = class_texts(toy[2], "mixed")
    assert len(texts) == len(set(texts)) == 3  # common == scientific for a species with no English name


def test_score_columns_counts_unique_classes_and_tokens(toy: dict[int, Category]) -> None:
    twins = [replace(toy[5348], common_name="Garden Snail"), toy[5349]]  # two snails, one English name
    scores = {s.columns: s for s in score_columns(twins, max_columns=2)}
    assert scores[("common_name",)].unique == 0 and scores[("name",)].unique == 2
    assert scores[("common_name",)].mean_tokens == 4 + 2  # "A photo of the" + "Garden Snail"
    by_chars = {s.columns: s for s in score_columns(twins, tokenizer=list, max_columns=1, special_tokens=2)}
    assert by_chars[("name",)].max_tokens == len("A photo of the") + len("Cepaea nemoralis") + 2
    ranked = score_columns(list(toy.values()))
    assert ranked[0].identifies_all
    assert [s.unique for s in ranked] == sorted((s.unique for s in ranked), reverse=True)
    assert whitespace_tokens(" a  b ") == ["a", "b"]


def test_captions_cli_selects_with_the_default_tokenizer(toy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lit_main(["captions", str(toy_root), "--split", "val", "--select", "--n", "3", "--rows", "3"]) == 0
    assert lit_main(["captions", "--recipe", "mixed"]) == 2  # neither ROOT nor --categories-csv: a usage error
