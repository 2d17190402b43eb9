"""An answer weighed by where and when: p(species | photo, place) ∝ p(species | photo) x p(present | place)^w.

The weight w is fit on validation data by `lit calibrate` (stored with the run, beside the
temperature); 1 (the plain product) until then. A photo without a place keeps its image-only
answer exactly: its row is passed through untouched, not recomputed.
"""

from __future__ import annotations

import torch

DEFAULT_WEIGHT = 1.0
"""The prior's weight before `lit calibrate` has fit one."""


def located(places: torch.Tensor) -> torch.Tensor:
    """[N] bool: rows of places [N, 3] whose latitude and longitude are known."""
    return ~(torch.isnan(places[:, 0]) | torch.isnan(places[:, 1]))


def weigh(log_probs: torch.Tensor, log_prior: torch.Tensor, where: torch.Tensor, weight: float) -> torch.Tensor:
    """Log-probabilities over species [N, C] with the prior applied to the rows `where` is true, renormalised.

    `log_probs`: the image's log-probabilities (log_softmax of its logits / T); `log_prior`: log
    p(present) [N, C] in the same class order (`Prior.log_presence`). Other rows are `log_probs`' own values.
    """
    combined = log_probs + weight * log_prior.to(log_probs.dtype)
    combined = combined - torch.logsumexp(combined, dim=1, keepdim=True)
    return torch.where(where[:, None], combined, log_probs)


__all__ = ["DEFAULT_WEIGHT", "located", "weigh"]
