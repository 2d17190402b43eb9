"""The location prior travels with the ONNX export: prior.onnx, verified within 1e-5 of torch, applied as torch does.

A run of its own (the field run's validation shards and toy annotations) with a small random
prior whose species are the toy ones plus two it never exports, in another order, and a
calibration that fit the prior's weight. Its export is made once for the module. The paper's
shape (10,000 classes, width 256, depth 4) is checked on the prior alone.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from lit.errors import DataError, VerificationError
from lit.field import onnx_export, onnx_predict
from lit.field.onnx_predict import PRIOR, PRIOR_KEY, OnnxModel, open_prior, run_prior
from lit.field.onnx_prior import (
    PRIOR_TOLERANCE,
    check_places,
    describe_prior_failure,
    export_prior_net,
    torch_reference,
    verify_prior,
    write_prior,
)
from lit.prior.combine import DEFAULT_WEIGHT
from lit.prior.net import PriorNet
from lit.prior.store import PRIOR_FILE, Prior, prior_dir, save_prior
from tests.field.conftest import FieldRun

WEIGHT = 0.7
"""The prior weight the run's calibration holds."""


@dataclass(frozen=True)
class PriorRun:
    run: Path
    prior: Path
    val_json: Path


@pytest.fixture(scope="module")
def prior_run(field_run: FieldRun, tmp_path_factory: pytest.TempPathFactory) -> PriorRun:
    from lit.checkpoint import resolve_checkpoint
    from lit.data.toy import toy_categories
    from lit.eval.calibration import Calibration
    from lit.model import build_model
    from tests.eval.conftest import TINY, make_config, save_tiny_checkpoint

    root = tmp_path_factory.mktemp("prior-run")
    cfg = make_config(root / "run", field_run.val_shards, data={"root": str(field_run.root / "toy")})
    built = build_model(TINY)
    built.model.eval()
    save_tiny_checkpoint(cfg, built, step=7)
    torch.manual_seed(0)
    cats = toy_categories()
    ids = [c.id for c in reversed(cats)] + [990001, 990002]  # another order, and species the export does not have
    net = PriorNet(len(ids), width=32, depth=1)
    with torch.no_grad():
        net.head.weight.mul_(4.0)  # presence logits of a few units either way, as a trained prior's
    path = save_prior(prior_dir(cfg) / PRIOR_FILE, net, ids, [f"s{i}" for i in ids], {"observations": 123, "fingerprint": "f" * 64})
    ckpt = resolve_checkpoint(cfg.run_dir)
    Calibration(temperature=1.5, checkpoint=str(ckpt), step=7, num_classes=len(cats), prior_weight=WEIGHT).save(cfg.run_dir)
    return PriorRun(Path(cfg.run_dir), path, field_run.root / "toy" / "val.json")


@pytest.fixture(scope="module")
def prior_export(prior_run: PriorRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    start = time.perf_counter()
    out, check = onnx_export.export_onnx(prior_run.run, tmp_path_factory.mktemp("prior-export") / "model", verify_limit=16)
    return out, check, time.perf_counter() - start


def located_val_places(val_json: Path) -> int:
    from lit.data.places import record_place

    return sum(record_place(img)[0].located for img in json.loads(val_json.read_text())["images"])


def test_the_export_carries_its_verified_prior(prior_run: PriorRun, prior_export: tuple[Path, dict, float]) -> None:
    from lit.io import file_sha256

    out, check, _ = prior_export
    assert check["ok"] and check["images"] == 16
    manifest = json.loads((out / onnx_predict.MANIFEST).read_text())
    section = manifest[PRIOR_KEY]
    assert section["file"] == PRIOR and section["source"] == str(prior_run.prior)
    assert section["sha256"] == file_sha256(prior_run.prior)
    assert section["info"] == {"observations": 123, "fingerprint": "f" * 64}
    assert (section["weight"], section["weight_calibrated"]) == (WEIGHT, True)
    assert section["classes"] == 32 and section["prior_classes"] == 34
    assert section["shape"] == {"width": 32, "depth": 1, "use_date": True}
    pv = section["verification"]
    assert pv["ok"] and pv["failures"] == [] and pv["tolerance"] == PRIOR_TOLERANCE == 1e-5
    assert 0.0 <= pv["max_abs_diff"] <= 1e-5 and pv["max_scaled_diff"] <= 1e-5 and pv["nonfinite_differs"] == 0
    assert pv["fixed_places"] == len(check_places()) and pv["classes"] == 32
    assert pv["val_places"] == located_val_places(prior_run.val_json)  # the validation split's own places
    assert pv["places"] == pv["fixed_places"] + pv["val_places"]
    assert PRIOR in manifest["files"] and manifest["files"][PRIOR] == file_sha256(out / PRIOR)


def test_onnx_log_prior_equals_torch_in_the_exports_class_order(prior_run: PriorRun, prior_export: tuple[Path, dict, float]) -> None:
    model = OnnxModel.load(prior_export[0], threads=1)
    assert model.prior_weight == WEIGHT
    rng = np.random.default_rng(0)
    places = np.stack([rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500), rng.uniform(1, 366, 500)], axis=1)
    places[::7, 2] = np.nan  # no date
    places[::11, :2] = np.nan  # no place
    places = np.concatenate([places, check_places()]).astype(np.float32)
    got = model.log_prior(places)
    assert got is not None and got.dtype == np.float32 and got.shape == (len(places), 32)
    prior = Prior.load(prior_run.prior)
    want = prior.log_presence(torch.from_numpy(places), prior.columns([c.id for c in model.categories])).numpy()
    assert float(np.abs(got - want).max()) <= 1e-5
    assert np.isfinite(got).all() and (got <= 0).all()
    one = model.log_prior(places[3:4])
    assert one is not None and np.abs(one - want[3:4]).max() <= 1e-5  # dynamic batch
    empty = model.log_prior(np.zeros((0, 3), np.float32))
    assert empty is not None and empty.shape == (0, 32)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        model.log_prior(np.zeros((4, 2), np.float32))


