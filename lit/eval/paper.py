"""The paper's Table 1: top-1 / top-5 on the iNat2021 validation set, as data (percent; None: not reported)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PaperRow:
    """One result row of the paper's Table 1."""

    method: str
    backbone: str
    top1: float
    top5: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PAPER_TABLE: tuple[PaperRow, ...] = (
    PaperRow("LiT OpenCLIP (zero-shot)", "ViT", 63.28, 87.48),
    PaperRow("ImageNet-pretrained", "ResNet50", 65.4, 85.1),
    PaperRow("Full training", "ResNet50", 61.6, 81.8),
    PaperRow("Full training", "ResNet34", 31.02),
    PaperRow("Full training", "ResNet18", 26.35),
    PaperRow("CoMatch+CCSSL", "ResNet50", 39.85, 63.68),
    PaperRow("2D-DWT", "WaveMix-Lite", 33.23),
)


PAPER_WARMUP: dict[int, tuple[float, float] | None] = {500: None, 1000: (63.28, 87.48), 2000: (61.96, 86.71)}
"""The paper's warm-up runs: train.warmup_steps → (top-1, top-5) after 18 epochs; None: the run diverged."""


def paper_table() -> list[dict[str, Any]]:
    """Table 1 as JSON-ready rows (written into results.json)."""
    return [row.to_json() for row in PAPER_TABLE]


__all__ = ["PAPER_TABLE", "PAPER_WARMUP", "PaperRow", "paper_table"]
