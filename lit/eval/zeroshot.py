"""The zero-shot classifier: one unit-norm text embedding per class, built with open_clip.

Classes are cut into fixed blocks (independent of the world size) dealt round-robin to the
ranks; each rank runs open_clip's `build_zero_shot_classifier` on its blocks, in forwards of
at most `text_batch` texts, and an all-reduce sum assembles the whole matrix on every rank.
Memory stays bounded at 10,000 classes x 80 templates, and one rank builds exactly the
matrix that N ranks build (same blocks, same forwards).

Several template sets are combined with equal weight: each set's class embedding (the
normalized mean over its templates, as open_clip computes it) is summed and re-normalized,
so 80 `openai` templates do not drown the single `paper` caption.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from open_clip import build_zero_shot_classifier
from torch import nn

from lit import dist
from lit.data.inat import Category
from lit.eval.templates import TemplateSet
from lit.model import causal_mask_for, clip_api, pad_id, trim_supported, trim_tokens

CLASS_BLOCK = 256
TEXT_BATCH = 512


class TrimmedText(nn.Module):
    """`encode_text` on token batches cut after their last non-padding column (exact, and ~3x faster).

    open_clip pads every text to the context length; the project's trimming helpers make the
    shorter batch give the same embeddings (attention mask for HF towers, causal mask slice
    for open_clip's own text transformer).
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.trim = trim_supported(model)
        self.pad = pad_id(model)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts))
        return trim_tokens(tokens, self.pad) if self.trim else tokens

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        with causal_mask_for(self.model, tokens.shape[1]):
            return clip_api(self.model).encode_text(tokens, normalize=normalize).float()


def class_blocks(num_classes: int, block: int = CLASS_BLOCK) -> list[range]:
    """The fixed class blocks; rank r builds blocks r, r + world, ..."""
    return [range(i, min(i + block, num_classes)) for i in range(0, num_classes, block)]


def build_classifier(
    model: nn.Module,
    tokenizer: Callable[..., torch.Tensor],
    categories: Sequence[Category],
    sets: Sequence[TemplateSet],
    *,
    device: torch.device | str | None = None,
    rank: int = 0,
    world: int = 1,
    class_block: int = CLASS_BLOCK,
    text_batch: int = TEXT_BATCH,
) -> torch.Tensor:
    """Class embeddings [num_classes, dim], rows unit-norm, in the order of `categories`.

    Collective when `world` > 1: every rank must call it (inside an initialized process group).
    The model should be in eval mode.
    """
    if world > 1 and not tdist.is_initialized():
        raise RuntimeError("build_classifier with world > 1 needs an initialized process group (lit.dist.init)")
    if not categories or not sets:
        raise ValueError("build_classifier needs at least one category and one template set")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    text = TrimmedText(model, tokenizer)
    blocks = class_blocks(len(categories), class_block)
    weights: torch.Tensor | None = None
    for index, block in enumerate(blocks):
        if index % world != rank:
            continue
        classes = list(categories[block.start:block.stop])
        per_set = []
        for tset in sets:
            per_forward = max(1, text_batch // len(tset.templates))
            # open_clip accepts callables as templates; ours take the whole Category, not a name.
            per_set.append(build_zero_shot_classifier(
                text, text.tokenize, classes, list(tset.templates),
                num_classes_per_batch=per_forward, device=device,
            ).T)  # [classes, dim]
        summed = torch.stack(per_set).sum(dim=0)
        if weights is None:
            weights = torch.zeros(len(categories), summed.shape[1], device=device, dtype=torch.float32)
        weights[block.start:block.stop] = F.normalize(summed.float(), dim=-1)
    if weights is None:  # this rank got no block: learn the width from one text
        probe = text.encode_text(text.tokenize(["a"]).to(device))
        weights = torch.zeros(len(categories), probe.shape[1], device=device, dtype=torch.float32)
    if world > 1:
        dist.all_reduce_sum(weights)
    return weights


__all__ = ["CLASS_BLOCK", "TEXT_BATCH", "TrimmedText", "build_classifier", "class_blocks"]
