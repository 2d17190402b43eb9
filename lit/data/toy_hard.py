"""The harder toy set (`lit toy-inat --hard`): 96 species in 8 families x 3 genera x 4 species that look alike.

As in iNat, the hard part is inside a genus: a family has its own shape, a genus its texture,
background and a narrow band of hues, and the four species of a genus differ only by a small
hue step (0.045, against a per-image jitter of 0.02) and their second color. Names are
procedural but shaped like real ones ("Spotted Velarix", *Velarix maculata*), and the lineage
is complete, so captions, per-rank metrics and `--rank genus` all mean something.

Ranges (`hard_range`) are procedural too: each genus has a home area somewhere on Earth, and its
four species live in boxes shifted step by step across it, each overlapping its neighbours by
about half and the genus' first and last species hardly at all. A location prior narrows a
genus down to one or two species there, not to one. Insects, plants and fungi have seasons
(shifted a little per species, by half a year south of the equator); birds are seen all year.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from lit.data.drawn import SHAPES, TEXTURES, ClassStyle
from lit.data.inat import Category
from lit.data.toy_ranges import Range, Region, Season

# (supercategory, kingdom, phylum, class, order, family) of the 8 families: 4 supercategories x 2.
FAMILIES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("Birds", "Animalia", "Chordata", "Aves", "Passeriformes", "Velaridae"),
    ("Birds", "Animalia", "Chordata", "Aves", "Piciformes", "Corvinidae"),
    ("Insects", "Animalia", "Arthropoda", "Insecta", "Coleoptera", "Lampyrinidae"),
    ("Insects", "Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Papilonidae"),
    ("Plants", "Plantae", "Tracheophyta", "Magnoliopsida", "Asterales", "Solanthaceae"),
    ("Plants", "Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rubinaceae"),
    ("Fungi", "Fungi", "Basidiomycota", "Agaricomycetes", "Agaricales", "Mycenidae"),
    ("Fungi", "Fungi", "Ascomycota", "Pezizomycetes", "Pezizales", "Morchellidae"),
)
GENERA: tuple[tuple[str, str, str], ...] = (  # three per family, in family order: (genus, its English stem)
    ("Velarix", "Velarix", "warbler"), ("Cantoria", "Cantoria", "songbird"), ("Pennula", "Pennula", "finch"),
    ("Corvina", "Corvina", "woodpecker"), ("Picoides", "Picoides", "flicker"), ("Rostrix", "Rostrix", "barbet"),
    ("Lampyra", "Lampyra", "firefly"), ("Scarabix", "Scarabix", "beetle"), ("Elatera", "Elatera", "click beetle"),
    ("Papilia", "Papilia", "swallowtail"), ("Pierella", "Pierella", "white"), ("Lycaena", "Lycaena", "copper"),
    ("Solanthus", "Solanthus", "nightshade"), ("Asterina", "Asterina", "daisy"), ("Helianthella", "Helianthella", "sunflower"),
    ("Rubina", "Rubina", "bramble"), ("Rosetta", "Rosetta", "rose"), ("Prunella", "Prunella", "cherry"),
    ("Mycena", "Mycena", "bonnet"), ("Agarica", "Agarica", "mushroom"), ("Coprinella", "Coprinella", "inkcap"),
    ("Morchella", "Morchella", "morel"), ("Peziza", "Peziza", "cup fungus"), ("Helvella", "Helvella", "saddle"),
)
SPECIES_OF_GENUS: tuple[tuple[str, str], ...] = (("maculata", "Spotted"), ("rubra", "Red"), ("pallida", "Pale"), ("obscura", "Dusky"))
HUE_STEP = 0.045
"""Hue between two species of a genus (draw_image jitters each image's hue by up to 0.02)."""
FIRST_ID = 20000
"""Ids of the hard species start here: they never collide with the real iNat2021 ids of the default toy set."""


def hard_categories() -> list[Category]:
    """The 96 hard species, in id order (family, genus, species)."""
    out = []
    for g, (genus, _, stem) in enumerate(GENERA):
        supercategory, kingdom, phylum, class_, order, family = FAMILIES[g // 3]
        for s, (epithet, adjective) in enumerate(SPECIES_OF_GENUS):
            cid = FIRST_ID + 4 * g + s
            lineage = f"{kingdom} {phylum} {class_} {order} {family} {genus} {epithet}"
            out.append(Category(
                id=cid, name=f"{genus} {epithet}", common_name=f"{adjective} {stem.title() if ' ' not in stem else stem.capitalize()}",
                supercategory=supercategory, kingdom=kingdom, phylum=phylum, class_=class_, order=order, family=family,
                genus=genus, specific_epithet=epithet, image_dir_name=f"{cid:05d}_{lineage.replace(' ', '_')}",
            ))
    return out


def hard_style(index: int) -> ClassStyle:
    """Family → shape; genus → texture, background and hue band; species → a small hue step and its second color."""
    genus, species = divmod(index, len(SPECIES_OF_GENUS))
    family = genus // 3
    base = (genus * 0.6180339887) % 1.0
    hue = (base + HUE_STEP * species) % 1.0
    return ClassStyle(shape=SHAPES[family % len(SHAPES)], texture=TEXTURES[genus % len(TEXTURES)], hue=hue,
                      hue2=(base + 0.4 + 0.03 * species) % 1.0, bg_hue=(base + 0.55) % 1.0)


BOX = (16.0, 20.0)
"""Latitude and longitude sides of a hard species' box, in degrees."""
RANGE_STEP = 0.4
"""Shift between two neighbouring species of a genus, as a fraction of the box's sides."""
_SEASONS = {"Insects": (180.0, 12.0, 30.0), "Plants": (130.0, 10.0, 40.0), "Fungi": (270.0, 10.0, 25.0)}
"""Supercategory -> (peak day of a genus' first species, shift per species, width in days)."""


@functools.cache
def _hard_ranges() -> tuple[Range, ...]:
    rng = np.random.default_rng([FIRST_ID, 22])
    out = []
    for g in range(len(GENERA)):
        home_lat, home_lon, angle = rng.uniform(-35, 55), rng.uniform(-150, 150), rng.uniform(0, 2 * math.pi)
        step_lat, step_lon = RANGE_STEP * BOX[0] * math.cos(angle), RANGE_STEP * BOX[1] * math.sin(angle)
        season = _SEASONS.get(FAMILIES[g // 3][0])
        for s in range(len(SPECIES_OF_GENUS)):
            lat, lon = home_lat + (s - 1.5) * step_lat, home_lon + (s - 1.5) * step_lon
            box = Region(lat - BOX[0] / 2, lat + BOX[0] / 2, lon - BOX[1] / 2, lon + BOX[1] / 2)
            when = None if season is None else Season(season[0] + season[1] * s + (182 if home_lat < 0 else 0), season[2])
            out.append(Range((box,), when))
    return tuple(out)


def hard_range(index: int) -> Range:
    """Where and when the hard species at `index` (of hard_categories) is seen: a box shifted across its genus' home."""
    return _hard_ranges()[index]


__all__ = ["BOX", "FAMILIES", "GENERA", "HUE_STEP", "RANGE_STEP", "hard_categories", "hard_range", "hard_style"]
