"""The paper's class count in `make test`: 10,000 classes through training, calibration, export and ONNX prediction.

One image per class and split (the real iNat2021 category table when ../shared/data is there,
else a generated taxonomy of the same depth), the tiny random model, a few raw-image training
steps and a location prior (`lit prior`); then `lit calibrate` (temperature and the prior's weight),
`lit export --onnx` with its verification on all 10,000 validation images and of the prior, and
`lit predict` of the export and of the run at a given place and date. Every step goes through the command line as a user would.
At 10,000 classes a random model's scores have many near-ties: the export must still verify
(they are counted, not failures), and the answers of the export must agree with the checkpoint's
wherever the checkpoint's margin is outside the verified bound.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lit.cli import main
from lit.data.toy_wide import write_wide_inat
from lit.field import onnx_predict
from tests.conftest import SHARED

CLASSES = 10_000
CATEGORIES_CSV = SHARED / "data" / "inat2021-categories.csv"
PHOTOS = 200


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny run on 10,000 classes (shards, 8 raw-image steps); returns the run folder."""
    base = tmp_path_factory.mktemp("paper-shape")
    root = write_wide_inat(base / "inat", classes=CLASSES, train_per_class=1, val_per_class=1, image_size=32,
                           categories_csv=CATEGORIES_CSV if CATEGORIES_CSV.is_file() else None)
    job = base / "job.yaml"
    job.write_text(f"""run_dir: {base / 'run'}
model: {{name: lit-tiny, image_weights: ""}}
data: {{root: {root}, train_shards: {base / 'shards' / 'train'}, val_shards: {base / 'shards' / 'val'}, image_source: raw,
       augment: false, batch_size: 16, workers: 0, shuffle_buffer: 64, samples_per_epoch: 128}}
shards: {{samples_per_shard: 2500, workers: 1}}
train: {{epochs: 1, warmup_steps: 2, lr: 1.0e-3, device: cpu, log_every: 4}}
checkpoint: {{every_steps: 0, keep_last: 1}}
eval: {{final: false, every_epochs: 0, batch_size: 256}}
""")
    for split in ("train", "val"):
        assert main(["shards", "--config", str(job), "--split", split, "--no-progress"]) == 0
    assert main(["train", str(job)]) == 0
    # The location prior at 10,000 classes (a few steps: its figures are bench prior's; here every path runs)
    assert main(["prior", str(job), "prior.epochs=1", "prior.batch_size=2048", "prior.width=64", "prior.depth=1",
                 "--no-progress"]) == 0
    return base / "run"


def test_calibrate_export_and_predict_at_10000_classes(wide_run: Path, tmp_path: Path) -> None:
    assert main(["calibrate", str(wide_run), "--quiet"]) == 0
    calibration = json.loads((wide_run / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and calibration["prior_weight"] is not None
    assert calibration["prior"]["located_fit"] + calibration["prior"]["located_heldout"] > 0.8 * CLASSES

    out = tmp_path / "export"
    assert main(["export", str(wide_run), str(out), "--onnx"]) == 0
    manifest = json.loads((out / onnx_predict.MANIFEST).read_text())
    check = manifest["verification"]
    assert manifest["classes"] == CLASSES and check["ok"] and check["images"] == CLASSES
    assert check["decisive_top1_differs"] == 0 and check["score_max_abs_diff"] <= check["score_bound"]
    assert check["top1_same"] + check["near_tie_top1_differs"] == CLASSES
    assert check["near_ties"] > 0  # a random tower at 10,000 classes: near-ties are common, and allowed
    prior = manifest["prior"]
    assert prior["classes"] == CLASSES and prior["verification"]["ok"] and prior["weight_calibrated"]

    photos = sorted((wide_run.parent / "inat" / "val").rglob("*.jpg"))[:PHOTOS]
    listing = tmp_path / "photos.txt"
    listing.write_text("\n".join(str(p) for p in photos))
    rows = {}
    for engine in ("--model", "--checkpoint"):
        target = out if engine == "--model" else wide_run
        jsonl = tmp_path / f"{engine.strip('-')}.jsonl"
        assert main(["predict", str(target), str(listing), "--out", str(jsonl), "--top", "2", "--lat", "40.5", "--lon",
                     "-100.25", "--date", "2021-06-01", "--no-progress"]) == 0
        rows[engine] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows["--model"]) == len(rows["--checkpoint"]) == PHOTOS
    # Where the checkpoint's margin (in logits: T x log(p1 / p2)) is outside the verified bound, the same species
    # (the prior's own difference, within 1e-5 of its terms, is far inside that bound).
    margin, temperature = check["near_tie_margin"], calibration["temperature"]
    decisive = 0
    for onnx_row, torch_row in zip(rows["--model"], rows["--checkpoint"], strict=True):
        assert onnx_row["image"] == torch_row["image"]
        for row in (onnx_row, torch_row):  # weighed by the prior at the place given, the image-only answer beside it
            assert row["place"]["source"] == "flags" and row["place"]["lat"] == 40.5 and row["image_only"] is not None
            assert row["prior_weight"] == pytest.approx(calibration["prior_weight"])
        first, second = torch_row["guesses"]
        if temperature * math.log(first["probability"] / second["probability"]) > margin:
            decisive += 1
            assert onnx_row["guesses"][0]["taxon"] == first["taxon"], (onnx_row, torch_row)
    assert decisive > 0
