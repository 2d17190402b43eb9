"""From logits to answers, in numpy: temperature, candidate mask, location prior, probabilities up the tree, top-k, back-off.

Logits are the model's `logit_scale x cosine(image, class) + logit_bias` (the bias of a sigmoid
model, train.loss=siglip; 0 for the CLIP loss). A calibrated temperature T divides them; classes
outside the candidate subset get no probability (the softmax runs over the allowed classes only).
At rank r a taxon's probability is the sum over its species, taxa being identified by their
whole lineage (homonym genera stay apart), as in lit.eval.metrics.
The taxonomy, probabilities and top-k are lit.data.taxonomy's. The confident answer is the deepest rank whose most likely taxon has at least `min_confidence`.

With a place (lit.field.exif.PlaceUsed) and an engine's location prior, a located photo's
probabilities are exp(log_softmax(logits / T) + w x log p(present | place), renormalised): the
numpy twin of lit.prior.combine.weigh (which is torch's; this path runs without torch), and its
Prediction keeps the image-only answer beside. A photo without a place takes exactly the path
it took before priors existed: its row of the same softmax, bitwise.

Probabilities over species are softmax(logits / T) for a sigmoid model too, not its normalised
sigmoids sigma(z_c) / sum sigma(z): one path for every model and export, where the bias (one
constant per image) cancels, the fitted T and its convex NLL stay what lit.eval.calibration fits,
and back-off sums them up the taxonomy unchanged. Where every z << 0 (the bias starts at -10),
sigma(z) is about e^z and the normalised sigmoids are nearly this softmax anyway; they part where a
class scores above 0, and the sigmoid of one class alone ("is it this species?") is no distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit.configlib import ConfigError
from lit.data.inat import RANKS, Category
from lit.data.taxonomy import Guess, Taxonomy, depth_of, probabilities, rank_probabilities, top_k
from lit.errors import UsageError
from lit.field.exif import PlaceUsed

PriorFn = Callable[[np.ndarray], "np.ndarray | None"]
"""An engine's `log_prior`: places [N, 3] float32 → log p(present) [N, C] in class order, or None without a prior."""


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
class ImageOnly:
    """The answer from the image alone, kept beside one weighed by the location prior."""

    guesses: list[Guess]
    answer: Answer

    def to_json(self) -> dict[str, Any]:
        return {"guesses": [g.to_json() for g in self.guesses], "answer": self.answer.to_json()}


@dataclass(frozen=True)
class Prediction:
    """Everything said about one image: its top-k at a rank, the confident answer, the place used (None: none known)
    and, when the location prior weighed the answer (with `prior_weight`), the image-only answer."""

    path: str
    guesses: list[Guess]
    answer: Answer
    place: PlaceUsed | None = None
    image_only: ImageOnly | None = None
    prior_weight: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.path, "guesses": [g.to_json() for g in self.guesses], "answer": self.answer.to_json(),
                "place": None if self.place is None else self.place.to_json(), "prior_weight": self.prior_weight,
                "image_only": None if self.image_only is None else self.image_only.to_json()}


def log_probabilities(logits: np.ndarray, temperature: float = 1.0, allowed: np.ndarray | None = None) -> np.ndarray:
    """log_softmax of logits / T over the allowed classes ([N, C] float64; disallowed classes get -inf)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if allowed is not None:
        z = np.where(allowed[None, :], z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def weigh(log_probs: np.ndarray, log_prior: np.ndarray, weight: float) -> np.ndarray:
    """Probabilities [N, C] of log_probs + weight x log_prior, renormalised (lit.prior.combine.weigh, every row weighed).

    A disallowed class (-inf) stays at 0; a prior of 0 (-inf) is held at e^-1000 so that weight 0 is the image alone.
    """
    prior = np.maximum(np.asarray(log_prior, dtype=np.float64), -1000.0)
    combined = np.where(np.isfinite(log_probs), log_probs + float(weight) * prior, -np.inf)
    combined = combined - combined.max(axis=1, keepdims=True)
    e = np.exp(combined)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Scorer:
    """The fixed part of scoring: classes, their taxonomy, temperature, candidate mask, k, rank, threshold, location prior."""

    categories: Sequence[Category]
    taxonomy: Taxonomy
    temperature: float = 1.0
    allowed: np.ndarray | None = None
    k: int = 5
    rank: str = "species"
    min_confidence: float = 0.0
    prior: PriorFn | None = None
    prior_weight: float = 1.0

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

    def weighed(self, logits: np.ndarray, places: Sequence[PlaceUsed | None]) -> dict[int, np.ndarray]:
        """Probabilities with the prior of the located rows (by row), or {} when there are none or no prior."""
        located = [(i, p.place.row()) for i, p in enumerate(places) if p is not None and p.located]
        if not located or self.prior is None:
            return {}
        rows = [i for i, _ in located]
        log_prior = self.prior(np.array([row for _, row in located], dtype=np.float32))
        if log_prior is None:
            return {}
        log_probs = log_probabilities(np.asarray(logits)[rows], self.temperature, self.allowed)
        return dict(zip(rows, weigh(log_probs, log_prior, self.prior_weight), strict=True))

    def score(self, paths: Sequence[str], logits: np.ndarray,
              places: Sequence[PlaceUsed | None] | None = None) -> list[Prediction]:
        """One Prediction per row of `logits` [N, C]; `places` (one per row) weigh the located rows by the prior."""
        probs = probabilities(logits, self.temperature, self.allowed)
        where = list(places) if places is not None else [None] * len(paths)
        if len(where) != len(paths):
            raise ValueError(f"{len(where)} places for {len(paths)} images")
        weighed = self.weighed(logits, where)
        out = []
        for i, (path, row, place) in enumerate(zip(paths, probs, where)):
            guesses = top_k(row, self.categories, self.taxonomy, self.k, self.rank)
            answer = back_off(row, self.categories, self.taxonomy, self.min_confidence)
            if i in weighed:
                both = weighed[i]
                out.append(Prediction(path, top_k(both, self.categories, self.taxonomy, self.k, self.rank),
                                      back_off(both, self.categories, self.taxonomy, self.min_confidence), place,
                                      ImageOnly(guesses, answer), self.prior_weight))
            else:
                out.append(Prediction(path, guesses, answer, place))
        return out


__all__ = ["Answer", "ImageOnly", "Prediction", "PriorFn", "Scorer", "back_off", "log_probabilities", "weigh"]
