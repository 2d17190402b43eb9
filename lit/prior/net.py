"""The location prior's network: where and when → one presence logit per species.

A coordinate network in the manner of SINR (Cole et al. 2023, "Spatial Implicit Neural
Representations for Global-Scale Species Mapping", ICML): longitude and latitude scaled to
[-1, 1] and encoded as sin/cos of pi times each (so -180 and 180 meet), optionally the day of
year as sin/cos on the year's circle (as in Mac Aodha, Cole and Perona 2019, "Presence-Only
Geographical Priors for Fine-Grained Image Classification", ICCV), then a linear layer, a few
residual blocks and one linear head with a sigmoid per species. Written for this project from the
papers' descriptions.

An unknown day of year (NaN) encodes as (0, 0), the circle's centre: the model is trained with
some dates hidden (`prior.date_dropout`), so that input means "any time of year".
"""

from __future__ import annotations

import math

import torch
from torch import nn


def encode(places: torch.Tensor, use_date: bool) -> torch.Tensor:
    """[N, 3] (latitude, longitude, day of year; NaN day = unknown) → [N, 4] or [N, 6] network inputs.

    Rows with NaN coordinates encode as zeros (callers answer them image-only anyway).
    """
    places = places.to(torch.float32)
    lat = torch.nan_to_num(places[:, 0] / 90.0)
    lon = torch.nan_to_num(places[:, 1] / 180.0)
    parts = [torch.sin(math.pi * lon), torch.cos(math.pi * lon), torch.sin(math.pi * lat), torch.cos(math.pi * lat)]
    if use_date:
        day = places[:, 2]
        known = ~torch.isnan(day)
        angle = 2.0 * math.pi * (torch.nan_to_num(day) - 1.0) / 365.25
        parts += [torch.where(known, torch.sin(angle), 0.0), torch.where(known, torch.cos(angle), 0.0)]
    return torch.stack(parts, dim=1)


class ResidualBlock(nn.Module):
    """x + relu(W2 dropout(relu(W1 x))) (SINR's residual layer)."""

    def __init__(self, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class PriorNet(nn.Module):
    """Places [N, 3] → presence logits [N, classes]; `sigmoid` of them is p(species present | place, date)."""

    def __init__(self, classes: int, width: int = 256, depth: int = 4, use_date: bool = True) -> None:
        super().__init__()
        self.classes, self.use_date = classes, use_date
        inputs = 6 if use_date else 4
        self.body = nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), *(ResidualBlock(width) for _ in range(depth)))
        self.head = nn.Linear(width, classes, bias=False)

    def embed(self, places: torch.Tensor) -> torch.Tensor:
        """The location's feature vector [N, width]."""
        return self.body(encode(places, self.use_date))

    def forward(self, places: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(places))

    def log_presence(self, places: torch.Tensor) -> torch.Tensor:
        """log p(present) per species, [N, classes] (the factor a photo's class probabilities are weighed by)."""
        return nn.functional.logsigmoid(self.forward(places))


def random_places(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 3] places uniform on the sphere (latitude by arcsine), uniform days: the background the loss assumes absent."""
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    lat = torch.rad2deg(torch.asin(2.0 * u[:, 0] - 1.0))
    lon = 360.0 * u[:, 1] - 180.0
    day = 1.0 + 365.0 * u[:, 2]
    return torch.stack([lat, lon, day], dim=1).to(torch.float32)


def assume_negative_loss(logits: torch.Tensor, background: torch.Tensor, targets: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """SINR's "assume negative, full" presence-only loss.

    At an observation, its species is present (weighted by `pos_weight`, lambda in the paper) and
    every other species assumed absent; at a random background location, every species is assumed
    absent. Averaged over the [batch, classes] entries. `logits`, `background`: [B, C]; `targets`: [B].
    """
    log_absent_obs = nn.functional.logsigmoid(-logits)
    log_absent_bg = nn.functional.logsigmoid(-background)
    rows = torch.arange(len(targets), device=logits.device)
    pos = nn.functional.logsigmoid(logits[rows, targets])
    total = -(log_absent_obs.sum() - log_absent_obs[rows, targets].sum()) - log_absent_bg.sum() - pos_weight * pos.sum()
    return total / logits.numel()


__all__ = ["PriorNet", "ResidualBlock", "assume_negative_loss", "encode", "random_places"]
