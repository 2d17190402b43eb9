"""Zero-shot metrics as counts that add up across batches and ranks, and their summary.

Per true class: samples, top-1 hits, top-5 hits, and top-1 hits at each taxonomic rank
(the prediction's taxon at rank r equals the truth's). A taxon is identified by its whole
lineage down to that rank, so homonyms such as the bird genus *Prunella* and the plant
genus *Prunella* stay apart, and accuracy can never rise from kingdom down to species.

Top-1 confusions are kept exactly as one int64 code per misclassified sample
(`true * C + pred`): at most one per sample (100,000 on iNat2021 val), where a dense
confusion matrix would need C^2 = 10^8 cells. Ranks exchange them with two sum-reductions
(counts, then each rank's codes written at its own offset of a zero buffer), so everything
reduces with `all_reduce_sum` alone. Accuracies in the summary are percentages, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist

from lit import dist
from lit.data.inat import RANKS, Category
from lit.data.taxonomy import Taxonomy

TOP_K = 5


def label_lookup(categories: Sequence[Category]) -> torch.Tensor:
    """Category id → class index (position in `categories`); -1 for ids not among them."""
    lookup = torch.full((max(c.id for c in categories) + 2,), -1, dtype=torch.long)
    lookup[torch.tensor([c.id for c in categories])] = torch.arange(len(categories))
    return lookup


def to_class_index(labels: torch.Tensor, lookup: torch.Tensor) -> torch.Tensor:
    """Map category ids to class indices; -1 for ids the categories lack (the caller decides)."""
    inside = (labels >= 0) & (labels < len(lookup))
    return torch.where(inside, lookup.to(labels.device)[labels.clamp(0, len(lookup) - 1)], -1)


@dataclass
class Counts:
    """Summable evaluation counts over C classes (tensors on one device)."""

    total: torch.Tensor  # [C] samples per true class
    top1: torch.Tensor  # [C] top-1 hits per true class
    top5: torch.Tensor  # [C] top-5 hits per true class
    by_rank: torch.Tensor  # [R, C] top-1 hits at each rank, per true class
    errors: list[torch.Tensor] = field(default_factory=list)  # codes true * C + pred of top-1 misses

    @classmethod
    def zeros(cls, num_classes: int, device: torch.device | str = "cpu") -> Counts:
        z = lambda *s: torch.zeros(*s, dtype=torch.long, device=device)  # noqa: E731
        return cls(z(num_classes), z(num_classes), z(num_classes), z(len(RANKS), num_classes))

    @property
    def num_classes(self) -> int:
        return int(self.total.numel())

    def error_codes(self) -> torch.Tensor:
        if not self.errors:
            return torch.zeros(0, dtype=torch.long, device=self.total.device)
        return torch.cat(self.errors)

    def add(self, logits: torch.Tensor, targets: torch.Tensor, taxon_ids: torch.Tensor | np.ndarray) -> None:
        """Count one batch: `logits` [B, C], `targets` [B] class indices, `taxon_ids` [R, C] (Taxonomy.ids)."""
        taxon_ids = torch.as_tensor(taxon_ids, device=logits.device)
        if logits.numel() == 0:
            return
        c = self.num_classes
        k = min(TOP_K, c)
        topk = logits.topk(k, dim=1).indices
        pred = topk[:, 0]
        hit1 = pred == targets
        hit5 = (topk == targets[:, None]).any(dim=1)
        ones = torch.ones_like(targets)
        self.total.index_add_(0, targets, ones)
        self.top1.index_add_(0, targets, hit1.long())
        self.top5.index_add_(0, targets, hit5.long())
        same = taxon_ids[:, pred] == taxon_ids[:, targets]  # [R, B]
        self.by_rank.index_add_(1, targets, same.long())
        self.errors.append(targets[~hit1] * c + pred[~hit1])

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.total + other.total, self.top1 + other.top1, self.top5 + other.top5,
                      self.by_rank + other.by_rank, [self.error_codes(), other.error_codes()])

    def reduce(self) -> Counts:
        """The sum over all ranks, on every rank (collective; identity for one process)."""
        if not tdist.is_initialized() or tdist.get_world_size() == 1:
            return Counts(self.total, self.top1, self.top5, self.by_rank, [self.error_codes()])
        stacked = dist.all_reduce_sum(torch.cat([self.total[None], self.top1[None], self.top5[None], self.by_rank]))
        return Counts(stacked[0], stacked[1], stacked[2], stacked[3:], [gather_codes(self.error_codes())])


def count_batch(logits: torch.Tensor, targets: torch.Tensor, taxon_ids: torch.Tensor | np.ndarray) -> Counts:
    """Counts of a single batch (pure: for tests and one-off use)."""
    counts = Counts.zeros(logits.shape[1], logits.device)
    counts.add(logits, targets, taxon_ids)
    return counts


def gather_codes(codes: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's codes, in rank order, with sum-reductions only (collective)."""
    rank, world = tdist.get_rank(), tdist.get_world_size()
    sizes = torch.zeros(world, dtype=torch.long, device=codes.device)
    sizes[rank] = codes.numel()
    dist.all_reduce_sum(sizes)
    if int(sizes.sum()) == 0:  # the same on every rank: all skip the second reduction together
        return codes
    start = int(sizes[:rank].sum())
    out = torch.zeros(int(sizes.sum()), dtype=torch.long, device=codes.device)
    out[start:start + codes.numel()] = codes
    return dist.all_reduce_sum(out)


