"""An exported model (`lit export CHECKPOINT OUT --onnx`) run with onnxruntime, numpy and PIL only: no torch.

The folder holds image_encoder.onnx (unit-norm image embeddings, dynamic batch),
class_embeddings.npy (fp16, unit-norm rows), categories.json (the classes and their taxonomy,
in row order), preprocessing.json, calibration.json and manifest.json (logit scale and bias, what
was exported and how it was verified; an export made before sigmoid models has no `logit_bias`: 0).
When the run had a location prior, prior.onnx maps places [N, 3] (latitude, longitude, day of
year; NaN unknown) to log p(present) [N, C] of the same classes, and the manifest's `prior` holds
its weight and verification (lit.field.onnx_prior): `OnnxModel.log_prior` and `prior_weight` give
what the scorer weighs answers by. An export made before the prior existed has neither and answers
from the image alone (log_prior is None).
tests/field check that this module never imports torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lit.configlib import ConfigError
from lit.data.inat import Category, parse_category
from lit.eval.calibration import FILE as CALIBRATION_FILE
from lit.eval.calibration import temperature_for
from lit.field.batch import LogitBatch
from lit.field.images import BadImage, Preprocessing, open_image
from lit.field.onnx_verify import MANIFEST, check_folder

FORMAT = 1
ENCODER = "image_encoder.onnx"
CLASSES = "class_embeddings.npy"
CATEGORIES = "categories.json"
PREPROCESSING = "preprocessing.json"
REQUIRED = (ENCODER, CLASSES, CATEGORIES, PREPROCESSING)
"""The files every export holds and its manifest lists with their sha256 (calibration.json only when calibrated)."""
PRIOR = "prior.onnx"
"""The location prior, when the run had one: places [N, 3] → log p(present) [N, C] in class order."""
PRIOR_KEY = "prior"
"""The manifest's section on the prior (its source, weight and verification)."""
OPTIONAL = ((PRIOR, PRIOR_KEY),)
"""Parts an export may carry: present, they are listed with their sum and carry a passed verification of their own."""
PRIOR_INPUT = "places"
PRIOR_OUTPUT = "log_presence"
DEFAULT_PRIOR_WEIGHT = 1.0
"""lit.prior.combine.DEFAULT_WEIGHT, without importing torch (a test checks they are equal)."""


def is_export(path: str | Path) -> bool:
    """Whether `path` is a folder written by the ONNX export."""
    return (Path(path) / MANIFEST).is_file() and (Path(path) / ENCODER).is_file()


