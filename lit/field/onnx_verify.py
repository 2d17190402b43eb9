"""What makes an ONNX export trustworthy, with numpy alone: the check against torch, and the check before use.

**Against torch** (`ScoreCheck`, fed batch by batch by lit.field.onnx_export): the export can
change two things, the image embeddings (another runtime, numpy preprocessing) and the class
embeddings (stored in fp16). So it is checked on exactly those:

- image embeddings: the largest absolute difference of any component is within `TOLERANCE`;
- class scores (logit_scale x cosine): for unit-norm vectors, the ONNX score of any image and
  class differs from torch's by at most

      bound = logit_scale x (|e_onnx - e_torch|_2 x (1 + u) + u + D x 2^-25 + 2 x D x 2^-24)

  where u = 2^-11 is fp16's unit roundoff (|c16 - c32|_2 <= u |c32|_2 for a unit row), D x 2^-25
  covers components in fp16's subnormal range, 2 x D x 2^-24 the float32 rounding of both dot
  products of length D, and |e_onnx - e_torch|_2 is the largest measured embedding difference. The largest measured score difference must be within that bound;
- top-1: two classes can swap only when torch's margin between them is at most 2 x bound. So
  top-1 must agree on every image whose torch margin (first minus second score) exceeds
  2 x bound; images inside it are near-ties, counted and reported (with 10,000 classes they are
  common), never failures.

**Before use** (`check_folder`, called by OnnxModel.load): the manifest must exist, be of this
format, carry a passed verification, and every file it lists must match its sha256; a location
prior (prior.onnx, lit.field.onnx_prior) must be listed and carry its own passed verification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit.errors import VerificationError
from lit.io import file_sha256

TOLERANCE = 1e-4
"""Largest absolute difference allowed between an ONNX and a torch image embedding component (unit-norm vectors)."""
FP16_UNIT_ROUNDOFF = 2.0 ** -11
FP16_SUBNORMAL_STEP = 2.0 ** -25
"""Half the spacing of fp16 subnormals: the largest rounding error of a component below 2^-14."""
FP32_UNIT_ROUNDOFF = 2.0 ** -24
MAX_LISTED = 10
"""How many example keys a report lists."""

MANIFEST = "manifest.json"
FIX = "export it again with `lit export CHECKPOINT OUT --onnx`"


def score_bound(logit_scale: float, embed_l2: float, dim: int) -> float:
    """The largest difference of any class score that the export's precision allows (module docstring)."""
    u = FP16_UNIT_ROUNDOFF
    return float(logit_scale * (embed_l2 * (1 + u) + u + dim * FP16_SUBNORMAL_STEP + 2 * dim * FP32_UNIT_ROUNDOFF))


