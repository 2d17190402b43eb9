"""From logits to answers, in numpy: temperature, candidate mask, probabilities up the tree, top-k, back-off.

Logits are the model's `logit_scale x cosine(image, class)`. A calibrated temperature T divides
them; classes outside the candidate subset get no probability (the softmax runs over the
allowed classes only). At rank r a taxon's probability is the sum over its species, taxa
being identified by their whole lineage (homonym genera stay apart), as in lit.eval.metrics.
The taxonomy, probabilities and top-k are lit.data.taxonomy's. The confident answer is the deepest rank whose most likely taxon has at least `min_confidence`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit.configlib import ConfigError
from lit.data.inat import RANKS, Category
from lit.data.taxonomy import Guess, Taxonomy, depth_of, probabilities, rank_probabilities, top_k
from lit.errors import UsageError


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
            raise UsageError("k", f"must be >= 1, got {self.k}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UsageError("min_confidence", f"must be between 0 and 1, got {self.min_confidence}")
        if not self.temperature > 0.0:
            raise ConfigError("", "temperature", f"must be > 0, got {self.temperature}: rerun `lit calibrate`")

    def score(self, paths: Sequence[str], logits: np.ndarray) -> list[Prediction]:
        """One Prediction per row of `logits` [N, C]."""
        probs = probabilities(logits, self.temperature, self.allowed)
        return [Prediction(p, top_k(row, self.categories, self.taxonomy, self.k, self.rank),
                           back_off(row, self.categories, self.taxonomy, self.min_confidence))
                for p, row in zip(paths, probs)]


__all__ = ["Answer", "Prediction", "Scorer", "back_off"]