def session_options(threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


@dataclass
class OnnxModel:
    """An export folder ready to predict: session, class embeddings, categories, preprocessing, logit scale and bias."""

    folder: Path
    session: Any
    class_embeddings: np.ndarray  # [C, D] float32 (stored fp16)
    categories_list: list[Category]
    preprocess: Preprocessing
    logit_scale: float
    manifest: dict[str, Any]
    prior_session: Any = None  # onnxruntime session of prior.onnx; None: the export carries no prior
    logit_bias: float = 0.0  # a sigmoid model's (train.loss=siglip); 0.0 for a CLIP-loss model

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None, *, check: bool = True) -> OnnxModel:
        """Open an export folder; a missing or foreign file is a ConfigError naming it.

        With `check` (always, except for the export's own verification) the folder must have passed
        its verification and match its manifest's sha256 sums (lit.field.onnx_verify.check_folder):
        a refused, unverified or altered export is a VerificationError, never used.
        """
        import onnxruntime as ort

        folder = Path(folder)
        if not is_export(folder):
            raise ConfigError(str(folder), "model", f"not an ONNX export (no {MANIFEST} and {ENCODER}): "
                                                      "write one with `lit export CHECKPOINT OUT --onnx`")
        if check:
            check_folder(folder, REQUIRED, OPTIONAL)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if manifest.get("format") != FORMAT:
                raise ConfigError(str(folder / MANIFEST), "format", f"{manifest.get('format')!r}; this version reads {FORMAT}: "
                                                                    "export the checkpoint again")
            raw = json.loads((folder / CATEGORIES).read_text())
            categories = [parse_category(r, str(folder / CATEGORIES), i) for i, r in enumerate(raw)]
            preprocess = Preprocessing.of(json.loads((folder / PREPROCESSING).read_text()))
            classes = np.load(folder / CLASSES).astype(np.float32)
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(str(folder), "model", f"a file of the export cannot be read ({err}): export again") from err
        if classes.shape[0] != len(categories):
            raise ConfigError(str(folder), "model", f"{CLASSES} has {classes.shape[0]} rows for {len(categories)} classes: export again")
        session = ort.InferenceSession(str(folder / ENCODER), sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
        prior = open_prior(folder, len(categories), threads) if PRIOR_KEY in manifest else None
        return cls(folder, session, classes, categories, preprocess, float(manifest["logit_scale"]), manifest, prior,
                   float(manifest.get("logit_bias", 0.0)))

    @property
    def categories(self) -> list[Category]:
        return self.categories_list

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Unit-norm image embeddings [N, D] of preprocessed images [N, 3, H, W] float32."""
        return np.asarray(self.session.run(None, {self.session.get_inputs()[0].name: images})[0], dtype=np.float32)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """logit_scale x cosine(image, class) + logit_bias: [N, C] float32."""
        logits = self.logit_scale * self.embed(images) @ self.class_embeddings.T
        return logits + np.float32(self.logit_bias) if self.logit_bias else logits

    def logits_of(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Logits of opened RGB images."""
        return self.logits(np.stack([self.preprocess(im) for im in images]))

    def _load(self, path: Path) -> np.ndarray | str:
        try:
            return self.preprocess(open_image(path))
        except BadImage as err:
            return str(err)

    def batches(self, paths: Sequence[Path], batch_size: int, workers: int) -> Iterator[LogitBatch]:
        """Logits of the readable files, batch by batch; `workers` threads decode (PIL releases the GIL)."""
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for start in range(0, len(paths), batch_size):
                loaded = list(pool.map(self._load, paths[start:start + batch_size]))
                good = [(start + i, x) for i, x in enumerate(loaded) if isinstance(x, np.ndarray)]
                bad = [(start + i, x) for i, x in enumerate(loaded) if isinstance(x, str)]
                logits = (self.logits(np.stack([x for _, x in good])) if good
                          else np.zeros((0, len(self.categories_list)), np.float32))
                yield [i for i, _ in good], logits, bad

    def temperature(self) -> float:
        """The calibration exported with the model (1.0 without one)."""
        return temperature_for(self.folder) if (self.folder / CALIBRATION_FILE).is_file() else 1.0

    def log_prior(self, places: np.ndarray) -> np.ndarray | None:
        """log p(present) [N, C] float32 at places [N, 3] (latitude, longitude, day of year; NaN where unknown).

        Columns in class order. Rows without latitude and longitude are computed as the graph encodes them
        (zeros); the scorer leaves those rows image-only. None when the export carries no prior.
        """
        if self.prior_session is None:
            return None
        return run_prior(self.prior_session, places, len(self.categories_list))

    @property
    def prior_weight(self) -> float:
        """The prior's exponent: fit by `lit calibrate` for the exported checkpoint, else the default (manifest `prior.weight`)."""
        prior = self.manifest.get(PRIOR_KEY)
        return float(prior["weight"]) if isinstance(prior, dict) and "weight" in prior else DEFAULT_PRIOR_WEIGHT

    def describe(self) -> dict[str, Any]:
        return {"kind": "onnx", "folder": str(self.folder), "checkpoint": self.manifest.get("checkpoint"),
                "step": self.manifest.get("step"), "classes": len(self.categories_list),
                "templates": self.manifest.get("templates", [])}


def open_prior(folder: Path, classes: int, threads: int | None = None) -> Any:
    """An onnxruntime session of the export's prior.onnx; a missing file or one of another shape is a ConfigError."""
    import onnxruntime as ort

    path = folder / PRIOR
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own error types for a missing or unreadable model
        raise ConfigError(str(path), "model", f"the export's location prior cannot be opened ({err}): export again") from err
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if ([i.name for i in inputs], [o.name for o in outputs]) != ([PRIOR_INPUT], [PRIOR_OUTPUT]) or outputs[0].shape[-1] != classes:
        raise ConfigError(str(path), "model", f"not a prior of this export ({[i.name for i in inputs]} → "
                                              f"{[(o.name, o.shape) for o in outputs]}, {classes} classes expected): export again")
    return session


def run_prior(session: Any, places: np.ndarray, classes: int) -> np.ndarray:
    """log p(present) [N, C] float32 of places [N, 3] through a prior.onnx session (N = 0 gives [0, C])."""
    x = np.ascontiguousarray(places, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"places must be [N, 3] (latitude, longitude, day of year), got shape {x.shape}")
    if len(x) == 0:
        return np.zeros((0, classes), np.float32)
    return np.asarray(session.run(None, {PRIOR_INPUT: x})[0], dtype=np.float32)


def default_threads() -> int:
    """onnxruntime threads: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


__all__ = ["CATEGORIES", "CLASSES", "DEFAULT_PRIOR_WEIGHT", "ENCODER", "FORMAT", "MANIFEST", "OPTIONAL", "PREPROCESSING", "PRIOR",
           "PRIOR_INPUT", "PRIOR_KEY", "PRIOR_OUTPUT", "REQUIRED", "OnnxModel", "default_threads", "is_export", "open_prior",
           "run_prior", "session_options"]
