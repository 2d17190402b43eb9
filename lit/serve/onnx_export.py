"""`lit export CHECKPOINT OUT --onnx`: a folder that onnxruntime alone runs (see lit.serve.onnx_predict).

The image encoder (with its normalization) goes to ONNX with a dynamic batch axis through
torch's TorchScript-based exporter (`dynamo=False`: it needs no onnxscript and handles
timm's and open_clip's towers); the class embeddings of the run's classes and templates are
stored in fp16, beside the categories (taxonomy), the preprocessing, the calibration and a
manifest. The export is then verified on the whole validation set of the run's raw shards:
ONNX image embeddings against torch's (max absolute difference, within `TOLERANCE`) and
top-1 predictions (ONNX with its fp16 classes against torch with fp32 classes) identical.
"""

from __future__ import annotations

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

from lit.configlib import ConfigError
from lit.data.folders import open_folder
from lit.io import atomic_write, file_sha256, write_json
from lit.log import logger
from lit.model import clip_api, preprocess_cfg
from lit.serve import onnx_predict as layout
from lit.serve.calibration import FILE as CALIBRATION_FILE
from lit.serve.calibration import Calibration
from lit.serve.images import Preprocessing, open_image
from lit.serve.torch_model import CheckpointModel

OPSET = 18
TOLERANCE = 1e-4
"""Largest absolute difference allowed between an ONNX and a torch image embedding (unit-norm vectors)."""


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
    """ONNX against torch on the validation images: embedding difference and top-1 agreement."""
    images: list[Image.Image] = []
    stats = {"images": 0, "max_abs_diff": 0.0, "top1_same": 0, "preprocess_max_abs_diff": 0.0}

    def flush() -> None:
        torch_x = torch.stack([checkpoint.preprocess(im) for im in images])
        onnx_x = np.stack([onnx.preprocess(im) for im in images])
        stats["preprocess_max_abs_diff"] = max(stats["preprocess_max_abs_diff"], float(np.abs(torch_x.numpy() - onnx_x).max()))
        t_emb = checkpoint.embed(torch_x).cpu().numpy()
        o_emb = onnx.embed(onnx_x)
        stats["max_abs_diff"] = max(stats["max_abs_diff"], float(np.abs(t_emb - o_emb).max()))
        t_top = (t_emb @ checkpoint.classifier.cpu().numpy().T).argmax(1)
        o_top = (o_emb @ onnx.class_embeddings.T).argmax(1)
        stats["top1_same"] += int((t_top == o_top).sum())
        stats["images"] += len(images)
        images.clear()

    for _, data in val_images(shards, limit):
        images.append(open_image(data))
        if len(images) == batch_size:
            flush()
    if images:
        flush()
    stats["tolerance"] = TOLERANCE
    stats["ok"] = stats["images"] > 0 and stats["max_abs_diff"] <= TOLERANCE and stats["top1_same"] == stats["images"]
    return stats


def export_onnx(ckpt: str | Path, out: str | Path, *, categories: str | Path | None = None, templates: Sequence[str] | None = None,
                verify_limit: int = 0) -> tuple[Path, dict[str, Any]]:
    """Write the export folder and verify it; returns (folder, verification). A failed verification raises."""
    start = time.perf_counter()
    model = CheckpointModel.load(ckpt, categories, templates, device="cpu")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pre = Preprocessing.of(preprocess_cfg(model.built.model))
    export_encoder(model.built.model, pre.size, out / layout.ENCODER)
    atomic_write(out / layout.CLASSES, lambda f: np.save(f, model.classifier.cpu().numpy().astype(np.float16)))
    write_json(out / layout.CATEGORIES, [c.to_json() for c in model.categories])
    write_json(out / layout.PREPROCESSING, pre.to_json())
    cal = Calibration.read(model.run_dir / CALIBRATION_FILE)
    if cal is not None and model.temperature() != 1.0:
        cal.save(out)
    else:
        (out / CALIBRATION_FILE).unlink(missing_ok=True)
        logger.warning("no calibration for %s: the export predicts with T=1 (run `lit calibrate` and export again)", model.checkpoint)
    manifest: dict[str, Any] = {
        "format": layout.FORMAT, "checkpoint": str(model.checkpoint), "step": model.step, "model": model.cfg.model.name,
        "logit_scale": model.logit_scale, "embed_dim": int(model.classifier.shape[1]), "classes": len(model.categories),
        "templates": list(model.templates), "opset": OPSET, "torch": torch.__version__, "temperature": model.temperature(),
    }
    write_json(out / layout.MANIFEST, manifest)
    onnx = layout.OnnxModel.load(out)
    shards = open_folder(model.cfg.data.val_shards, "data.val_shards", "lit shards").urls
    check = verify(model, onnx, shards, limit=verify_limit)
    manifest.update(verification=check, files={p.name: file_sha256(p) for p in sorted(out.iterdir())
                                               if p.is_file() and p.name != layout.MANIFEST},
                    seconds=round(time.perf_counter() - start, 2))
    write_json(out / layout.MANIFEST, manifest)
    if not check["ok"]:
        raise ConfigError(str(out), "--onnx", f"the export disagrees with torch on the validation images: {check}")
    return out, check


__all__ = ["OPSET", "TOLERANCE", "ImageEncoder", "export_encoder", "export_onnx", "val_images", "verify"]