def test_the_graph_is_finite_far_outside_a_range(tmp_path: Path) -> None:
    """torch's exporter writes logsigmoid as log(sigmoid(x)): -inf below about -88. The export's graph stays finite and exact."""
    torch.manual_seed(1)
    net = PriorNet(64, width=16, depth=1).eval()
    with torch.no_grad():
        net.head.weight.mul_(400.0)  # logits in the hundreds either way
    export_prior_net(net, torch.arange(64), tmp_path / PRIOR, onnx_export.OPSET)
    session = open_prior(tmp_path, 64)
    places = check_places()
    got = run_prior(session, places, 64)
    with torch.no_grad():
        logits = net(torch.from_numpy(places))
    assert float(logits.min()) < -200 and np.isfinite(got).all()
    result = verify_prior(torch_reference(net, torch.arange(64)), lambda p: run_prior(session, p, 64), 64)
    assert result["ok"], result["failures"]
    assert result["max_abs_diff"] > 1e-5  # logits in the hundreds: float32 rounds them by more than 1e-5 ...
    assert result["max_scaled_diff"] <= 1e-5  # ... and within 1e-5 of the size of their terms


def test_a_wrong_prior_fails_with_how_much() -> None:
    torch.manual_seed(2)
    net = PriorNet(50, width=16, depth=1).eval()
    reference = torch_reference(net, torch.arange(50))

    def shifted_day(places: np.ndarray) -> np.ndarray:  # an encoding one day off
        with torch.no_grad():
            return net.log_presence(torch.from_numpy(places + np.array([0, 0, 1], np.float32))).numpy()

    result = verify_prior(reference, shifted_day, 50)
    assert not result["ok"] and result["max_scaled_diff"] > 1e-4
    assert "differs from torch's by up to" in result["failures"][0] and "tolerance 1e-05" in result["failures"][0]
    assert "location prior failed its verification" in describe_prior_failure(result)
    nan = verify_prior(reference, lambda p: reference(p)[0] * np.where(np.isnan(p[:, 2:]), np.nan, 1.0), 50)
    assert nan["nonfinite_differs"] > 0 and any("not finite in one engine only" in f for f in nan["failures"])


def test_an_export_without_a_prior_still_loads_and_predicts(field_run: FieldRun, field_export: tuple[Path, dict],
                                                            tmp_path: Path) -> None:
    """An export made before the prior existed: no prior.onnx, no `prior` in its manifest."""
    from lit.field.images import open_image

    folder = tmp_path / "old"
    shutil.copytree(field_export[0], folder)
    manifest = json.loads((folder / onnx_predict.MANIFEST).read_text())
    assert PRIOR_KEY not in manifest and not (folder / PRIOR).exists()
    model = OnnxModel.load(folder, threads=1)
    assert model.log_prior(check_places()) is None
    assert model.prior_weight == DEFAULT_WEIGHT == onnx_predict.DEFAULT_PRIOR_WEIGHT
    assert model.logits_of([open_image(field_run.images[0])]).shape == (1, 32)


