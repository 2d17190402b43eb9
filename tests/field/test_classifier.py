"""The Python API: `Classifier.load(RUN_OR_EXPORT).predict(images)` on paths, PIL images and arrays, both engines,
the same answers as `lit predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lit
from lit.cli import main
from lit.field.classifier import Classifier
from lit.field.images import BadImage, open_image
from tests.field.conftest import FieldRun


def cli_predictions(engine: str, target: Path, images: list[Path], out: Path, *extra: str) -> list[dict]:
    assert main(["predict", engine, str(target), *map(str, images), "--out", str(out), "--top", "3", *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("engine", ["--checkpoint", "--model"])
def test_paths_images_and_arrays_give_the_cli_answers(field_run: FieldRun, field_export: tuple[Path, dict], tmp_path: Path,
                                                      engine: str) -> None:
    target = field_run.run if engine == "--checkpoint" else field_export[0]
    images = field_run.images[::16][:8]
    clf = lit.Classifier.load(target, device="cpu")
    assert isinstance(clf, Classifier) and len(clf.categories) == 32
    cli = cli_predictions(engine, target, images, tmp_path / "p.jsonl", "--min-confidence", "0.2", "--rank", "genus")
    opened = [open_image(p) for p in images]
    for given in (images, [str(p) for p in images], opened, [np.asarray(im) for im in opened]):
        api = clf.predict(given, top=3, rank="genus", min_confidence=0.2, batch_size=3)
        assert len(api) == len(cli)
        for ours, theirs in zip(api, cli, strict=True):
            got = ours.to_json()
            assert [g["taxon"] for g in got["guesses"]] == [g["taxon"] for g in theirs["guesses"]]
            assert [g["probability"] for g in got["guesses"]] == pytest.approx([g["probability"] for g in theirs["guesses"]],
                                                                               abs=1e-6)
            assert got["answer"]["taxon"] == theirs["answer"]["taxon"] and got["answer"]["rank"] == theirs["answer"]["rank"]
    assert [p.path for p in clf.predict(images[:2])] == [str(p) for p in images[:2]]
    assert [p.path for p in clf.predict(opened[:2])] == ["<image 0>", "<image 1>"]


def test_a_detector_crop_a_subset_and_bad_inputs(field_run: FieldRun, field_export: tuple[Path, dict]) -> None:
    clf = Classifier.load(field_export[0])
    photo = Image.open(field_run.images[0])
    crop = photo.crop((4, 4, 40, 44))  # a box from a detector, passed as a PIL image
    [one] = clf.predict(crop, top=2)
    assert len(one.guesses) == 2 and one.guesses[0].rank == "species" and one.guesses[0].species.name
    [birds] = clf.predict(crop, top=3, subset="supercategory=Birds")
    assert birds.guesses and all(g.species.supercategory == "Birds" for g in birds.guesses)
    gray = np.asarray(photo.convert("L"))
    assert len(clf.predict([gray, np.asarray(photo)])) == 2
    with pytest.raises(BadImage, match="must be uint8"):
        clf.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(BadImage, match="nope.jpg"):
        clf.predict(field_run.root / "nope.jpg")
    with pytest.raises(TypeError, match="expected a path, a PIL image or a uint8 array"):
        clf.predict([3])  # type: ignore[list-item]


def test_the_readme_example_runs(field_run: FieldRun, field_export: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("From a script, the same scoring", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = (block.replace('"field-model"', repr(str(field_export[0]))).replace('"trap-0412.jpg"', repr(str(field_run.images[0])))
            .replace('"~/trip/fox.jpg"', repr(str(field_run.images[1]))))
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example, on the test's export
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("<image 1> ") and "| answer:" in lines[0]
