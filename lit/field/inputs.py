"""Image files as a torch Dataset and DataLoader: decoded in workers, bad files passed on as skip markers.

Each item is (index, tensor or None, reason): a file that is not a readable image never stops
the loader; the batch collects the good images and the skipped ones with their reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lit.field.images import BadImage, open_image


class ImageFiles(Dataset[tuple[int, "torch.Tensor | None", str]]):
    """Preprocessed images of `paths`; a bad file gives (index, None, reason)."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Any], torch.Tensor]) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return index, self.preprocess(open_image(self.paths[index])), ""
        except BadImage as err:
            return index, None, str(err)


@dataclass
class Batch:
    """Good images [B, 3, H, W] with their indices, and the (index, reason) of the bad ones."""

    indices: list[int]
    images: torch.Tensor | None
    bad: list[tuple[int, str]]


def collate(items: list[tuple[int, torch.Tensor | None, str]]) -> Batch:
    good = [(i, t) for i, t, _ in items if t is not None]
    return Batch([i for i, _ in good], torch.stack([t for _, t in good]) if good else None,
                 [(i, r) for i, t, r in items if t is None])


def image_loader(paths: Sequence[Path], preprocess: Callable[[Any], torch.Tensor], batch_size: int,
                 workers: int) -> DataLoader[Any]:
    """Batches of the files in order, decoded by `workers` processes (0: in this one)."""
    return DataLoader(ImageFiles(paths, preprocess), batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate, persistent_workers=False)


__all__ = ["Batch", "ImageFiles", "collate", "image_loader"]
