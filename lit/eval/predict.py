"""Top-k taxa of class probabilities in torch, and the candidate classes of a file; at a higher rank, sums up the tree.

The command's path (folders, batches, subsets, back-off, ONNX) lives in lit.serve: its numpy
scoring (lit.serve.scoring) is checked against these functions.

Class probabilities are the softmax of the model's scaled cosine logits over all classes.
At rank r the probability of a taxon is the sum over its species (taxa identified by their
whole lineage, as in the metrics), so genus probabilities sum to one like species ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lit.configlib import ConfigError
from lit.data.inat import RANKS, Category, DatasetError, load_categories_csv, load_categories_json
from lit.eval.metrics import Taxonomy
from lit.serve.scoring import Guess  # one definition for the torch and the onnxruntime paths


def read_categories(path: str | Path) -> list[Category]:
    """Categories from a categories.json / split JSON, or a CSV with the official columns."""
    path = Path(path)
    try:
        return load_categories_csv(path) if path.suffix.lower() == ".csv" else load_categories_json(path)
    except DatasetError as err:
        raise ConfigError("", "--categories", str(err)) from err


def rank_probabilities(probs: torch.Tensor, taxonomy: Taxonomy, rank: str) -> torch.Tensor:
    """[N, C] class probabilities → [N, T] probabilities of the taxa at `rank` (sums of their classes)."""
    depth = _depth(rank)
    ids = taxonomy.ids[depth].to(probs.device)
    out = torch.zeros(probs.shape[0], len(taxonomy.lineages[depth]), dtype=probs.dtype, device=probs.device)
    return out.index_add_(1, ids, probs)


def _depth(rank: str) -> int:
    if rank not in RANKS:
        raise ConfigError("", "--rank", f"unknown rank {rank!r}; choose from {', '.join(RANKS)}")
    return RANKS.index(rank)


def top_k(probs: torch.Tensor, categories: Sequence[Category], taxonomy: Taxonomy, k: int = 5,
          rank: str = "species") -> list[Guess]:
    """The k most likely taxa at `rank` for one image's class probabilities [C]."""
    depth = _depth(rank)
    taxa = rank_probabilities(probs[None], taxonomy, rank)[0]
    ids = taxonomy.ids[depth].to(probs.device)
    guesses = []
    values, indices = taxa.topk(min(k, taxa.numel()))
    for p, t in zip(values.tolist(), indices.tolist()):
        members = torch.where(ids == t, probs, torch.full_like(probs, -1.0))
        best = int(members.argmax())
        lineage = taxonomy.lineages[depth][t]
        guesses.append(Guess(rank, lineage[-1], lineage, p, categories[best], float(probs[best])))
    return guesses


__all__ = ["Guess", "rank_probabilities", "read_categories", "top_k"]
