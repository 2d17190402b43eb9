"""Metric math on hand-built logits with known answers."""

from __future__ import annotations

import torch

from lit.data.inat import RANKS, Category
from lit.data.taxonomy import Taxonomy
from lit.eval.metrics import Counts, confused_pairs, count_batch, label_lookup, summarize, to_class_index


def cat(cid: int, kingdom: str, phylum: str, class_: str, order: str, family: str, genus: str, epithet: str,
        supercategory: str = "Birds") -> Category:
    return Category(id=cid, name=f"{genus} {epithet}", common_name=f"common {cid}", supercategory=supercategory,
                    kingdom=kingdom, phylum=phylum, class_=class_, order=order, family=family, genus=genus,
                    specific_epithet=epithet)


# Six classes. 0 and 1 share a genus; 2 is in their family; 3 in their order; 4 is another phylum's
# animal; 5 is a plant whose genus *Prunella* has the same name as class 0's bird genus (a homonym).
CATS = [
    cat(10, "Animalia", "Chordata", "Aves", "Passeriformes", "Prunellidae", "Prunella", "modularis"),
    cat(11, "Animalia", "Chordata", "Aves", "Passeriformes", "Prunellidae", "Prunella", "collaris"),
    cat(12, "Animalia", "Chordata", "Aves", "Passeriformes", "Prunellidae", "Otherella", "alba"),
    cat(13, "Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia"),
    cat(14, "Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Nymphalidae", "Danaus", "plexippus", "Insects"),
    cat(15, "Plantae", "Tracheophyta", "Magnoliopsida", "Lamiales", "Lamiaceae", "Prunella", "vulgaris", "Plants"),
]
TAX = Taxonomy.of(CATS)


def logits_ranking(*orders: list[int]) -> torch.Tensor:
    """Logits whose descending order over the 6 classes is each given list."""
    out = torch.zeros(len(orders), 6)
    for row, order in enumerate(orders):
        for place, c in enumerate(order):
            out[row, c] = 10.0 - place
    return out


def test_top1_top5_per_class_and_ranks() -> None:
    #            true  ranking (first = prediction)
    samples = [(0, [0, 1, 2, 3, 4, 5]),   # right
               (0, [1, 0, 2, 3, 4, 5]),   # same genus: right from kingdom to genus
               (0, [5, 4, 3, 2, 1, 0]),   # the plant Prunella: wrong at every rank, not in the top 5
               (1, [2, 3, 4, 5, 1, 0]),   # same family; true class 5th: a top-5 hit
               (4, [3, 0, 1, 2, 5, 4])]   # same kingdom only; true class 6th: a top-5 miss
    logits = logits_ranking(*[r for _, r in samples])
    targets = torch.tensor([t for t, _ in samples])
    counts = count_batch(logits, targets, TAX.ids)
    assert counts.total.tolist() == [3, 1, 0, 0, 1, 0]
    assert counts.top1.tolist() == [1, 0, 0, 0, 0, 0]
    assert counts.top5.tolist() == [2, 1, 0, 0, 0, 0]
    # hits per rank (kingdom..species), summed over samples
    expected = {"kingdom": 4, "phylum": 3, "class": 3, "order": 3, "family": 3, "genus": 2, "species": 1}
    assert {r: int(counts.by_rank[i].sum()) for i, r in enumerate(RANKS)} == expected

    result = summarize(counts, CATS, TAX, hardest=4)
    assert result["top1"] == 20.0 and result["top5"] == 60.0
    assert result["per_rank"] == {r: 100.0 * n / 5 for r, n in expected.items()}
    # per class: class 0 1/3, class 1 0/1, class 4 0/1 → mean of (1/3, 0, 0)
    assert abs(result["mean_per_class"] - 100 / 9) < 1e-3
    assert result["per_supercategory"] == {"Birds": 25.0, "Insects": 0.0}
    assert [h["id"] for h in result["hardest"]] == [11, 14, 10]  # 0% (ties: by id), then 33%
    assert result["num_samples"] == 5 and result["classes_evaluated"] == 3
    pairs = {(c["true"], c["pred"]): c["count"] for c in result["confused"]}
    assert pairs == {(10, 11): 1, (10, 15): 1, (11, 12): 1, (14, 13): 1}


def test_homonym_genera_are_different_taxa() -> None:
    genus = RANKS.index("genus")
    assert TAX.ids[genus, 0] == TAX.ids[genus, 1]
    assert TAX.ids[genus, 0] != TAX.ids[genus, 5]  # bird Prunella is not plant Prunella
    assert TAX.lineages[genus][int(TAX.ids[genus, 5])][-1] == "Prunella"


def test_confusion_pairs_are_counted_and_ordered() -> None:
    c = 6
    codes = torch.tensor([0 * c + 1, 2 * c + 3, 0 * c + 1, 4 * c + 5, 2 * c + 3, 0 * c + 1])
    assert confused_pairs(codes, c, 2) == [(0, 1, 3), (2, 3, 2)]
    assert confused_pairs(torch.zeros(0, dtype=torch.long), c, 5) == []


def test_counts_add_like_one_batch() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(40, 6), torch.randint(0, 6, (40,))
    whole = count_batch(logits, targets, TAX.ids)
    parts = count_batch(logits[:17], targets[:17], TAX.ids) + count_batch(logits[17:], targets[17:], TAX.ids)
    for name in ("total", "top1", "top5", "by_rank"):
        assert torch.equal(getattr(whole, name), getattr(parts, name))
    assert sorted(whole.error_codes().tolist()) == sorted(parts.error_codes().tolist())
    assert summarize(whole, CATS, TAX) == summarize(parts, CATS, TAX)


def test_few_classes_top5_is_topall() -> None:
    counts = Counts.zeros(3)
    ids = Taxonomy.of(CATS[:3]).ids
    counts.add(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([0]), ids)
    assert counts.top5.tolist() == [1, 0, 0] and counts.top1.tolist() == [0, 0, 0]


def test_label_lookup_maps_ids_and_flags_unknown() -> None:
    lookup = label_lookup(CATS)
    assert to_class_index(torch.tensor([10, 15, 12]), lookup).tolist() == [0, 5, 2]
    assert to_class_index(torch.tensor([9, 99999, -1]), lookup).tolist() == [-1, -1, -1]