def altered(src: Path, dst: Path, how: str) -> Path:
    shutil.copytree(src, dst)
    path = dst / onnx_predict.MANIFEST
    manifest = json.loads(path.read_text())
    if how == "altered":
        data = bytearray((dst / PRIOR).read_bytes())
        data[-5] ^= 0x01  # one bit of the head's weights
        (dst / PRIOR).write_bytes(bytes(data))
    elif how == "unlisted":
        del manifest["files"][PRIOR]
    elif how == "failed":
        manifest[PRIOR_KEY]["verification"].update(ok=False, failures=["the location prior's log p(present) differs"])
    elif how == "unverified":
        del manifest[PRIOR_KEY]["verification"]
    elif how == "removed":
        (dst / PRIOR).unlink()
    path.write_text(json.dumps(manifest))
    return dst


@pytest.mark.parametrize(("how", "says"), [
    ("altered", "does not match the sha256"),
    ("unlisted", f"lists no sum for {PRIOR}"),
    ("failed", f"{PRIOR} failed its verification (the location prior's log p(present) differs)"),
    ("unverified", "records no verification of it"),
    ("removed", "listed in manifest.json but missing"),
])
def test_an_export_whose_prior_is_not_as_verified_is_refused(prior_export: tuple[Path, dict, float], tmp_path: Path,
                                                             how: str, says: str) -> None:
    folder = altered(prior_export[0], tmp_path / "model", how)
    with pytest.raises(VerificationError) as err:
        OnnxModel.load(folder)
    assert says in " ".join(str(err.value).split())


def test_a_prior_dropped_into_an_export_without_one_is_refused(field_export: tuple[Path, dict], prior_export: tuple[Path, dict, float],
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "old"
    shutil.copytree(field_export[0], folder)
    shutil.copy(prior_export[0] / PRIOR, folder / PRIOR)
    with pytest.raises(VerificationError, match="records no verification of it"):
        OnnxModel.load(folder)


def test_a_prior_that_fails_its_verification_installs_nothing(prior_run: PriorRun, prior_export: tuple[Path, dict, float],
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = OnnxModel.log_prior

    def off(self: OnnxModel, places: np.ndarray) -> np.ndarray | None:
        out = real(self, places)
        return None if out is None else out + np.float32(1e-4)

    monkeypatch.setattr(OnnxModel, "log_prior", off)
    target = tmp_path / "model"
    shutil.copytree(prior_export[0], target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(VerificationError, match=r"location prior's log p\(present\) differs from torch's by up to 0.0001") as err:
        onnx_export.export_onnx(prior_run.run, target, verify_limit=4)
    assert "tolerance 1e-05" in str(err.value) and "nothing was written to" in str(err.value)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not list(tmp_path.glob(".model.*"))


def test_a_prior_that_lacks_an_exported_class_is_refused_before_the_export(prior_run: PriorRun, tmp_path: Path) -> None:
    from lit.data.toy import toy_categories

    ids = [c.id for c in toy_categories()]
    with pytest.raises(DataError, match="the prior knows no category"):
        write_prior(prior_run.prior, [*ids, 424242], tmp_path, onnx_export.OPSET, (DEFAULT_WEIGHT, False))
    assert not (tmp_path / PRIOR).exists()


def test_the_paper_shape_is_verified_within_1e5(tmp_path: Path) -> None:
    """10,000 species, width 256, depth 4 (SINR's), classes in another order than the prior's: exported and verified within 1e-5."""
    start = time.perf_counter()
    torch.manual_seed(0)
    net = PriorNet(10_000, width=256, depth=4).eval()
    columns = torch.randperm(10_000)
    export_prior_net(net, columns, tmp_path / PRIOR, onnx_export.OPSET)
    session = open_prior(tmp_path, 10_000, threads=2)
    nan = math.nan
    extra = np.array([[60.2, 24.9, 150.0], [-1.3, 36.8, nan], [nan, nan, 12.0]], np.float32)

    result = verify_prior(torch_reference(net, columns), lambda p: run_prior(session, p, 10_000), 10_000, extra, "test")
    seconds = time.perf_counter() - start
    print(f"10,000 classes: max |onnx - torch| = {result['max_abs_diff']:.3g} (scaled {result['max_scaled_diff']:.3g}) "
          f"on {result['places']} places, {seconds:.1f} s")
    assert result["ok"], result["failures"]
    assert result["classes"] == 10_000 and result["val_places"] == 3
    assert result["max_abs_diff"] <= 1e-5  # plain absolute: an untrained prior's logits are small