def _pct(hits: int, n: int) -> float:
    return round(100.0 * hits / n, 4) if n else 0.0


def confused_pairs(codes: torch.Tensor, num_classes: int, k: int) -> list[tuple[int, int, int]]:
    """The k most frequent (true index, predicted index, count) top-1 confusions."""
    if codes.numel() == 0:
        return []
    values, counts = torch.unique(codes.cpu(), return_counts=True)
    order = sorted(zip(counts.tolist(), values.tolist()), key=lambda cv: (-cv[0], cv[1]))[:k]
    return [(v // num_classes, v % num_classes, n) for n, v in order]


def _hardest_taxa(counts: Counts, taxonomy: Taxonomy, depth: int, k: int) -> list[dict[str, Any]]:
    """The k taxa at RANKS[depth] with the lowest rank-level accuracy (those with samples)."""
    ids = torch.as_tensor(taxonomy.ids[depth], device=counts.total.device)
    n_taxa = len(taxonomy.lineages[depth])
    hits = torch.zeros(n_taxa, dtype=torch.long, device=ids.device).index_add_(0, ids, counts.by_rank[depth])
    total = torch.zeros(n_taxa, dtype=torch.long, device=ids.device).index_add_(0, ids, counts.total)
    classes = torch.zeros(n_taxa, dtype=torch.long, device=ids.device).index_add_(0, ids, (counts.total > 0).long())
    rows = [(h / n, -n, t) for t, (h, n) in enumerate(zip(hits.tolist(), total.tolist())) if n]
    out = []
    for _, _, t in sorted(rows)[:k]:
        lineage = taxonomy.lineages[depth][t]
        out.append({"taxon": lineage[-1], "lineage": " > ".join(lineage), "accuracy": _pct(int(hits[t]), int(total[t])),
                    "n": int(total[t]), "classes": int(classes[t])})
    return out


def summarize(counts: Counts, categories: Sequence[Category], taxonomy: Taxonomy, hardest: int = 20) -> dict[str, Any]:
    """Percentages and lists from reduced counts (see results.json in lit.eval.runner)."""
    total, top1, top5 = counts.total.cpu(), counts.top1.cpu(), counts.top5.cpu()
    n = int(total.sum())
    seen = total > 0
    per_class = (top1[seen].double() / total[seen].double()).mean().item() if bool(seen.any()) else 0.0
    by_super: dict[str, list[int]] = {}
    for c, t, h in zip(categories, total.tolist(), top1.tolist()):
        if t:
            acc = by_super.setdefault(c.supercategory, [0, 0])
            acc[0], acc[1] = acc[0] + h, acc[1] + t
    classes = sorted((h / t, -t, i) for i, (h, t) in enumerate(zip(top1.tolist(), total.tolist())) if t)
    codes = counts.error_codes()
    return {
        "top1": _pct(int(top1.sum()), n),
        "top5": _pct(int(top5.sum()), n),
        "mean_per_class": round(100.0 * per_class, 4),
        "per_rank": {r: _pct(int(counts.by_rank[i].sum()), n) for i, r in enumerate(RANKS)},
        "per_supercategory": {s: _pct(h, t) for s, (h, t) in sorted(by_super.items())},
        "hardest": [
            {"id": categories[i].id, "name": categories[i].name, "common_name": categories[i].common_name,
             "accuracy": _pct(int(top1[i]), int(total[i])), "top5": _pct(int(top5[i]), int(total[i])), "n": int(total[i])}
            for _, _, i in classes[:hardest]
        ],
        "confused": [
            {"true": categories[t].id, "pred": categories[p].id, "count": k,
             "true_name": categories[t].name, "pred_name": categories[p].name}
            for t, p, k in confused_pairs(codes, counts.num_classes, hardest)
        ],
        "hardest_taxa": {r: _hardest_taxa(counts, taxonomy, i, hardest) for i, r in enumerate(RANKS[:-1])},
        "num_samples": n,
        "num_classes": counts.num_classes,
        "classes_evaluated": int(seen.sum()),
    }


__all__ = ["TOP_K", "Counts", "confused_pairs", "count_batch", "gather_codes", "label_lookup", "summarize",
           "to_class_index"]
