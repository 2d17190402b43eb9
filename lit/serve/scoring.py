"""From logits to answers, in numpy: temperature, candidate mask, probabilities up the tree, top-k, back-off.

Logits are the model's `logit_scale x cosine(image, class)`. A calibrated temperature T divides
them; classes outside the candidate subset get no probability (the softmax runs over the
allowed classes only). At rank r a taxon's probability is the sum over its species, taxa
being identified by their whole lineage (homonym genera stay apart), as in lit.eval.metrics.
The confident answer is the deepest rank whose most likely taxon has at least `min_confidence`.
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
    """Class index → taxon id at each rank (lineage-identified), and each taxon's lineage (numpy twin of lit.eval.metrics)."""

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


@dataclass(frozen=True)
class Answer:
    """The confident answer: the deepest rank at or above the threshold, or `unknown` (rank None)."""

    rank: str | None
    taxon: str
    lineage: tuple[str, ...]
    probability: float
    min_confidence: float
    common_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "taxon": self.taxon, "lineage": list(self.lineage), "probability": self.probability,
                "common_name": self.common_name, "min_confidence": self.min_confidence}


def depth_of(rank: str, key: str = "--rank") -> int:
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


def back_off(probs: np.ndarray, categories: Sequence[Category], taxonomy: Taxonomy, min_confidence: float) -> Answer:
    """The deepest rank whose most likely taxon has probability >= `min_confidence` (species, else genus, ...)."""
    for depth in range(len(RANKS) - 1, -1, -1):
        taxa = rank_probabilities(probs[None], taxonomy, RANKS[depth])[0]
        t = int(taxa.argmax())
        if taxa[t] >= min_confidence:
            lineage = taxonomy.lineages[depth][t]
            common = ""
            if depth == len(RANKS) - 1:
                common = categories[int(np.where(taxonomy.ids[depth] == t)[0][0])].common_name
            return Answer(RANKS[depth], lineage[-1], lineage, float(taxa[t]), min_confidence, common)
    return Answer(None, "unknown", (), 0.0, min_confidence)


@dataclass(frozen=True)
class Prediction:
    """Everything said about one image: its top-k at a rank and the confident answer."""

    path: str
    guesses: list[Guess]
    answer: Answer

    def to_json(self) -> dict[str, Any]:
        return {"image": self.path, "guesses": [g.to_json() for g in self.guesses], "answer": self.answer.to_json()}


@dataclass(frozen=True)
class Scorer:
    """The fixed part of scoring: classes, their taxonomy, temperature, candidate mask, k, rank and threshold."""

    categories: Sequence[Category]
    taxonomy: Taxonomy
    temperature: float = 1.0
    allowed: np.ndarray | None = None
    k: int = 5
    rank: str = "species"
    min_confidence: float = 0.0

    @classmethod
    def of(cls, categories: Sequence[Category], **kwargs: Any) -> Scorer:
        return cls(categories, Taxonomy.of(categories), **kwargs)

    def __post_init__(self) -> None:
        depth_of(self.rank)
        if self.k < 1:
            raise ConfigError("", "--top", f"must be >= 1, got {self.k}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("", "--min-confidence", f"must be between 0 and 1, got {self.min_confidence}")
        if not self.temperature > 0.0:
            raise ConfigError("", "temperature", f"must be > 0, got {self.temperature}: rerun `lit calibrate`")

    def score(self, paths: Sequence[str], logits: np.ndarray) -> list[Prediction]:
        """One Prediction per row of `logits` [N, C]."""
        probs = probabilities(logits, self.temperature, self.allowed)
        return [Prediction(p, top_k(row, self.categories, self.taxonomy, self.k, self.rank),
                           back_off(row, self.categories, self.taxonomy, self.min_confidence))
                for p, row in zip(paths, probs)]


__all__ = ["Answer", "Guess", "Prediction", "Scorer", "Taxonomy", "back_off", "depth_of", "probabilities",
           "rank_probabilities", "top_k"]
