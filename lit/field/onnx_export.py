"""`lit export CHECKPOINT OUT --onnx`: a folder that onnxruntime alone runs (see lit.field.onnx_predict).

The image encoder (with its normalization) goes to ONNX with a dynamic batch axis through
torch's dynamo exporter; the class embeddings of the run's classes and templates are stored in
fp16, beside the categories (taxonomy), the preprocessing, the calibration and a manifest (which holds
the logit scale and bias: a sigmoid model's scores are scale x cosine + bias, 0 without one).
Everything is written into a staging folder beside OUT and verified there on the run's
validation images (lit.field.onnx_verify: embeddings within a tolerance, class scores within
the bound fp16 allows, top-1 identical wherever torch's margin exceeds twice that bound); only
a verified export is renamed to OUT, so a refused one leaves OUT as it was. When the run has a
location prior, prior.onnx goes with it, verified against torch within 1e-5 before anything is
installed (lit.field.onnx_prior).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lit.data.folders import open_folder
from lit.errors import DataError, UsageError, VerificationError
from lit.eval.calibration import FILE as CALIBRATION_FILE
from lit.eval.calibration import Calibration
from lit.field import onnx_predict as layout
from lit.field.images import Preprocessing, open_image
from lit.field.onnx_prior import describe_prior_failure, prior_weight, verify_export, write_prior
from lit.field.onnx_verify import TOLERANCE, ScoreCheck, check_folder, describe_failure
from lit.field.torch_model import CheckpointModel
from lit.io import atomic_write, file_sha256, fsync_dir, write_json
from lit.log import logger
from lit.model import clip_api, preprocess_cfg

OPSET = 18


class ImageEncoder(nn.Module):
    """The image tower and the normalization: preprocessed images → unit-norm embeddings."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(clip_api(self.model).encode_image(image).float(), dim=-1)


