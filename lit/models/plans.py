"""What `lit models prepare` plans to write: one image tower and one text tower, each with its source and target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMM_PREFIX = "timm:"
"""`model.image_pretrained: timm:MODEL.TAG` names a timm tower (lit.models.timm_tower)."""


def timm_label(name: str, tag: str) -> str:
    """How a timm tower is named in a job: timm:MODEL.TAG."""
    return f"{TIMM_PREFIX}{name}.{tag}"


@dataclass(frozen=True)
class ImagePlan:
    """An image tower to prepare: open_clip NAME/TAG (or timm MODEL.TAG), its pretrained config and where it goes."""

    name: str
    tag: str
    pretrained_cfg: dict[str, Any]
    target: Path
    kind: str = "open_clip"
    """`open_clip` (NAME/TAG) or `timm` (timm:MODEL.TAG, lit.models.timm_tower)."""

    @property
    def label(self) -> str:
        return timm_label(self.name, self.tag) if self.kind == "timm" else f"{self.name}/{self.tag}"

    @property
    def quick_gelu(self) -> bool:
        return bool(self.pretrained_cfg.get("quick_gelu", False))


@dataclass(frozen=True)
class TextPlan:
    """A Hugging Face text tower to prepare: its repo, the folder it goes to and the config value naming it."""

    repo_id: str
    target: Path
    folder_value: str


__all__ = ["TIMM_PREFIX", "ImagePlan", "TextPlan", "timm_label"]
