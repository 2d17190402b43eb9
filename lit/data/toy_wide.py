"""A dataset at the paper's shape (`lit toy-inat --wide N`): N classes (10,000 by default) in the official layout.

The categories are the real iNat2021 table when a CSV of it is given (the columns of the
official `categories` list, as ../shared/data/inat2021-categories.csv holds them; the first N
rows), else a generated taxonomy of the same depth: 3 kingdoms, and below each rank a few
children (about 4 species a genus, 3 genera a family, 4 families an order, ...), with
Latin-looking names, English common names and one of iNat's 11 supercategories. Images are
drawn like the toy set's (lit.data.drawn), one style per class; at 10,000 classes they are not
meant to be told apart: this is a scale test of every stage (shards, embeddings, training, a
10,000-way classifier, calibration, export, prediction). Each class has a generated range
(`wide_range`, seeded by its id: one to three boxes, a season for about a third), so a location
prior can be trained at this scale too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from lit.configlib import ConfigError
from lit.data.drawn import ClassStyle, write_drawn_inat
from lit.data.inat import Category, load_categories_csv
from lit.data.toy_ranges import DAYS, Range, Region, Season

PAPER_CLASSES = 10_000
ANIMAL_GROUPS = ("Insects", "Birds", "Reptiles", "Mammals", "Ray-finned Fishes", "Amphibians", "Mollusks", "Arachnids", "Animalia")
"""iNat's supercategories of animals (with Plants and Fungi, its 11)."""
KINGDOMS = ("Animalia", "Plantae", "Fungi")
CHILDREN = {"phylum": 5, "class": 4, "order": 4, "family": 4, "genus": 3, "species": 4}
"""Children per taxon at each rank below the kingdom (the last ones get fewer when N runs out)."""
_ONSETS = ("b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "ph", "th", "tr", "pl", "cr", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia")
_ENDINGS = {"phylum": "phyta", "class": "opsida", "order": "ales", "family": "aceae", "genus": "us", "species": "is"}
_ADJECTIVES = ("Spotted", "Common", "Lesser", "Greater", "Pale", "Dusky", "Red", "Golden", "Striped", "Northern", "Southern",
               "Western", "Eastern", "Mountain", "Marsh", "Forest")
_NOUNS = {"Animalia": ("beetle", "moth", "warbler", "snail", "frog", "lizard", "spider", "fish"),
          "Plantae": ("aster", "sedge", "fern", "oak", "rush", "clover", "lily", "moss"),
          "Fungi": ("bonnet", "bracket", "cup", "lichen", "puffball", "bolete", "waxcap", "morel")}


def _name(rng: np.random.Generator, rank: str, used: set[str]) -> str:
    """A new Latin-looking name for a taxon at `rank` (capitalized; the species epithet lowercase)."""
    while True:
        stem = "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(int(rng.integers(2, 4))))
        name = stem + _ENDINGS[rank]
        name = name if rank == "species" else name.capitalize()
        if name not in used:
            used.add(name)
            return name


