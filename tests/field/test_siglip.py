"""A sigmoid-loss model (train.loss=siglip) in the field: its logit bias in the scores of both engines, calibration and
back-off on softmax(logits / T), where the bias cancels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit.cli import main
from lit.data.taxonomy import probabilities
from lit.eval.calibration import EmbeddedImages, fit_temperature
from lit.field.scoring import Scorer
from lit.field.torch_model import CheckpointModel
from tests.eval.conftest import TINY, make_config, save_tiny_checkpoint
from tests.field.conftest import FieldRun

BIAS = -6.5
"""Not open_clip's initial -10: the value read back is the checkpoint's, not the constructor's."""


@pytest.fixture(scope="module")
def siglip_run(field_run: FieldRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The field run's tiny model built for the sigmoid loss, with a logit bias of BIAS, as a checkpoint of its own."""
    from lit.model import build_model

    built = build_model(TINY, loss="siglip")
    with torch.no_grad():
        built.model.logit_bias.fill_(BIAS)
    built.model.eval()
    cfg = make_config(tmp_path_factory.mktemp("siglip") / "run", field_run.val_shards, train={"loss": "siglip"})
    save_tiny_checkpoint(cfg, built, step=7)
    return Path(cfg.run_dir)


def test_the_scores_carry_the_bias_and_the_probabilities_do_not(siglip_run: Path, field_run: FieldRun) -> None:
    model = CheckpointModel.load(siglip_run, device="cpu")
    assert model.logit_bias == pytest.approx(BIAS) and model.logit_scale == pytest.approx(10.0)  # open_clip's --siglip scale
    x = torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in field_run.images[:6]])
    logits = model.logits(x)
    cosine = (model.embed(x) @ model.classifier.T).numpy()
    np.testing.assert_allclose(logits, model.logit_scale * cosine + BIAS, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(probabilities(logits, 1.7), probabilities(logits - BIAS, 1.7), rtol=1e-9, atol=1e-12)


def test_calibration_and_back_off_work_on_a_sigmoid_model(siglip_run: Path, field_run: FieldRun, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from lit.field.calibrate import calibrate, validation_images

    run = tmp_path / "run"
    shutil.copytree(siglip_run, run)
    cal, _ = calibrate(run, device="cpu", progress=False)
    assert cal.temperature > 0 and cal.fit_samples + cal.heldout_samples == 128
    assert set(cal.ece_before) == set(cal.ece_after) == {"species", "genus"}
    assert cal.ece_after["species"] < cal.ece_before["species"] and cal.nll_after is not None and cal.nll_before is not None
    assert cal.nll_after < cal.nll_before
    # the bias cancels in the softmax: the same fit as on the cosine scores alone
    model = CheckpointModel.load(run, device="cpu")
    images, keys, _ = validation_images(model, progress=False)
    assert images.logit_bias == pytest.approx(BIAS)
    rows = np.arange(len(keys))
    plain = EmbeddedImages(images.embeddings, images.classes, images.logit_scale, images.targets)
    assert fit_temperature(images, rows) == pytest.approx(fit_temperature(plain, rows), rel=1e-6)
    # back-off up the taxonomy at the calibrated temperature, from the scores with the bias
    x = torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in field_run.images[::8]])
    logits = model.logits(x)
    scorer = Scorer.of(model.categories, temperature=model.temperature(), min_confidence=0.5, k=1)
    assert model.temperature() == pytest.approx(cal.temperature)
    answers = [p.answer for p in scorer.score([str(i) for i in range(len(x))], logits)]
    unbiased = [p.answer for p in scorer.score([str(i) for i in range(len(x))], logits - BIAS)]
    assert [(a.rank, a.taxon) for a in answers] == [(a.rank, a.taxon) for a in unbiased]
    assert all(a.rank is None or a.probability >= 0.5 for a in answers)
    assert any(a.rank not in (None, "species") for a in answers)  # a random tiny model: backs off above the species
    assert main(["predict", str(run), str(field_run.images[0]), "--json", "--min-confidence", "0.5"]) == 0
    answer = json.loads(capsys.readouterr().out.splitlines()[-1])["answer"]
    assert (answer["rank"], answer["taxon"]) == (answers[0].rank, answers[0].taxon)


def test_the_onnx_export_stores_and_applies_the_bias(siglip_run: Path, field_run: FieldRun, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from lit.field.onnx_export import export_onnx
    from lit.field.onnx_predict import OnnxModel

    out, check = export_onnx(siglip_run, tmp_path / "export", verify_limit=8)
    assert check["ok"] and json.loads((out / "manifest.json").read_text())["logit_bias"] == pytest.approx(BIAS)
    onnx, torch_model = OnnxModel.load(out, threads=1), CheckpointModel.load(siglip_run, device="cpu")
    assert onnx.logit_bias == pytest.approx(BIAS)
    photos = [Image.open(p).convert("RGB") for p in field_run.images[:4]]
    np.testing.assert_allclose(onnx.logits_of(photos), torch_model.logits_of(photos), atol=0.05)  # fp16 class embeddings
    cosine = onnx.embed(np.stack([onnx.preprocess(im) for im in photos])) @ onnx.class_embeddings.T
    np.testing.assert_allclose(onnx.logits_of(photos), onnx.logit_scale * cosine + BIAS, rtol=1e-6, atol=1e-5)
    results = []
    for target in (out, siglip_run):
        assert main(["predict", str(target), str(field_run.images[0]), "--json", "-k", "1"]) == 0
        results.append(json.loads(capsys.readouterr().out.splitlines()[-1])["guesses"][0])
    assert results[0]["taxon"] == results[1]["taxon"] and results[0]["probability"] == pytest.approx(results[1]["probability"], abs=1e-3)