def export_encoder(model: nn.Module, size: tuple[int, int], path: Path) -> None:
    """The image encoder as ONNX at `path` (dynamic batch)."""
    encoder = ImageEncoder(model).eval()
    dummy = torch.zeros(2, 3, *size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(encoder, (dummy,), dynamo=True, input_names=["image"], output_names=["embedding"],
                                    dynamic_shapes=({0: batch},), opset_version=OPSET, external_data=False, verbose=False)
    if program is None:  # pragma: no cover - the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no program")
    atomic_write(path, lambda f: f.write(program.model_proto.SerializeToString()))


def val_images(shards: Sequence[str], limit: int = 0) -> Iterator[tuple[str, bytes]]:
    """(key, image bytes) of every sample in the raw validation shards, in order (`limit` > 0: the first ones)."""
    n = 0
    for url in shards:
        with tarfile.open(url) as tar:
            for member in tar:
                if member.isfile() and member.name.rsplit(".", 1)[-1] in ("jpg", "jpeg", "png"):
                    f = tar.extractfile(member)
                    if f is not None:
                        yield member.name.rsplit(".", 1)[0], f.read()
                        n += 1
                        if limit and n >= limit:
                            return


def verify(checkpoint: CheckpointModel, onnx: layout.OnnxModel, shards: Sequence[str], batch_size: int = 64,
           limit: int = 0) -> dict[str, Any]:
    """ONNX against torch on the validation images (lit.field.onnx_verify.ScoreCheck); memory: one batch x classes."""
    check = ScoreCheck(logit_scale=checkpoint.logit_scale)
    torch_classes = checkpoint.classifier.cpu().numpy()
    keys: list[str] = []
    images: list[Image.Image] = []

    def flush() -> None:
        torch_x = torch.stack([checkpoint.preprocess(im) for im in images])
        onnx_x = np.stack([onnx.preprocess(im) for im in images])
        check.add(list(keys), checkpoint.embed(torch_x).cpu().numpy(), torch_classes, onnx.embed(onnx_x),
                  onnx.class_embeddings, float(np.abs(torch_x.numpy() - onnx_x).max()))
        images.clear()
        keys.clear()

    for key, data in val_images(shards, limit):
        keys.append(key)
        images.append(open_image(data))
        if len(images) == batch_size:
            flush()
    if images:
        flush()
    return check.result()


def _staging(out: Path) -> Path:
    """A fresh staging folder beside `out`; staging folders of exports whose process is gone are removed."""
    for old in out.parent.glob(f".{out.name}.staging-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_target(out: Path) -> None:
    """OUT may be new, empty or an earlier export (replaced); any other folder or file is not overwritten."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / layout.MANIFEST).is_file())):
        raise UsageError("out", f"{out} exists and is not an ONNX export folder: choose another OUT or remove it "
                                     "(an earlier export there would be replaced)")


def _install(stage: Path, out: Path) -> None:
    """Rename the verified staging folder to `out`, replacing an earlier export."""
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)


def export_onnx(ckpt: str | Path, out: str | Path, *, categories: str | Path | None = None, templates: Sequence[str] | None = None,
                verify_limit: int = 0, prior: bool = True) -> tuple[Path, dict[str, Any]]:
    """Write the export, verify it, and only then put it at `out`; returns (folder, verification of the image side).

    With `prior` (the default) the run's location prior, when it has one, goes with it (manifest `prior`).
    A failed verification raises VerificationError (what failed and by how much) and leaves `out` as it was.
    """
    start = time.perf_counter()
    out = Path(out).resolve()
    _check_target(out)
    model = CheckpointModel.load(ckpt, categories, templates, device="cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = _staging(out)
    try:
        check = _write_and_verify(model, stage, verify_limit, start, out, prior)
        if not check["ok"]:
            raise VerificationError(str(out), describe_failure(check) + f"; nothing was written to {out}")
        check_folder(stage, layout.REQUIRED, layout.OPTIONAL)
        _install(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out, check


def _write_and_verify(model: CheckpointModel, stage: Path, verify_limit: int, start: float, out: Path,
                      with_prior: bool = True) -> dict[str, Any]:
    """Every file of the export in `stage`, verified; the manifest records the verification and the files' sha256.

    The prior (cheap) is verified before the images: a prior that fails raises VerificationError at once.
    """
    if with_prior and model.prior_problem:
        raise DataError(f"{model.prior_problem}; or export without it: lit export RUN OUT --onnx --no-prior")
    prior_path = model.prior.path if with_prior and model.prior is not None else None  # found as the torch engine finds it
    ids = [c.id for c in model.categories]
    prior, prior_section = None, None
    if prior_path is not None:  # first: a prior that lacks an exported class stops the export before the slow part
        prior, prior_section = write_prior(prior_path, ids, stage, OPSET, prior_weight(model.run_dir, model.checkpoint, model.step))
    pre = Preprocessing.of(preprocess_cfg(model.built.model))
    export_encoder(model.built.model, pre.size, stage / layout.ENCODER)
    atomic_write(stage / layout.CLASSES, lambda f: np.save(f, model.classifier.cpu().numpy().astype(np.float16)))
    write_json(stage / layout.CATEGORIES, [c.to_json() for c in model.categories])
    write_json(stage / layout.PREPROCESSING, pre.to_json())
    cal = Calibration.read(model.run_dir / CALIBRATION_FILE)
    if cal is not None and model.temperature() != 1.0:
        cal.save(stage)
    else:
        logger.warning("no calibration for %s: the export predicts with T=1 (run `lit calibrate` and export again)", model.checkpoint)
    manifest: dict[str, Any] = {
        "format": layout.FORMAT, "checkpoint": str(model.checkpoint), "step": model.step, "model": model.cfg.model.name,
        "logit_scale": model.logit_scale, "logit_bias": model.logit_bias, "embed_dim": int(model.classifier.shape[1]),
        "classes": len(model.categories),
        "templates": list(model.templates), "opset": OPSET, "torch": torch.__version__, "temperature": model.temperature(),
    }
    if prior_section is not None:
        manifest[layout.PRIOR_KEY] = prior_section
    write_json(stage / layout.MANIFEST, manifest)
    onnx = layout.OnnxModel.load(stage, check=False)
    if prior is not None and prior_section is not None:
        prior_check = verify_export(prior, ids, onnx.log_prior, model.cfg)
        prior_section["verification"] = prior_check
        if not prior_check["ok"]:
            raise VerificationError(str(out), describe_prior_failure(prior_check) + f"; nothing was written to {out}")
    shards = open_folder(model.cfg.data.val_shards, "data.val_shards", "lit shards").urls
    check = verify(model, onnx, shards, limit=verify_limit)
    manifest.update(verification=check, files={p.name: file_sha256(p) for p in sorted(stage.iterdir())
                                               if p.is_file() and p.name != layout.MANIFEST},
                    seconds=round(time.perf_counter() - start, 2))
    write_json(stage / layout.MANIFEST, manifest)
    return check


__all__ = ["OPSET", "TOLERANCE", "ImageEncoder", "export_encoder", "export_onnx", "val_images", "verify"]
