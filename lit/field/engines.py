"""Open what the user named: a checkpoint or run directory (torch), or an ONNX export folder (onnxruntime, no torch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from lit.data.inat import Category
from lit.errors import UsageError
from lit.field.batch import LogitBatch


class Predictor(Protocol):
    """A model that scores images (lit.field.torch_model.CheckpointModel, lit.field.onnx_predict.OnnxModel)."""

    @property
    def categories(self) -> list[Category]: ...

    def batches(self, paths: Sequence[Path], batch_size: int, workers: int) -> Iterator[LogitBatch]: ...

    def logits_of(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def temperature(self) -> float: ...

    def log_prior(self, places: np.ndarray) -> np.ndarray | None:
        """log p(present) [N, C] float32 at places [N, 3] (lat, lon, day of year; NaN unknown), None without a prior."""

    @property
    def prior_weight(self) -> float:
        """The prior's weight in the answer (lit.prior.combine.weigh)."""

    def describe(self) -> dict[str, Any]: ...


def load_predictor(checkpoint: str | Path | None = None, model: str | Path | None = None, *,
                   categories: str | Path | None = None, templates: Sequence[str] | None = None, device: str = "auto",
                   threads: int | None = None) -> Predictor:
    """The predictor of a checkpoint (or run directory) or of an ONNX export folder; exactly one is given."""
    if (checkpoint is None) == (model is None):
        raise UsageError("checkpoint/model", "give a checkpoint (or run directory) or an ONNX export folder, not both")
    if model is not None:
        if categories or templates:
            raise UsageError("categories/templates", f"{model} is an ONNX export: its classes and templates are fixed "
                                                               "at export time (`lit export CHECKPOINT OUT --onnx --categories ...`)")
        from lit.field.onnx_predict import OnnxModel, default_threads

        return OnnxModel.load(model, threads or default_threads())
    from lit.field.torch_model import CheckpointModel

    return CheckpointModel.load(checkpoint or "", categories, templates, device)


__all__ = ["Predictor", "load_predictor"]
