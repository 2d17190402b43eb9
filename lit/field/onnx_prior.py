"""The location prior in an ONNX export: prior.onnx, its verification against torch, its manifest section.

When the run has a prior (`lit prior`, lit.prior.store.find_prior), `lit export --onnx` writes
`prior.onnx` beside the image encoder: input `places` [N, 3] float32 (latitude, longitude, day
of year; NaN where unknown) → output `log_presence` [N, C] float32, log p(present) of the
export's own classes in the order of its class embeddings. The head's rows are selected and
reordered (Prior.columns) before the export, and the encoding is part of the graph
(lit.prior.net.encode as it is: sin/cos of longitude, latitude and day, an unknown day at the
circle's centre, unknown coordinates as zeros), so onnxruntime needs nothing else. The log-sigmoid
is written out in its stable form (`stable_logsigmoid`): exported as torch writes it, it would
be log(sigmoid(x)), -inf for species far outside their range.

It is verified before the export is installed: onnxruntime's output, read through
OnnxModel.log_prior (the path prediction takes), against torch's Prior.log_presence on a fixed
set of places (`check_places`: a 10-degree grid at four days and none, both sides of the date
line, the poles, unknown days and coordinates) and the validation split's own places
(DATA_ROOT/val.json, when it is there). Every value must be within PRIOR_TOLERANCE (1e-5) of
torch's, in units of max(1, S) where S = sum_k |w_ck h_k| is the size of the terms the logit
sums (w: the head's row of the class, h: the place's features): plain absolute 1e-5 for a prior
whose terms are small (an untrained one), relative to the terms for a trained one. That unit is
needed: a trained prior's features reach ~100 and its logits -100, so float32 itself rounds a
logit by more than 1e-5 (torch against torch, one place at a time against a batch, differs by
~6e-5 on a toy prior), while a wrong export (classes out of order, another encoding) is off by
orders of magnitude more. More, or a value that is not finite on one side only, fails the export
(nothing installed); the manifest records the plain largest absolute difference too. The manifest's `prior` section records the prior's file and sha256, how it was made
(its info), the weight prediction uses (`lit calibrate`'s for this checkpoint, else
lit.prior.combine.DEFAULT_WEIGHT) and the verification.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import nn

from lit.config import Config
from lit.data.places import record_place
from lit.eval.calibration import prior_weight_for
from lit.field.onnx_predict import PRIOR, PRIOR_INPUT, PRIOR_OUTPUT
from lit.io import atomic_write, file_sha256
from lit.log import logger
from lit.prior.combine import DEFAULT_WEIGHT
from lit.prior.net import PriorNet, encode
from lit.prior.store import Prior

PRIOR_TOLERANCE = 1e-5
"""Largest difference allowed between onnxruntime's and torch's log p(present), in units of max(1, its terms' scale)."""
CRITERION = "|onnx - torch| <= tolerance x max(1, sum_k |w_ck h_k|) for every place and class"
"""The prior's verification, as the manifest states it (w: the head's rows, h: the place's features)."""
MAX_VAL_PLACES = 20_000
"""Validation places checked at most (evenly spaced through the split)."""
CHUNK_VALUES = 1 << 22
"""Values compared at once (rows x classes): 16 MB of float32 per engine."""
Reference: TypeAlias = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""torch's side of the comparison: places [N, 3] → (log p(present) [N, C], scale of each logit's terms [N, C])."""
GRID_DAYS = (math.nan, 1.0, 91.0, 183.0, 366.0)
"""Days of year the global grid is checked at (NaN: unknown, the prior's "any time of year")."""


class PriorGraph(nn.Module):
    """What prior.onnx computes: places [N, 3] → log p(present) [N, len(columns)], columns in the given order."""

    def __init__(self, net: PriorNet, columns: torch.Tensor) -> None:
        super().__init__()
        self.use_date = net.use_date
        self.body = net.body
        self.head = nn.Linear(net.head.in_features, len(columns), bias=False)
        with torch.no_grad():
            self.head.weight.copy_(net.head.weight[columns.to(net.head.weight.device)])

    def forward(self, places: torch.Tensor) -> torch.Tensor:
        return stable_logsigmoid(self.head(self.body(encode(places, self.use_date))))


def stable_logsigmoid(x: torch.Tensor) -> torch.Tensor:
    """log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)), finite everywhere.

    torch's exporter writes F.logsigmoid as Log(Sigmoid(x)), which is -inf once sigmoid underflows
    (a logit below about -88: a species far outside its range) and loses digits well before.
    Without log1p in ONNX, log(1 + t) for t = exp(-|x|) <= 1 is within float32 rounding of
    log1p(t) in absolute terms, which is what the verification measures.
    """
    return torch.clamp(x, max=0.0) - torch.log(1.0 + torch.exp(-torch.abs(x)))


def export_prior_net(net: PriorNet, columns: torch.Tensor, path: Path, opset: int) -> None:
    """The prior's log p(present) of `columns` (in that order) as ONNX at `path` (dynamic batch), by torch's dynamo exporter."""
    graph = PriorGraph(net.cpu().eval(), columns.cpu()).eval()
    dummy = torch.tensor([[0.0, 0.0, 1.0], [45.0, -90.0, math.nan], [math.nan, math.nan, math.nan], [-33.9, 151.2, 200.0]])
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(graph, (dummy,), dynamo=True, input_names=[PRIOR_INPUT], output_names=[PRIOR_OUTPUT],
                                    dynamic_shapes=({0: batch},), opset_version=opset, external_data=False, verbose=False)
    if program is None:  # pragma: no cover - the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no program")
    atomic_write(path, lambda f: f.write(program.model_proto.SerializeToString()))


def check_places() -> np.ndarray:
    """The fixed places [M, 3] float32 every prior is verified on (module docstring)."""
    lat, lon, day = np.meshgrid(np.arange(-90.0, 90.1, 10.0), np.arange(-180.0, 180.1, 10.0), GRID_DAYS, indexing="ij")
    grid = np.stack([lat.ravel(), lon.ravel(), day.ravel()], axis=1)
    lat, lon, day = np.meshgrid(np.arange(-85.0, 85.1, 5.0), [-180.0, -179.999, 179.999, 180.0], [math.nan, 172.0], indexing="ij")
    dateline = np.stack([lat.ravel(), lon.ravel(), day.ravel()], axis=1)
    lat, lon, day = np.meshgrid([-90.0, -89.999, 89.999, 90.0], np.arange(-180.0, 180.1, 45.0), [math.nan, 1.0, 200.0], indexing="ij")
    poles = np.stack([lat.ravel(), lon.ravel(), day.ravel()], axis=1)
    nan = math.nan
    unknown = np.array([[nan, nan, nan], [nan, nan, 100.0], [nan, 10.0, 100.0], [10.0, nan, nan], [0.0, 0.0, nan],
                        [51.5, -0.1, 0.5], [51.5, -0.1, 366.0], [-33.9, 151.2, nan]])
    return np.concatenate([grid, dateline, poles, unknown]).astype(np.float32)


def val_places(cfg: Config, limit: int = MAX_VAL_PLACES) -> tuple[np.ndarray, str | None]:
    """The located places [M, 3] of DATA_ROOT/val.json (at most `limit`, evenly spaced) and its path; none when it is not there."""
    path = Path(cfg.data.root) / "val.json"
    if not path.is_file():
        return np.zeros((0, 3), np.float32), None
    try:
        images = json.loads(path.read_text()).get("images", [])
        places = [p.row() for p in (record_place(img)[0] for img in images if isinstance(img, dict)) if p.located]
    except (OSError, ValueError, AttributeError) as err:
        logger.warning("the prior is verified without the validation places: %s cannot be read (%s)", path, err)
        return np.zeros((0, 3), np.float32), None
    rows = np.array(places, dtype=np.float32).reshape(-1, 3)
    if len(rows) > limit:
        rows = rows[np.linspace(0, len(rows) - 1, limit).round().astype(int)]
    return rows, str(path)


def torch_reference(net: PriorNet, columns: torch.Tensor) -> Reference:
    """torch's answer on places: (log p(present) [N, C] as Prior.log_presence gives it, the scale of each logit's terms [N, C]).

    The scale is sum_k |w_ck h_k|, the head's terms of class c at a place's features h: float32
    arithmetic (torch's, onnxruntime's) rounds a logit to within a small multiple of 2^-24 of it,
    however much the terms cancel.
    """
    weight = net.head.weight.detach()[columns.to(net.head.weight.device)].abs()

    @torch.no_grad()
    def reference(places: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(places, dtype=np.float32)).to(weight.device)
        log_presence = net.log_presence(x)[:, columns.to(weight.device)]
        scale = net.embed(x).abs() @ weight.T
        return log_presence.cpu().numpy(), scale.cpu().numpy()

    return reference


def compare(reference: Reference, onnx_fn: Callable[[np.ndarray], np.ndarray], places: np.ndarray, classes: int) -> dict[str, Any]:
    """Both engines' log p(present) on `places`, chunk by chunk: the largest absolute and scaled differences, non-finite disagreements."""
    size = max(1, CHUNK_VALUES // max(1, classes))
    worst_abs, worst, worst_row, nonfinite = 0.0, 0.0, -1, 0
    for start in range(0, len(places), size):
        part = places[start:start + size]
        t, scale = (np.asarray(a, dtype=np.float64) for a in reference(part))
        o = np.asarray(onnx_fn(part), dtype=np.float64)
        if t.shape != o.shape:
            raise ValueError(f"the ONNX prior answers {o.shape} where torch answers {t.shape}")
        with np.errstate(invalid="ignore"):
            diff = np.where(t == o, 0.0, np.abs(o - t))  # equal infinities agree
        bad = ~np.isfinite(diff)
        nonfinite += int(bad.sum())
        diff[bad] = 0.0
        worst_abs = max(worst_abs, float(diff.max(initial=0.0)))
        rows = (diff / np.maximum(1.0, scale)).max(axis=1, initial=0.0)
        if len(rows) and rows.max() > worst:
            worst, worst_row = float(rows.max()), start + int(rows.argmax())
    place = [None if math.isnan(v) else float(v) for v in places[worst_row]] if worst_row >= 0 else None
    return {"max_abs_diff": worst_abs, "max_scaled_diff": worst, "worst_place": place, "nonfinite_differs": nonfinite}


def verify_prior(reference: Reference, onnx_fn: Callable[[np.ndarray], np.ndarray], classes: int,
                 extra: np.ndarray | None = None, extra_source: str | None = None) -> dict[str, Any]:
    """The prior's verification as the manifest records it: ONNX against torch on check_places() and `extra` (the validation places).

    Passed when every value is within PRIOR_TOLERANCE x max(1, scale) of torch's (CRITERION) and
    no value is finite in one engine only.
    """
    fixed = check_places()
    extra = np.zeros((0, 3), np.float32) if extra is None else extra.astype(np.float32)
    result = compare(reference, onnx_fn, np.concatenate([fixed, extra]), classes)
    failures: list[str] = []
    if result["max_scaled_diff"] > PRIOR_TOLERANCE:
        failures.append(f"the location prior's log p(present) differs from torch's by up to {result['max_scaled_diff']:.3g} "
                        f"(scaled by its terms; {result['max_abs_diff']:.3g} absolute), more than the tolerance "
                        f"{PRIOR_TOLERANCE:.0e} (worst at {result['worst_place']})")
    if result["nonfinite_differs"]:
        failures.append(f"the location prior's log p(present) is not finite in one engine only at {result['nonfinite_differs']} value(s)")
    return {"places": len(fixed) + len(extra), "fixed_places": len(fixed), "val_places": len(extra), "val_source": extra_source,
            "classes": classes, "tolerance": PRIOR_TOLERANCE, "criterion": CRITERION, **result, "ok": not failures,
            "failures": failures}


def describe_prior_failure(check: dict[str, Any]) -> str:
    """One message for a failed prior verification."""
    return "the export's location prior failed its verification against torch: " + "; ".join(check["failures"])


def prior_weight(run_dir: Path, checkpoint: Path, step: int) -> tuple[float, bool]:
    """(weight, calibrated): `lit calibrate`'s weight for this checkpoint, else DEFAULT_WEIGHT."""
    weight = prior_weight_for(run_dir, str(checkpoint), step)
    return (DEFAULT_WEIGHT, False) if weight is None else (float(weight), True)


def write_prior(prior_path: Path, category_ids: Sequence[int], stage: Path, opset: int, weight: tuple[float, bool]) -> tuple[Prior, dict[str, Any]]:
    """Export the prior of `prior_path` for the export's classes into `stage`; returns it and the manifest's `prior` section (unverified).

    A prior that does not know every exported class is a DataError (Prior.columns) naming them.
    """
    prior = Prior.load(prior_path)
    columns = prior.columns(category_ids)
    export_prior_net(prior.net, columns, stage / PRIOR, opset)
    shape = {"width": prior.net.head.in_features, "depth": len(prior.net.body) - 2, "use_date": prior.net.use_date}
    section = {"file": PRIOR, "source": str(prior_path), "sha256": file_sha256(prior_path), "info": prior.info,
               "prior_classes": len(prior.category_ids), "classes": len(category_ids), "shape": shape,
               "weight": weight[0], "weight_calibrated": weight[1]}
    return prior, section


def verify_export(prior: Prior, category_ids: Sequence[int], onnx_fn: Callable[[np.ndarray], np.ndarray | None],
                  cfg: Config) -> dict[str, Any]:
    """The exported prior (`onnx_fn`: OnnxModel.log_prior of the staged export) against torch's on the fixed and validation places."""
    columns = prior.columns(category_ids)

    def onnx_out(places: np.ndarray) -> np.ndarray:
        out = onnx_fn(places)
        if out is None:
            raise ValueError("the staged export does not load its prior")
        return out

    extra, source = val_places(cfg)
    return verify_prior(torch_reference(prior.net, columns), onnx_out, len(category_ids), extra, source)


__all__ = ["CHUNK_VALUES", "CRITERION", "GRID_DAYS", "MAX_VAL_PLACES", "PRIOR_TOLERANCE", "PriorGraph", "check_places", "compare",
           "describe_prior_failure", "export_prior_net", "prior_weight", "stable_logsigmoid", "torch_reference", "val_places", "verify_export", "verify_prior", "write_prior"]