def generated_categories(classes: int = PAPER_CLASSES, seed: int = 0) -> list[Category]:
    """`classes` species in a generated 7-rank taxonomy (ids 0..classes-1, deterministic for a seed)."""
    rng = np.random.default_rng([seed, 7919])
    used: set[str] = set()
    out: list[Category] = []
    ranks = list(CHILDREN)
    lineages: list[list[str]] = [[k] for k in KINGDOMS]
    for rank in ranks[:-1]:  # phylum .. genus: every taxon gets its children
        lineages = [[*parent, _name(rng, rank, used)] for parent in lineages for _ in range(CHILDREN[rank])]
    used_genera = min(len(lineages), -(-classes // CHILDREN["species"]))
    per_genus = -(-classes // used_genera)
    picked = np.linspace(0, len(lineages) - 1, used_genera).round().astype(int)  # spread over every kingdom and phylum
    for g in picked:
        kingdom, phylum, class_, order, family, genus = lineages[g]
        epithets: set[str] = set()
        for _ in range(min(per_genus, classes - len(out))):
            epithet = _name(rng, "species", epithets)
            index = len(out)
            supercategory = ("Plants" if kingdom == "Plantae" else "Fungi" if kingdom == "Fungi"
                             else ANIMAL_GROUPS[_stable_hash(phylum, class_) % len(ANIMAL_GROUPS)])
            common = f"{_ADJECTIVES[index % len(_ADJECTIVES)]} {genus} {_NOUNS[kingdom][index % len(_NOUNS[kingdom])]}"
            out.append(Category(
                id=index, name=f"{genus} {epithet}", common_name=common, supercategory=supercategory, kingdom=kingdom,
                phylum=phylum, class_=class_, order=order, family=family, genus=genus, specific_epithet=epithet,
                image_dir_name=f"{index:05d}_{kingdom}_{phylum}_{class_}_{order}_{family}_{genus}_{epithet}",
            ))
    return out


def _stable_hash(*names: str) -> int:
    """A small stable hash of names (Python's hash() changes between processes)."""
    return sum((i + 1) * ord(ch) for name in names for i, ch in enumerate(name))


def wide_categories(classes: int = PAPER_CLASSES, categories_csv: str | Path | None = None, seed: int = 0) -> list[Category]:
    """The first `classes` rows of a real category table (CSV), else a generated taxonomy of that size."""
    if categories_csv is None:
        return generated_categories(classes, seed)
    real = load_categories_csv(Path(categories_csv))
    if classes > len(real):
        raise ConfigError(str(categories_csv), "classes", f"the table holds {len(real)} categories, fewer than the {classes} "
                                                          "asked for: ask for fewer, or leave out the table for a generated taxonomy")
    return real[:classes]


def wide_style(index: int) -> ClassStyle:
    """One style per class: shape and texture cycle, hues spread by the golden ratio (distinct, not separable at 10,000)."""
    return ClassStyle.of(index)


def wide_range(class_id: int) -> Range:
    """A generated range of the class with this id (the same for every seed): 1-3 weighted boxes, a season for about a third."""
    rng = np.random.default_rng([class_id, 22])
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        lat, lon = rng.uniform(-45, 62), rng.uniform(-170, 170)
        half_lat, half_lon = rng.uniform(2, 12), rng.uniform(3, 18)
        boxes.append(Region(max(-90.0, lat - half_lat), min(90.0, lat + half_lat), max(-180.0, lon - half_lon),
                            min(180.0, lon + half_lon), float(rng.uniform(0.5, 2.0))))
    season = Season(float(rng.uniform(1, DAYS)), float(rng.uniform(15, 60))) if rng.uniform() < 1 / 3 else None
    return Range(tuple(boxes), season)


def write_wide_inat(out: Path, *, classes: int = PAPER_CLASSES, train_per_class: int = 2, val_per_class: int = 1,
                    image_size: int = 32, seed: int = 0, categories_csv: str | Path | None = None,
                    on_image: Callable[[], None] | None = None) -> Path:
    """Write the dataset (train, train_mini, val; no public_test) under `out`; returns `out`."""
    categories = wide_categories(classes, categories_csv, seed)
    source = f"the real iNat2021 table ({categories_csv})" if categories_csv else "a generated taxonomy"
    ranges = [wide_range(c.id) for c in categories]
    return write_drawn_inat(out, categories, wide_style, ("toy-wide", f"lit toy-inat --wide: {classes} classes from {source}"),
                            seed=seed, train_per_class=train_per_class, val_per_class=val_per_class, image_size=image_size,
                            test_per_class=0, quality=85, on_image=on_image, range_of=ranges.__getitem__)


__all__ = ["PAPER_CLASSES", "generated_categories", "wide_categories", "wide_range", "wide_style", "write_wide_inat"]