@dataclass
class ScoreCheck:
    """Accumulates the comparison of ONNX against torch, one batch at a time (memory: one batch x classes)."""

    logit_scale: float
    images: int = 0
    embed_max_abs: float = 0.0
    embed_max_l2: float = 0.0
    score_max_abs: float = 0.0
    preprocess_max_abs: float = 0.0
    top1_same: int = 0
    near_ties: int = 0
    near_tie_flips: int = 0
    margins: list[np.ndarray] = field(default_factory=list)
    flips: list[tuple[str, float]] = field(default_factory=list)  # (key, torch margin) of each top-1 disagreement
    dim: int = 0

    def add(self, keys: list[str], torch_emb: np.ndarray, torch_classes: np.ndarray, onnx_emb: np.ndarray,
            onnx_classes: np.ndarray, preprocess_diff: float = 0.0) -> None:
        """One batch: embeddings [N, D] of both engines and their class embeddings [C, D] (torch fp32, ONNX as stored)."""
        diff = onnx_emb.astype(np.float64) - torch_emb.astype(np.float64)
        self.dim = int(torch_emb.shape[1])
        self.embed_max_abs = max(self.embed_max_abs, float(np.abs(diff).max(initial=0.0)))
        self.embed_max_l2 = max(self.embed_max_l2, float(np.linalg.norm(diff, axis=1).max(initial=0.0)))
        self.preprocess_max_abs = max(self.preprocess_max_abs, preprocess_diff)
        t_scores = self.logit_scale * (torch_emb.astype(np.float32) @ torch_classes.astype(np.float32).T)
        o_scores = self.logit_scale * (onnx_emb.astype(np.float32) @ onnx_classes.astype(np.float32).T)
        self.score_max_abs = max(self.score_max_abs, float(np.abs(o_scores - t_scores).max(initial=0.0)))
        if t_scores.shape[1] >= 2:
            top2 = np.partition(t_scores, -2, axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
        else:
            margin = np.full(len(t_scores), np.inf, np.float32)
        t_top, o_top = t_scores.argmax(1), o_scores.argmax(1)
        same = t_top == o_top
        self.top1_same += int(same.sum())
        self.images += len(keys)
        self.margins.append(margin.astype(np.float32))
        self.flips += [(keys[i], float(margin[i])) for i in np.flatnonzero(~same)]

    @property
    def bound(self) -> float:
        return score_bound(self.logit_scale, self.embed_max_l2, self.dim)

    def result(self) -> dict[str, Any]:
        """The verification as the manifest records it; `ok` and, when not ok, `failures` (what failed and by how much)."""
        bound = self.bound
        margins = np.concatenate(self.margins) if self.margins else np.zeros(0, np.float32)
        tie = 2 * bound
        near = int((margins <= tie).sum())
        decisive_flips = [(k, m) for k, m in self.flips if m > tie]
        failures: list[str] = []
        if self.images == 0:
            failures.append("no validation image was read: nothing was verified (check data.val_shards)")
        if self.embed_max_abs > TOLERANCE:
            failures.append(f"image embeddings differ from torch's by up to {self.embed_max_abs:.3g} per component "
                            f"(tolerance {TOLERANCE:.0e})")
        if self.score_max_abs > bound:
            failures.append(f"class scores differ from torch's by up to {self.score_max_abs:.3g}, more than the {bound:.3g} "
                            "that fp16 class embeddings and the measured embedding difference allow")
        if decisive_flips:
            listed = ", ".join(f"{k} (margin {m:.3g})" for k, m in decisive_flips[:MAX_LISTED])
            failures.append(f"top-1 differs from torch's on {len(decisive_flips)} image(s) whose torch margin exceeds "
                            f"{tie:.3g} (twice the score bound): {listed}")
        return {
            "images": self.images, "tolerance": TOLERANCE, "max_abs_diff": self.embed_max_abs, "max_l2_diff": self.embed_max_l2,
            "preprocess_max_abs_diff": self.preprocess_max_abs, "logit_scale": self.logit_scale,
            "score_max_abs_diff": self.score_max_abs, "score_bound": bound, "near_tie_margin": tie,
            "top1_same": self.top1_same, "top1_differs": self.images - self.top1_same,
            "near_ties": near, "near_tie_top1_differs": len(self.flips) - len(decisive_flips),
            "decisive_top1_differs": len(decisive_flips),
            "ok": not failures, "failures": failures,
        }


def describe_failure(check: dict[str, Any]) -> str:
    """One message for a failed verification: each failed check and by how much."""
    return "the export failed its verification against torch on the validation images: " + "; ".join(check["failures"])


def check_folder(folder: Path, required: tuple[str, ...], optional: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The manifest of an export folder that may be used: verified, passed, and every listed file matches its sha256.

    `optional`: (file, manifest key) of the parts an export may carry (the location prior,
    lit.field.onnx_prior). Where the file is in the folder or the key in the manifest, the file
    must be listed with its sum and the key must hold a passed `verification` of its own; an
    export without either (one made before the part existed) is checked as before.
    Anything else raises VerificationError naming the folder and the fix.
    """
    path = folder / MANIFEST
    if not path.is_file():
        raise VerificationError(str(folder), f"no {MANIFEST}: not a complete export; {FIX}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise VerificationError(str(path), f"cannot be read ({err}); {FIX}") from err
    check = manifest.get("verification") if isinstance(manifest, dict) else None
    if not isinstance(check, dict):
        raise VerificationError(str(folder), f"the export was never verified (no `verification` in {MANIFEST}); {FIX}")
    if check.get("ok") is not True:
        reasons = "; ".join(check.get("failures") or []) or "verification.ok is not true"
        raise VerificationError(str(folder), f"the export failed its verification ({reasons}): it is not used; {FIX}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise VerificationError(str(folder), f"{MANIFEST} lists no file sums; {FIX}")
    present = [(name, key) for name, key in optional if (folder / name).exists() or key in manifest]
    for name, key in present:
        part = manifest.get(key)
        part_check = part.get("verification") if isinstance(part, dict) else None
        if not isinstance(part_check, dict):
            raise VerificationError(str(folder), f"{name} is there but {MANIFEST} records no verification of it (`{key}`); {FIX}")
        if part_check.get("ok") is not True:
            reasons = "; ".join(part_check.get("failures") or []) or f"{key}.verification.ok is not true"
            raise VerificationError(str(folder), f"{name} failed its verification ({reasons}): it is not used; {FIX}")
    missing = [name for name in (*required, *(name for name, _ in present)) if name not in files]
    if missing:
        raise VerificationError(str(folder), f"{MANIFEST} lists no sum for {', '.join(missing)}; {FIX}")
    for name, digest in files.items():
        file = folder / name
        if not file.is_file():
            raise VerificationError(str(file), f"listed in {MANIFEST} but missing; {FIX}")
        if file_sha256(file) != digest:
            raise VerificationError(str(file), f"does not match the sha256 in {MANIFEST} (changed after the export); {FIX}")
    return dict(manifest)


__all__ = ["FIX", "MANIFEST", "TOLERANCE", "ScoreCheck", "check_folder", "describe_failure", "score_bound"]
