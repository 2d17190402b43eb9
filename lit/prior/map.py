"""A picture of a range: the prior's predicted presence of one species on a world map, with its training observations.

Equirectangular, one cell per degree (or finer), presence p = sigmoid(logit) at each cell's centre
for one day of year (or any time of year). No coastlines are drawn: no PyPI package ships a world
outline small enough to load offline (global-land-mask's 1 km mask decompresses to ~1 GB), so a
graticule marks the continents' rough places instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch

from lit.errors import UsageError
from lit.io import atomic_file
from lit.prior.store import Prior

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def find_species(prior: Prior, name: str, common_names: dict[int, str] | None = None) -> int:
    """The prior's output index of a species named by its scientific name, its common name or its category id."""
    wanted = name.strip().lower()
    for i, (cid, sci) in enumerate(zip(prior.category_ids, prior.names)):
        if wanted in (sci.lower(), str(cid), (common_names or {}).get(cid, "").lower()):
            return i
    close = [n for n in prior.names if wanted.split()[0] in n.lower()][:5] if wanted else []
    raise UsageError("--map", f"{name!r} is not a species of this prior ({len(prior.names):,} species)"
                     + (f"; close: {', '.join(close)}" if close else "; give a scientific name such as 'Vulpes vulpes'"))


def presence_grid(prior: Prior, column: int, step_deg: float = 1.0, day: float = math.nan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latitudes, longitudes, presence [lat, lon]) of one species on a regular grid."""
    lats = np.arange(-90 + step_deg / 2, 90, step_deg)
    lons = np.arange(-180 + step_deg / 2, 180, step_deg)
    grid_lat, grid_lon = np.meshgrid(lats, lons, indexing="ij")
    places = torch.tensor(np.stack([grid_lat.ravel(), grid_lon.ravel(), np.full(grid_lat.size, day)], axis=1), dtype=torch.float32)
    out = []
    for chunk in places.split(65536):
        out.append(prior.log_presence(chunk, torch.tensor([column]))[:, 0].exp())
    return lats, lons, torch.cat(out).numpy().reshape(grid_lat.shape)


def write_map(prior: Prior, column: int, out: str | Path, observed: np.ndarray | None = None, title: str = "",
              day: float = math.nan) -> Path:
    """Write the species' presence map as a PNG; `observed` [K, 2] (lat, lon) are drawn as dots."""
    lats, lons, presence = presence_grid(prior, column, day=day)
    fig, ax = plt.subplots(figsize=(10, 5.4), dpi=110)
    image = ax.imshow(presence, origin="lower", extent=(-180, 180, -90, 90), cmap="viridis", vmin=0.0, vmax=1.0,
                      interpolation="nearest", aspect="equal")
    if observed is not None and len(observed):
        ax.scatter(observed[:, 1], observed[:, 0], s=6, c="#ff4040", edgecolors="white", linewidths=0.3,
                   label=f"training observations ({len(observed):,})")
        ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    ax.set_xticks(range(-180, 181, 30))
    ax.set_yticks(range(-90, 91, 30))
    ax.grid(color="white", alpha=0.25, linewidth=0.5)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    when = "any time of year" if math.isnan(day) else f"day {day:.0f} of the year"
    ax.set_title(title or f"{prior.names[column]}: predicted presence ({when})")
    fig.colorbar(image, ax=ax, shrink=0.8, label="p(present)")
    fig.tight_layout()
    with atomic_file(out) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return Path(out)


__all__ = ["find_species", "presence_grid", "write_map"]
