"""The embedded toy dataset: 32 real iNat2021 species in the exact official layout.

Taxonomy, common names, ids and folder names are the real ones. Images are drawn
procedurally (lit.data.drawn): each class has its own shape, texture and palette, and each
image varies position, scale, rotation, colors, background and noise, so a frozen ImageNet
model can tell the classes apart and zero-shot accuracy means something. Each image's place
and date come from its species' real range (lit.data.toy_ranges.TOY_RANGES). Output is
byte-identical for a given seed. `hard=True` writes the 96 look-alike species of
lit.data.toy_hard instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lit.data.drawn import SHAPES, TEXTURES, ClassStyle, draw_image, jpeg_bytes, write_drawn_inat
from lit.data.inat import Category
from lit.data.toy_hard import GENERA, SPECIES_OF_GENUS, hard_categories, hard_range, hard_style
from lit.data.toy_ranges import TOY_RANGES, Range

# (iNat2021 id, common name, supercategory, "kingdom phylum class order family genus epithet").
# Serpula columbiana has no English name, so iNat repeats the binomial as its common name.
SPECIES: tuple[tuple[int, str, str, str], ...] = (
    (2, "Serpula columbiana", "Animalia", "Animalia Annelida Polychaeta Sabellida Serpulidae Serpula columbiana"),
    (16, "Yellow Garden Spider", "Arachnids", "Animalia Arthropoda Arachnida Araneae Araneidae Argiope aurantia"),
    (310, "Seven-spotted Ladybird Beetle", "Insects", "Animalia Arthropoda Insecta Coleoptera Coccinellidae Coccinella septempunctata"),
    (679, "Western Honey Bee", "Insects", "Animalia Arthropoda Insecta Hymenoptera Apidae Apis mellifera"),
    (1832, "Monarch Butterfly", "Insects", "Animalia Arthropoda Insecta Lepidoptera Nymphalidae Danaus plexippus"),
    (2087, "Pine White", "Insects", "Animalia Arthropoda Insecta Lepidoptera Pieridae Neophasia menapia"),
    (2159, "Imperial Moth", "Insects", "Animalia Arthropoda Insecta Lepidoptera Saturniidae Eacles imperialis"),
    (2738, "Common Blue Crab", "Animalia", "Animalia Arthropoda Malacostraca Decapoda Portunidae Callinectes sapidus"),
    (2804, "Bluegill", "Ray-finned Fishes", "Animalia Chordata Actinopterygii Perciformes Centrarchidae Lepomis macrochirus"),
    (2900, "Rainbow Trout", "Ray-finned Fishes", "Animalia Chordata Actinopterygii Salmoniformes Salmonidae Oncorhynchus mykiss"),
    (3027, "American Bullfrog", "Amphibians", "Animalia Chordata Amphibia Anura Ranidae Lithobates catesbeianus"),
    (3062, "Spotted Salamander", "Amphibians", "Animalia Chordata Amphibia Caudata Ambystomatidae Ambystoma maculatum"),
    (3308, "Buff-tailed Coronet", "Birds", "Animalia Chordata Aves Caprimulgiformes Trochilidae Boissonneaua flavescens"),
    (3709, "Northern Cardinal", "Birds", "Animalia Chordata Aves Passeriformes Cardinalidae Cardinalis cardinalis"),
    (3773, "Black-billed Magpie", "Birds", "Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia"),
    (4359, "Great Blue Heron", "Birds", "Animalia Chordata Aves Pelecaniformes Ardeidae Ardea herodias"),
    (4677, "Red Fox", "Mammals", "Animalia Chordata Mammalia Carnivora Canidae Vulpes vulpes"),
    (4719, "Common Raccoon", "Mammals", "Animalia Chordata Mammalia Carnivora Procyonidae Procyon lotor"),
    (4987, "Green Anole", "Reptiles", "Animalia Chordata Reptilia Squamata Dactyloidae Anolis carolinensis"),
    (5135, "Snapping Turtle", "Reptiles", "Animalia Chordata Reptilia Testudines Chelydridae Chelydra serpentina"),
    (5196, "Moon Jellyfish", "Animalia", "Animalia Cnidaria Scyphozoa Semaeostomeae Ulmaridae Aurelia aurita"),
    (5202, "Ochre Sea Star", "Animalia", "Animalia Echinodermata Asteroidea Forcipulatida Asteriidae Pisaster ochraceus"),
    (5213, "Pacific Purple Sea Urchin", "Animalia", "Animalia Echinodermata Echinoidea Camarodonta Strongylocentrotidae Strongylocentrotus purpuratus"),
    (5348, "Brown-lipped Snail", "Mollusks", "Animalia Mollusca Gastropoda Stylommatophora Helicidae Cepaea nemoralis"),
    (5349, "Garden Snail", "Mollusks", "Animalia Mollusca Gastropoda Stylommatophora Helicidae Cornu aspersum"),
    (5407, "Oakmoss", "Fungi", "Fungi Ascomycota Lecanoromycetes Lecanorales Parmeliaceae Evernia prunastri"),
    (5494, "Fly Agaric", "Fungi", "Fungi Basidiomycota Agaricomycetes Agaricales Amanitaceae Amanita muscaria"),
    (5695, "turkey-tail", "Fungi", "Fungi Basidiomycota Agaricomycetes Polyporales Polyporaceae Trametes versicolor"),
    (6824, "sunflower", "Plants", "Plantae Tracheophyta Magnoliopsida Asterales Asteraceae Helianthus annuus"),
    (7039, "common dandelion", "Plants", "Plantae Tracheophyta Magnoliopsida Asterales Asteraceae Taraxacum officinale"),
    (7399, "Texas prickly-pear", "Plants", "Plantae Tracheophyta Magnoliopsida Caryophyllales Cactaceae Opuntia engelmannii"),
    (8168, "white oak", "Plants", "Plantae Tracheophyta Magnoliopsida Fagales Fagaceae Quercus alba"),
)


def toy_categories() -> list[Category]:
    """The toy species as Categories, in id order."""
    out = []
    for cid, common, supercategory, lineage in SPECIES:
        kingdom, phylum, class_, order, family, genus, epithet = lineage.split()
        out.append(Category(
            id=cid, name=f"{genus} {epithet}", common_name=common, supercategory=supercategory, kingdom=kingdom,
            phylum=phylum, class_=class_, order=order, family=family, genus=genus, specific_epithet=epithet,
            image_dir_name=f"{cid:05d}_{lineage.replace(' ', '_')}",
        ))
    return out


def toy_range(index: int) -> Range:
    """Where and when the species at `index` of SPECIES (and of toy_categories) is seen."""
    return TOY_RANGES[SPECIES[index][0]]


def write_toy_inat(
    out: str | Path,
    seed: int = 0,
    train_per_class: int = 40,
    val_per_class: int = 10,
    image_size: int | tuple[int, int] = 128,
    test_per_class: int = 2,
    quality: int = 90,
    on_image: Callable[[], None] | None = None,
    hard: bool = False,
) -> Path:
    """Write train/train_mini/val/public_test JSON and their image folders under `out`; returns `out`.

    `image_size` is a side or (width, height). train_mini holds the first quarter of each
    class's train images (same ids, own folder, as the official one). `on_image` is called
    after each image (progress). `hard`: the 96 look-alike species of lit.data.toy_hard.
    """
    what = "96 look-alike species (8 families x 3 genera x 4)" if hard else "32 real iNat2021 species"
    return write_drawn_inat(out, hard_categories() if hard else toy_categories(), hard_style if hard else ClassStyle.of,
                            ("toy-hard" if hard else "toy", f"lit toy-inat: {what}, drawn images"), seed=seed,
                            train_per_class=train_per_class, val_per_class=val_per_class, image_size=image_size,
                            test_per_class=test_per_class, quality=quality, on_image=on_image,
                            range_of=hard_range if hard else toy_range)


def toy_image_count(train_per_class: int = 40, val_per_class: int = 10, test_per_class: int = 2, hard: bool = False) -> int:
    """Images drawn by write_toy_inat with these counts (train_mini reuses train images)."""
    classes = len(GENERA) * len(SPECIES_OF_GENUS) if hard else len(SPECIES)
    return classes * (train_per_class + val_per_class + test_per_class)


__all__ = ["SHAPES", "SPECIES", "TEXTURES", "ClassStyle", "draw_image", "jpeg_bytes", "toy_categories",
           "toy_image_count", "toy_range", "write_toy_inat"]
