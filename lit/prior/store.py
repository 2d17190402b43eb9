"""A trained location prior on disk (`PRIOR_DIR/prior.pt`) and in memory (`Prior`).

The file holds the network's weights, its shape, the species it answers for (category ids and
names, in its own order) and how it was made (annotations' sha256, the prior config, counts). It
is written to a temporary name and renamed into place only after it has been read back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit.checkpoint import CheckpointError
from lit.config import Config
from lit.errors import DataError
from lit.io import atomic_file
from lit.prior.net import PriorNet

FORMAT = 1
PRIOR_FILE = "prior.pt"
"""The trained prior inside its folder."""
CHECKPOINT_FILE = "checkpoint.pt"
"""Training state inside the prior's folder (removed once prior.pt is written)."""
RETRAIN = "Retrain it with `lit prior JOB.yaml`."


def prior_dir(cfg: Config) -> Path:
    """The job's prior folder: prior.out, or RUN_DIR/prior."""
    return Path(cfg.prior.out) if cfg.prior.out else Path(cfg.run_dir) / "prior"


def find_prior(cfg: Config) -> Path | None:
    """The job's trained prior file, or None when it has none."""
    path = prior_dir(cfg) / PRIOR_FILE
    return path if path.is_file() else None


@dataclass
class Prior:
    """A loaded prior: its network (eval mode) and the species of its outputs, in order."""

    net: PriorNet
    category_ids: list[int]
    names: list[str]
    info: dict[str, Any]
    path: Path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Prior:
        """Read a prior.pt (CheckpointError when it is not one)."""
        path = Path(path)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError) as err:
            raise CheckpointError(path, f"not a readable prior ({err})", RETRAIN) from err
        if not isinstance(data, dict) or data.get("format") != FORMAT or "state_dict" not in data:
            raise CheckpointError(path, f"not a prior file of format {FORMAT}", RETRAIN)
        shape = data["shape"]
        net = PriorNet(len(data["category_ids"]), shape["width"], shape["depth"], shape["use_date"])
        net.load_state_dict(data["state_dict"])
        net.eval().to(device)
        return cls(net, [int(c) for c in data["category_ids"]], list(data["names"]), dict(data.get("info", {})), path)

    def columns(self, category_ids: Sequence[int]) -> torch.Tensor:
        """The prior's output index of each of `category_ids` (DataError naming those it does not know)."""
        index = {c: i for i, c in enumerate(self.category_ids)}
        missing = [c for c in category_ids if c not in index]
        if missing:
            raise DataError(f"{self.path}: the prior knows no category {missing[:5]} ({len(missing)} of {len(category_ids)}): "
                            "it was trained on another dataset; retrain it with `lit prior JOB.yaml` on the model's data.root")
        return torch.tensor([index[c] for c in category_ids], dtype=torch.long)

    @torch.no_grad()
    def log_presence(self, places: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """log p(present) [N, C] at `places` [N, 3] (NaN day: any time of year), in `columns`' order when given."""
        device = next(self.net.parameters()).device
        out = self.net.log_presence(places.to(device))
        return out if columns is None else out[:, columns.to(device)]


def save_prior(path: Path, net: PriorNet, category_ids: Sequence[int], names: Sequence[str], info: dict[str, Any]) -> Path:
    """Write prior.pt atomically, after checking the written bytes load back into the same outputs."""
    data = {"format": FORMAT, "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "shape": {"width": net.body[0].out_features, "depth": len(net.body) - 2, "use_date": net.use_date},
            "category_ids": [int(c) for c in category_ids], "names": list(names), "info": info}
    probe = torch.tensor([[0.0, 0.0, 1.0], [45.0, -90.0, math.nan], [-33.9, 151.2, 200.0]])
    with torch.no_grad():
        want = net.cpu().eval().log_presence(probe)
    with atomic_file(path) as f:
        torch.save(data, f)
        f.flush()
        back = Prior.load(f.name)
        if not torch.equal(back.net.log_presence(probe), want):
            raise CheckpointError(path, "the written prior does not reproduce its outputs", "Check the disk and retrain.")
    return path


__all__ = ["CHECKPOINT_FILE", "FORMAT", "PRIOR_FILE", "Prior", "find_prior", "prior_dir", "save_prior"]
