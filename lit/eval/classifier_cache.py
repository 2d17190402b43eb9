"""Class embeddings kept on disk, so that `lit predict` builds them once per checkpoint, classes and templates.

Building them runs the text tower over every class and template: about a minute for the
10,000 iNat classes with one template on a CPU (over an hour with 80), where predicting an
image takes a second. A file's key is everything the embeddings depend on: the checkpoint
file (path, size, modification time: every save is a new file) and the exact texts. A file
whose key differs is never used; the newest `KEEP` files are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lit.data.inat import Category
from lit.eval.templates import TemplateSet
from lit.io import atomic_write
from lit.log import logger

FORMAT = 1
KEEP = 4


def classifier_key(checkpoint: Path, categories: Sequence[Category], sets: Sequence[TemplateSet]) -> dict[str, Any]:
    """What the class embeddings of `checkpoint` for these classes and templates depend on."""
    st = checkpoint.stat()
    texts = hashlib.sha256()
    for category in categories:
        for tset in sets:
            texts.update(json.dumps([category.id, tset.name, tset.texts(category)], ensure_ascii=False).encode() + b"\n")
    return {"format": FORMAT, "checkpoint": str(checkpoint.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "classes": len(categories), "texts_sha256": texts.hexdigest()}


def cache_dir(checkpoint: Path) -> Path:
    """RUN/eval/classifiers for RUN/checkpoints/step-N.pt; else a `classifiers` folder beside the file."""
    parent = checkpoint.resolve().parent
    return parent.parent / "eval" / "classifiers" if parent.name == "checkpoints" else parent / "classifiers"


def load_or_build(folder: Path, key: dict[str, Any], build: Callable[[], torch.Tensor],
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The embeddings saved under `key` in `folder`, or `build()`'s, saved there for the next call."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = folder / f"classifier-{digest}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch.load of a torn file raises many kinds; a cache only costs a rebuild
            logger.warning("%s is unreadable (%s): building the class embeddings again", path, err)
        else:
            if isinstance(saved, dict) and saved.get("key") == key:
                os.utime(path)  # most recently used: pruned last
                logger.info("class embeddings of %d classes from %s", len(saved["weights"]), path)
                return saved["weights"]
            logger.warning("%s was saved for other inputs: building the class embeddings again", path)
    weights = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save({"key": key, "weights": weights.cpu()}, f))
        for old in sorted(folder.glob("classifier-*.pt"), key=lambda p: p.stat().st_mtime_ns)[:-KEEP]:
            old.unlink(missing_ok=True)
    except OSError as err:
        logger.warning("could not keep the class embeddings in %s (%s): the next call builds them again", folder, err)
    return weights


__all__ = ["KEEP", "cache_dir", "classifier_key", "load_or_build"]
