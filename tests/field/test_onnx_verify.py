"""An export's verification means something at any class count, and an export that failed it is never used.

The score bound is checked on random unit vectors at the paper's shape (10,000 classes, 768-d):
fp16 class embeddings never move a score by more than the derived bound, exact ties are counted as
near-ties (not failures), and a wrong export (classes out of order, embeddings off) fails with
what failed and by how much. Then the real export path: a refused export leaves its target as it
was, and `lit predict --model` / `lit serve` refuse a folder that is unverified, failed or altered.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lit.cli import main
from lit.errors import VerificationError
from lit.field import onnx_export, onnx_predict, onnx_verify
from lit.field.onnx_verify import ScoreCheck, score_bound
from tests.field.conftest import FieldRun


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def paper_shape(seed: int = 0, classes: int = 10_000, dim: int = 768, images: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return unit(rng.standard_normal((classes, dim))), unit(rng.standard_normal((images, dim)))


def test_fp16_classes_stay_within_the_derived_bound_at_10000_classes() -> None:
    classes, emb = paper_shape()
    noisy = unit(emb + np.random.default_rng(1).standard_normal(emb.shape).astype(np.float32) * 3e-6)  # another runtime
    check = ScoreCheck(logit_scale=100.0)
    check.add([f"k{i}" for i in range(len(emb))], emb, classes, noisy, classes.astype(np.float16))
    result = check.result()
    assert result["ok"], result["failures"]
    assert 0 < result["score_max_abs_diff"] <= result["score_bound"]
    assert result["score_bound"] == pytest.approx(score_bound(100.0, result["max_l2_diff"], 768))
    # the bound is not loose by orders of magnitude: fp16's roundoff alone is 100 x 2^-11 = 0.049
    assert result["score_bound"] < 0.1


def test_near_ties_are_counted_not_failures() -> None:
    classes, _ = paper_shape(images=0)
    pairs = np.arange(0, 200, 2)
    tied = unit(classes[pairs] + classes[pairs + 1])  # exactly between two classes: torch's margin is ~0
    check = ScoreCheck(logit_scale=100.0)
    onnx_classes = classes.astype(np.float16)
    check.add([f"tie{i}" for i in range(len(tied))], tied, classes, tied, onnx_classes)
    result = check.result()
    assert result["ok"], result["failures"]
    assert result["near_ties"] >= len(tied) - 5  # float32 rounding leaves a few ties a hair apart
    assert result["decisive_top1_differs"] == 0
    flipped = result["top1_differs"]
    assert flipped == result["near_tie_top1_differs"] and flipped > 0  # fp16 flips some exact ties, and that is allowed


def test_a_wrong_export_fails_with_what_and_how_much() -> None:
    classes, _ = paper_shape(images=0)
    emb = classes[:64].copy()  # each image is its class: a wide margin, so a swapped answer is decisive
    shuffled = np.roll(classes, 1, axis=0).astype(np.float16)  # class rows off by one: every answer wrong
    check = ScoreCheck(logit_scale=100.0)
    check.add([f"k{i}" for i in range(len(emb))], emb, classes, emb, shuffled)
    result = check.result()
    assert not result["ok"]
    assert any("class scores differ from torch's by up to" in f for f in result["failures"])
    assert result["decisive_top1_differs"] == len(emb)
    assert any("top-1 differs from torch's on 64 image(s)" in f and "k0 (margin" in f for f in result["failures"])
    off = ScoreCheck(logit_scale=100.0)
    off.add(["a"], emb[:1], classes, unit(emb[:1] + 0.01), classes.astype(np.float16))
    failures = off.result()["failures"]
    assert any(f.startswith("image embeddings differ from torch's by up to") and "tolerance 1e-04" in f for f in failures)
    assert "failed its verification" in onnx_verify.describe_failure(off.result())


def test_a_refused_export_leaves_the_target_as_it_was(field_run: FieldRun, field_export: tuple[Path, dict], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model"
    shutil.copytree(field_export[0], target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real_load = onnx_predict.OnnxModel.load

    def wrong_classes(folder: Path, threads: int | None = None, *, check: bool = True) -> onnx_predict.OnnxModel:
        model = real_load(folder, threads, check=check)
        model.class_embeddings = np.roll(model.class_embeddings, 1, axis=0)  # an export whose classes are out of order
        return model

    monkeypatch.setattr(onnx_predict.OnnxModel, "load", wrong_classes)
    with pytest.raises(VerificationError, match="class scores differ from torch's by up to") as err:
        onnx_export.export_onnx(field_run.run, target)
    assert "nothing was written to" in str(err.value)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the earlier, good export is untouched
    assert not list(tmp_path.glob(".model.*"))  # no staging folder left
    assert main(["export", str(field_run.run), str(tmp_path / "new"), "--onnx"]) == 2
    out = capsys.readouterr().err
    assert "verification failed:" in out and "config error" not in out
    assert not (tmp_path / "new").exists()


def test_an_export_replaces_an_earlier_one_but_no_other_folder(field_run: FieldRun, field_export: tuple[Path, dict],
                                                               tmp_path: Path) -> None:
    target = tmp_path / "model"
    shutil.copytree(field_export[0], target)
    (target / "stale.txt").write_text("from an older export")
    out, check = onnx_export.export_onnx(field_run.run, target, verify_limit=16)
    assert check["ok"] and check["images"] == 16 and not (out / "stale.txt").exists()
    onnx_predict.OnnxModel.load(out)  # verified and its sums match
    other = tmp_path / "notes"
    other.mkdir()
    (other / "field-notes.txt").write_text("mine")
    with pytest.raises(Exception, match="exists and is not an ONNX export folder"):
        onnx_export.export_onnx(field_run.run, other, verify_limit=4)
    assert (other / "field-notes.txt").read_text() == "mine"


def tamper(folder: Path, how: str) -> None:
    manifest_path = folder / onnx_predict.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    if how == "failed":
        manifest["verification"].update(ok=False, failures=["top-1 differs from torch's on 30 image(s)"])
    elif how == "unverified":
        del manifest["verification"]
    elif how == "altered":
        classes = np.load(folder / onnx_predict.CLASSES)
        classes[0, 0] += 1
        np.save(folder / onnx_predict.CLASSES, classes)
    elif how == "unlisted":
        del manifest["files"][onnx_predict.ENCODER]
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(("how", "says"), [
    ("failed", "failed its verification (top-1 differs from torch's on 30 image(s))"),
    ("unverified", "was never verified"),
    ("altered", "does not match the sha256"),
    ("unlisted", f"lists no sum for {onnx_predict.ENCODER}"),
])
def test_predict_and_serve_refuse_an_export_not_verified(field_run: FieldRun, field_export: tuple[Path, dict], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str], how: str, says: str) -> None:
    folder = tmp_path / "model"
    shutil.copytree(field_export[0], folder)
    tamper(folder, how)
    assert main(["predict", "--model", str(folder), str(field_run.images[0]), "--out", str(tmp_path / "p.csv")]) == 2
    out = capsys.readouterr().err
    assert "verification failed:" in out and says in " ".join(out.split()) and "lit export CHECKPOINT OUT --onnx" in out
    assert not (tmp_path / "p.csv").exists()
    assert main(["serve", str(folder), "--port", "1"]) == 2  # refused before any port is opened
    assert says in " ".join(capsys.readouterr().err.split())
