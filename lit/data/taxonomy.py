"""Taxonomy of a class list, in numpy: taxon ids at every rank, probabilities up the tree, top-k taxa.

Taxa are identified by their whole lineage (homonym genera stay apart). At rank r a taxon's
probability is the sum over its species, so genus probabilities sum to one like species ones.
It sits below evaluation (lit.eval.metrics counts per rank with it) and field use
(lit.field.scoring turns logits into answers with it): one definition for both, and for the
torch-free ONNX path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from lit.configlib import ConfigError
from lit.data.inat import RANKS, Category


@dataclass(frozen=True)
class Taxonomy:
    """Class index → taxon id at each rank (lineage-identified), and each taxon's lineage ."""

    ids: np.ndarray  # [len(RANKS), C] int64
    lineages: tuple[tuple[tuple[str, ...], ...], ...]

    @classmethod
    def of(cls, categories: Sequence[Category]) -> Taxonomy:
        ids, lineages = [], []
        for depth in range(1, len(RANKS) + 1):
            index: dict[tuple[str, ...], int] = {}
            ids.append([index.setdefault(tuple(c.taxon(r) for r in RANKS[:depth]), len(index)) for c in categories])
            lineages.append(tuple(index))
        return cls(np.asarray(ids, dtype=np.int64).reshape(len(RANKS), len(categories)), tuple(lineages))

    @cached_property
    def groups(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """Per rank: the classes sorted by taxon id, and where each taxon's run starts (taxon ids are 0..T-1, all used)."""
        out = []
        for ids in self.ids:
            order = np.argsort(ids, kind="stable")
            out.append((order, np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0])))
        return tuple(out)


@dataclass(frozen=True)
class Guess:
    """One entry of a top-k list: a taxon at `rank`, its probability and its most likely species."""

    rank: str
    taxon: str
    lineage: tuple[str, ...]
    probability: float
    species: Category
    species_probability: float

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "taxon": self.taxon, "lineage": list(self.lineage), "probability": self.probability,
                "species": self.species.name, "common_name": self.species.common_name,
                "species_probability": self.species_probability}


def depth_of(rank: str, key: str = "rank") -> int:
    """Index of `rank` in RANKS; a ConfigError naming the choices otherwise."""
    if rank not in RANKS:
        raise ConfigError("", key, f"unknown rank {rank!r}; choose from {', '.join(RANKS)}")
    return RANKS.index(rank)


def probabilities(logits: np.ndarray, temperature: float = 1.0, allowed: np.ndarray | None = None) -> np.ndarray:
    """Softmax of logits / T over the allowed classes ([N, C] float64; disallowed classes get 0)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if allowed is not None:
        z = np.where(allowed[None, :], z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def rank_probabilities(probs: np.ndarray, taxonomy: Taxonomy, rank: str) -> np.ndarray:
    """[N, C] class probabilities → [N, T] probabilities of the taxa at `rank` (sums of their classes)."""
    order, starts = taxonomy.groups[depth_of(rank)]
    return np.add.reduceat(probs[:, order], starts, axis=1)  # classes sorted by taxon: one contiguous sum per taxon


def top_k(probs: np.ndarray, categories: Sequence[Category], taxonomy: Taxonomy, k: int = 5,
          rank: str = "species") -> list[Guess]:
    """The k most likely taxa at `rank` for one image's class probabilities [C] (taxa of probability 0 left out)."""
    depth = depth_of(rank)
    taxa = rank_probabilities(probs[None], taxonomy, rank)[0]
    ids = taxonomy.ids[depth]
    order = np.argsort(-taxa, kind="stable")[:k]
    guesses = []
    for t in order:
        if taxa[t] <= 0.0:
            break
        members = np.where(ids == t, probs, -1.0)
        best = int(members.argmax())
        lineage = taxonomy.lineages[depth][int(t)]
        guesses.append(Guess(rank, lineage[-1], lineage, float(taxa[t]), categories[best], float(probs[best])))
    return guesses


__all__ = ["Guess", "Taxonomy", "depth_of", "probabilities", "rank_probabilities", "top_k"]
