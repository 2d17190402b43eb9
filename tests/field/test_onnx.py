"""The ONNX export: verified against torch on the whole toy validation set, and run by onnxruntime without torch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from lit.field import onnx_export, onnx_predict
from tests.conftest import REPO
from tests.field.conftest import FieldRun

NO_TORCH = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "open_clip", "timm", "transformers"):
            raise ImportError(f"the ONNX path imported {name}")
        return None

sys.meta_path.insert(0, NoTorch())
from lit.cli import main
rc = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "torchvision"))
print("TORCH_MODULES", loaded)
sys.exit(rc)
"""


def test_export_is_verified_on_the_whole_validation_set(field_export: tuple[Path, dict]) -> None:
    out, check = field_export
    assert check["images"] == 128  # every toy validation image
    assert check["max_abs_diff"] <= onnx_export.TOLERANCE == 1e-4
    assert check["top1_same"] == 128 and check["ok"]
    assert check["preprocess_max_abs_diff"] <= 1e-6  # numpy preprocessing = open_clip's transform
    manifest = json.loads((out / onnx_predict.MANIFEST).read_text())
    assert manifest["verification"] == check and manifest["classes"] == 32 and manifest["step"] == 7
    assert set(manifest["files"]) == {onnx_predict.ENCODER, onnx_predict.CLASSES, onnx_predict.CATEGORIES,
                                      onnx_predict.PREPROCESSING}  # no calibration.json: the run has none
    classes = np.load(out / onnx_predict.CLASSES)
    assert classes.dtype == np.float16 and classes.shape == (32, manifest["embed_dim"])
    assert np.allclose(np.linalg.norm(classes.astype(np.float32), axis=1), 1.0, atol=1e-3)


def test_dynamic_batch(field_run: FieldRun, field_export: tuple[Path, dict]) -> None:
    from lit.field.images import open_image

    model = onnx_predict.OnnxModel.load(field_export[0], threads=1)
    x = np.stack([model.preprocess(open_image(p)) for p in field_run.images[:7]])
    one = np.concatenate([model.embed(x[i:i + 1]) for i in range(7)])
    np.testing.assert_allclose(model.embed(x), one, atol=1e-5)
    assert model.logits(x).shape == (7, 32)


def test_onnx_predict_runs_without_torch(field_run: FieldRun, field_export: tuple[Path, dict], tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", "--model", str(field_export[0]),
                           str(field_run.images[0].parent), str(bad), "--out", str(out), "--min-confidence", "0.3"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the bad file is skipped
    assert "TORCH_MODULES []" in proc.stdout, proc.stdout + proc.stderr
    assert len(out.read_text().splitlines()) == 1 + 4  # header + the 4 images of one class folder


def lit_imports(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_onnx_path_never_imports_torch_at_any_depth() -> None:
    """Boundary: every lit module reachable from onnx_predict and the predict CLI imports no torch stack (lazy imports too,
    except the checkpoint engine, which engines.py reaches only for a checkpoint: listed here on purpose)."""
    torch_side = {"lit.field.torch_model", "lit.eval.templates"}  # reached only with --checkpoint / --templates
    todo, seen, wrong = ["lit.field.onnx_predict", "lit.field.engines", "lit.field.cli_predict", "lit.field.app"], set(), {}
    while todo:
        name = todo.pop()
        if name in seen or name in torch_side:
            continue
        seen.add(name)
        path = REPO / (name.replace(".", "/") + ".py")
        if not path.is_file():
            path = REPO / name.replace(".", "/") / "__init__.py"
        imports = lit_imports(path)
        heavy = sorted(m for m in imports if m.split(".")[0] in ("torch", "torchvision", "open_clip", "timm", "transformers"))
        if heavy:
            wrong[name] = heavy
        todo += [m for m in imports if m.startswith("lit.") or m == "lit"]
    assert "lit.field.scoring" in seen and "lit.field.images" in seen
    assert wrong == {}
