"""Scoring in numpy: the same sums up the tree as the torch path, candidate subsets, and answers that back off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lit.configlib import ConfigError
from lit.data.inat import RANKS
from lit.data.taxonomy import Taxonomy, probabilities, rank_probabilities, top_k
from lit.data.toy import toy_categories
from lit.field.scoring import Scorer, back_off
from lit.field.subset import parse_subset

CATS = toy_categories()
TAX = Taxonomy.of(CATS)


def index(name: str) -> int:
    return next(i for i, c in enumerate(CATS) if c.name == name)


def test_scoring_sums_up_the_tree_as_the_lineages_say() -> None:
    """Each taxon's probability is the sum of the classes whose lineage starts with its own; top-k ranks those sums."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(len(CATS), 0.3), size=4)
    for depth, rank in enumerate(RANKS):
        ours = rank_probabilities(probs, TAX, rank)
        lineage = [tuple(c.taxon(r) for r in RANKS[:depth + 1]) for c in CATS]
        for t, taxon in enumerate(TAX.lineages[depth]):
            members = [i for i, line in enumerate(lineage) if line == taxon]
            np.testing.assert_allclose(ours[:, t], probs[:, members].sum(1), atol=1e-12)
        np.testing.assert_allclose(ours.sum(1), 1.0)
        mine = top_k(probs[0], CATS, TAX, 5, rank)
        expected = sorted(range(len(TAX.lineages[depth])), key=lambda t: -ours[0, t])[:5]
        assert [g.lineage for g in mine] == [TAX.lineages[depth][t] for t in expected]
        for g in mine:
            members = [i for i, line in enumerate(lineage) if line == g.lineage]
            assert g.species.id == CATS[max(members, key=lambda i: probs[0, i])].id


def test_back_off_answers_the_deepest_confident_rank() -> None:
    probs = np.full(len(CATS), 0.0)
    probs[index("Helianthus annuus")] = 0.40  # sunflower
    probs[index("Taraxacum officinale")] = 0.35  # dandelion: same family Asteraceae, another genus
    probs[index("Quercus alba")] = 0.15  # oak: same class Magnoliopsida
    probs[index("Apis mellifera")] = 0.10
    cases = {0.3: ("species", "Helianthus annuus", 0.40), 0.5: ("family", "Asteraceae", 0.75),
             0.75: ("family", "Asteraceae", 0.75), 0.8: ("class", "Magnoliopsida", 0.90), 0.95: (None, "unknown", 0.0)}
    for p, (rank, taxon, prob) in cases.items():
        answer = back_off(probs, CATS, TAX, p)
        assert (answer.rank, answer.taxon) == (rank, taxon), p
        assert answer.probability == pytest.approx(prob)
    species = back_off(probs, CATS, TAX, 0.3)
    assert species.common_name == "sunflower" and species.lineage[-1] == "Helianthus annuus" and len(species.lineage) == 7
    assert back_off(probs, CATS, TAX, 0.9).lineage == ("Plantae", "Tracheophyta", "Magnoliopsida")


def test_temperature_and_subset_shape_the_probabilities() -> None:
    logits = np.random.default_rng(1).normal(size=(3, len(CATS))) * 5
    hot, cool = probabilities(logits, 1.0), probabilities(logits, 4.0)
    assert (cool.max(1) < hot.max(1)).all() and np.allclose(cool.sum(1), 1.0)
    assert (hot.argmax(1) == cool.argmax(1)).all()  # a temperature never changes the ranking
    birds = parse_subset(["supercategory=Birds"], CATS)
    assert birds is not None and birds.sum() == 4
    restricted = probabilities(logits, 1.0, birds)
    assert np.allclose(restricted.sum(1), 1.0) and (restricted[:, ~birds] == 0).all()
    scorer = Scorer.of(CATS, allowed=birds, k=10)
    rows = scorer.score(["a", "b", "c"], logits)
    assert all(len(r.guesses) == 4 and all(g.species.supercategory == "Birds" for g in r.guesses) for r in rows)


def test_subsets_by_rank_several_and_csv(tmp_path: Path) -> None:
    def names(mask: np.ndarray | None) -> set[str]:
        assert mask is not None
        return {c.name for c, m in zip(CATS, mask) if m}

    assert parse_subset([], CATS) is None
    assert names(parse_subset(["family=Asteraceae"], CATS)) == {"Helianthus annuus", "Taraxacum officinale"}
    assert names(parse_subset(["family=helicidae,Asteraceae", "species=Quercus alba"], CATS)) == {
        "Cepaea nemoralis", "Cornu aspersum", "Helianthus annuus", "Taraxacum officinale", "Quercus alba"}
    regional = tmp_path / "region.csv"
    regional.write_text("scientific_name,note\nVulpes vulpes,fox\nProcyon lotor,\n")
    assert names(parse_subset([str(regional)], CATS)) == {"Vulpes vulpes", "Procyon lotor"}
    anyrank = tmp_path / "anyrank.csv"
    anyrank.write_text("rank,taxon\ngenus,Amanita\n,Polyporaceae\n")
    assert names(parse_subset([str(anyrank)], CATS)) == {"Amanita muscaria", "Trametes versicolor"}


@pytest.mark.parametrize(("spec", "expected"), [
    ("family=Felidae", "no class has family 'Felidae'"),
    ("family=Asteracea", "closest: Asteraceae"),
    ("genus=Vulpess", "closest: Vulpes"),
    ("famly=Asteraceae", "closest: family"),
    ("family=", "names no taxon"),
    ("Felidae", "neither RANK=NAME"),
])
def test_unknown_or_empty_subsets_name_the_value_and_the_closest(spec: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_subset([spec], CATS)


def test_a_csv_naming_an_unknown_taxon_says_where(tmp_path: Path) -> None:
    regional = tmp_path / "region.csv"
    regional.write_text("species\nVulpes vulpes\nVulpes lagopus\n")
    with pytest.raises(ConfigError, match=r"region.csv, line 3.*'Vulpes lagopus'.*closest: Vulpes vulpes"):
        parse_subset([str(regional)], CATS)
    empty = tmp_path / "empty.csv"
    empty.write_text("colour\nred\n")
    with pytest.raises(ConfigError, match="give a header with a rank"):
        parse_subset([str(empty)], CATS)
