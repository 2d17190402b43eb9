"""Zero-shot accuracy with the location prior beside the image-only figures: the same images, counted twice.

Each validation sample's place (latitude, longitude, day of year, from its shard's json, kept by the
embedding cache) is weighed in as prediction does (`lit.prior.combine.weigh`): the image's
probabilities at the calibrated temperature times the prior's presence at that place to the
calibrated weight. Samples without a place count the same in both (their image-only answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.table import Table

from lit import dist
from lit.config import Config
from lit.data.inat import Category
from lit.data.taxonomy import Taxonomy
from lit.eval.calibration import prior_weight_for, temperature_for
from lit.eval.metrics import Counts, summarize
from lit.log import logger
from lit.prior.combine import DEFAULT_WEIGHT, located, weigh
from lit.prior.store import Prior, find_prior


@dataclass
class PriorScoring:
    """The prior and how it is weighed in: the model's scores (logit scale x cosine + logit bias) / T, weight, the prior's
    columns for the eval's classes. The bias (a sigmoid model's) is one constant per image: the softmax cancels it."""

    prior: Prior
    columns: torch.Tensor
    scale: float
    temperature: float
    weight: float
    calibrated: bool
    counts: Counts
    located: int = 0
    bias: float = 0.0

    @classmethod
    def of(cls, cfg: Config, categories: Sequence[Category], logit_scale: float, checkpoint: dict[str, Any] | None,
           device: torch.device, logit_bias: float = 0.0) -> PriorScoring | None:
        """The job's prior ready to weigh the eval's classes, or None when the job has no trained prior."""
        path = find_prior(cfg)
        if path is None:
            return None
        prior = Prior.load(path, device)
        ckpt, step = (checkpoint or {}).get("path"), (checkpoint or {}).get("step")
        name = str(ckpt) if ckpt else None
        temperature = temperature_for(cfg.run_dir, name, step) if name else 1.0
        fitted = prior_weight_for(cfg.run_dir, name, step) if name else None
        return cls(prior, prior.columns([c.id for c in categories]).to(device), logit_scale, temperature,
                   DEFAULT_WEIGHT if fitted is None else fitted, fitted is not None,
                   Counts.zeros(len(categories), device), bias=logit_bias)

    def add(self, sims: torch.Tensor, places: torch.Tensor, targets: torch.Tensor, taxon_ids: torch.Tensor) -> None:
        """Count one batch (`sims`: cosine similarities [B, C]) with the prior applied to its located samples."""
        where = located(places)
        n = int(where.sum())
        self.located += n
        if n == 0:
            self.counts.add(sims, targets, taxon_ids)
            return
        log_probs = torch.log_softmax(sims * (self.scale / self.temperature) + self.bias / self.temperature, dim=1)
        log_prior = torch.zeros_like(log_probs)
        log_prior[where] = self.prior.log_presence(places[where], self.columns).to(log_probs.dtype)
        self.counts.add(weigh(log_probs, log_prior, where, self.weight), targets, taxon_ids)

    def summary(self, image_only: dict[str, Any], categories: Sequence[Category], taxonomy: Taxonomy,
                hardest: int) -> dict[str, Any]:
        """results.json's `prior` entry (collective: reduces the counts over ranks)."""
        counts = self.counts.reduce()
        device = counts.total.device
        located_total = int(dist.all_reduce_sum(torch.tensor([float(self.located)], dtype=torch.float64, device=device))[0])
        s = summarize(counts, categories, taxonomy, hardest)
        out = {
            "top1": s["top1"], "top5": s["top5"], "per_rank": s["per_rank"], "mean_per_class": s["mean_per_class"],
            "gain_top1": round(s["top1"] - image_only["top1"], 4), "gain_top5": round(s["top5"] - image_only["top5"], 4),
            "located": located_total, "num_samples": s["num_samples"], "weight": self.weight,
            "weight_calibrated": self.calibrated, "temperature": self.temperature, "prior": str(self.prior.path),
            "prior_observations": self.prior.info.get("observations"),
        }
        logger.info("with the location prior (%d of %d samples located, weight %.3g%s): top-1 %.2f%% (%+.2f), top-5 %.2f%% (%+.2f)",
                    located_total, s["num_samples"], self.weight, "" if self.calibrated else ", not calibrated",
                    out["top1"], out["gain_top1"], out["top5"], out["gain_top5"])
        return out


def prior_table(result: dict[str, Any]) -> Table | None:
    """Image only vs with the prior: top-1, top-5 and top-1 at every rank, with the gain (None without a prior)."""
    p = result.get("prior")
    if not p:
        return None
    table = Table(title=f"With the location prior ({p['located']:,} of {p['num_samples']:,} images located, weight "
                        f"{p['weight']:.3g}{'' if p['weight_calibrated'] else ', not calibrated: run lit calibrate'}) (percent)")
    for name, justify in (("measure", "left"), ("image only", "right"), ("with prior", "right"), ("gain", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    rows = [("top-1", result["top1"], p["top1"]), ("top-5", result["top5"], p["top5"])]
    rows += [(f"top-1 at {rank}", result["per_rank"][rank], p["per_rank"][rank]) for rank in result["per_rank"]]
    for name, a, b in rows:
        table.add_row(name, f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}")
    return table


__all__ = ["PriorScoring", "prior_table"]
