"""Augmented views for the cache: K views per image, each a pure function of (sample key, view index, seed).

View 0 is the tower's plain eval view; views 1..K-1 apply the policy's training transform under a
seed made from the sample's key, the view index and `data.view_seed`, so a re-run of `lit embed`
writes identical files. Training picks one view per sample per epoch from (train seed, epoch, key):
the cached path and a raw run with the same `data.views` see the same view of every sample, and
an epoch over K views costs what an epoch over one costs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision import transforms  # type: ignore[import-untyped]

POLICIES = ("crop-flip", "openclip")
"""crop-flip: random resized crop (scale 0.5-1) and horizontal flip, open_clip's transform otherwise;
openclip: the tower's own open_clip training transform (random resized crop, scale 0.9-1)."""


def _seed(*parts: int) -> int:
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) & 0x7FFFFFFF


def key_seed(key: str) -> int:
    return int(key) if key.isdigit() else zlib.crc32(key.encode())


def pick_view(seed: int, epoch: int, key: str, views: int) -> int:
    """The view a sample shows in an epoch (0 when there is one view)."""
    return 0 if views <= 1 else _seed(seed, epoch, key_seed(key), 7) % views


def train_transform(policy: str, preprocess_cfg: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """The transform views 1..K-1 are made with, from the tower's preprocessing config (open_clip's own builder)."""
    from open_clip.transform import image_transform

    if policy not in POLICIES:
        raise ValueError(f"unknown view policy {policy!r}; choose from {', '.join(POLICIES)}")
    size = preprocess_cfg.get("size", 224)
    common = {"mean": preprocess_cfg.get("mean"), "std": preprocess_cfg.get("std"),
              "interpolation": preprocess_cfg.get("interpolation"), "resize_mode": preprocess_cfg.get("resize_mode")}
    if policy == "openclip":
        return image_transform(size, is_train=True, **common)
    crop = image_transform(size, is_train=True, aug_cfg={"scale": (0.5, 1.0)}, **common)
    return transforms.Compose([transforms.RandomHorizontalFlip(), crop])


def make_view(image: Any, key: str, view: int, seed: int, plain: Callable[[Any], torch.Tensor],
              train: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """View `view` of one image: the plain eval view for 0, else the seeded training transform."""
    if view == 0:
        return plain(image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(seed, key_seed(key), view))
        return train(image)


__all__ = ["POLICIES", "key_seed", "make_view", "pick_view", "train_transform"]
