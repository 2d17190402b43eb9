"""Top-k species of single images with their taxonomy; at a higher rank, probabilities summed up the tree.

Class probabilities are the softmax of the model's scaled cosine logits over all classes.
At rank r the probability of a taxon is the sum over its species (taxa identified by their
whole lineage, as in the metrics), so genus probabilities sum to one like species ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.table import Table

from lit.configlib import ConfigError
from lit.data.inat import RANKS, Category, DatasetError, load_categories_csv, load_categories_json
from lit.eval.metrics import Taxonomy

if TYPE_CHECKING:  # lit.model imports open_clip and transformers: not at run time here
    from lit.model import OpenClipModel


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


def read_categories(path: str | Path) -> list[Category]:
    """Categories from a categories.json / split JSON, or a CSV with the official columns."""
    path = Path(path)
    try:
        return load_categories_csv(path) if path.suffix.lower() == ".csv" else load_categories_json(path)
    except DatasetError as err:
        raise ConfigError("", "--categories", str(err)) from err


def load_images(paths: Sequence[str | Path], preprocess: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """Preprocessed images [N, 3, H, W]; a file that is not a readable image is a ConfigError."""
    tensors = []
    for p in paths:
        try:
            with Image.open(p) as im:
                tensors.append(preprocess(im.convert("RGB")))
        except (OSError, UnidentifiedImageError) as err:
            raise ConfigError(str(p), "image", f"cannot read it as an image ({err}): give JPEG/PNG files") from err
    return torch.stack(tensors)


@torch.no_grad()
def class_probabilities(model: torch.nn.Module, images: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Softmax over classes of logit_scale x cosine(image, class) → [N, C]."""
    clip = cast("OpenClipModel", model)  # lit.model.clip_api, without importing it
    feats = F.normalize(clip.encode_image(images.to(classifier.device)).float(), dim=-1)
    return (clip.logit_scale.exp().float() * feats @ classifier.T).softmax(dim=-1)


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


def predict(model: torch.nn.Module, preprocess: Callable[[Any], torch.Tensor], classifier: torch.Tensor,
            categories: Sequence[Category], images: Sequence[str | Path], k: int = 5, rank: str = "species") -> list[list[Guess]]:
    """Top-k guesses at `rank` for each image file (the model in eval mode)."""
    _depth(rank)
    model.eval()
    probs = class_probabilities(model, load_images(images, preprocess), classifier)
    taxonomy = Taxonomy.of(categories)
    return [top_k(row, categories, taxonomy, k, rank) for row in probs]


def guesses_table(image: str | Path, guesses: Sequence[Guess]) -> Table:
    """One image's guesses: probability, names and the lineage."""
    rank = guesses[0].rank if guesses else "species"
    table = Table(title=str(image), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("prob.", justify="right")
    if rank == "species":
        for name in ("common name", "species", "taxonomy"):
            table.add_column(name)
        for i, g in enumerate(guesses, 1):
            table.add_row(str(i), f"{100 * g.probability:.1f}%", g.species.common_name, g.species.name,
                          " > ".join(g.lineage[:-1]), style="bold" if i == 1 else "")
    else:
        for name in (rank, "taxonomy", "most likely species"):
            table.add_column(name)
        for i, g in enumerate(guesses, 1):
            table.add_row(str(i), f"{100 * g.probability:.1f}%", g.taxon, " > ".join(g.lineage),
                          f"{g.species.common_name} ({g.species.name}) {100 * g.species_probability:.1f}%",
                          style="bold" if i == 1 else "")
    return table


def print_predictions(images: Sequence[str | Path], results: Sequence[Sequence[Guess]], console: Console) -> None:
    for image, guesses in zip(images, results):
        console.print(guesses_table(image, guesses))


__all__ = ["Guess", "class_probabilities", "guesses_table", "load_images", "predict", "print_predictions",
           "rank_probabilities", "read_categories", "top_k"]
