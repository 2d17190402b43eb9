"""Answers weighed by where and when: the location prior changes located answers, leaves the others bitwise alone.

`prior_run` is the field tests' tiny model saved as a second run whose config points at the toy
data, with a prior trained in seconds on the toy validation images' own latitudes and longitudes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from lit.cli import main
from lit.data.places import Place
from lit.errors import UsageError
from lit.field.classifier import Classifier
from lit.field.exif import GPS_IFD
from lit.field.images import open_image
from lit.field.scoring import Prediction, log_probabilities, weigh
from tests.field.conftest import FieldRun

LONDON = ["--lat", "51.5", "--lon", "-0.12", "--date", "2021-06-14"]


def make_prior_run(field_run: FieldRun, root: Path) -> Path:
    """A run of the tiny model on the toy data with a small prior in RUN/prior (2 epochs, width 32, depth 1)."""
    from lit.model import build_model
    from lit.prior.train import train_prior
    from tests.eval.conftest import TINY, make_config, save_tiny_checkpoint

    built = build_model(TINY)
    built.model.eval()
    cfg = make_config(root / "run", field_run.val_shards, data={"root": str(field_run.root / "toy")},
                      prior={"split": "val", "epochs": 2, "width": 32, "depth": 1, "batch_size": 256})
    save_tiny_checkpoint(cfg, built, step=7)
    train_prior(cfg, progress=False)
    assert (root / "run" / "prior" / "prior.pt").is_file()
    return root / "run"


@pytest.fixture(scope="module")
def prior_run(field_run: FieldRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prior_run(field_run, tmp_path_factory.mktemp("prior-run"))


def jpeg_with_gps(src: Path, dst: Path, gps: dict[int, object]) -> Path:
    """`src` saved again as a JPEG whose EXIF GPS IFD holds `gps`."""
    exif = Image.Exif()
    ifd = exif.get_ifd(GPS_IFD)
    for tag, value in gps.items():
        ifd[tag] = value
    with Image.open(src) as im:
        im.save(dst, "JPEG", exif=exif, quality=95)
    return dst


def deg(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    return IFDRational(round(value * 10_000), 10_000), IFDRational(0, 1), IFDRational(0, 1)


def core(p: dict) -> str:
    """The image-only part of a JSON answer, as text: compared with == (bitwise equal probabilities)."""
    return json.dumps({"guesses": p["guesses"], "answer": p["answer"]})


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_located_rows_are_weighed_and_the_others_bitwise_unchanged(prior_run: Path, field_run: FieldRun) -> None:
    clf = Classifier.load(prior_run, device="cpu")
    images = field_run.images[::16][:8]
    places: list[tuple[float, float, str] | None] = [(51.5, -0.12, "2021-06-14") if i % 2 == 0 else None for i in range(8)]
    plain = clf.predict(images, top=5, exif=False)
    mixed = clf.predict(images, top=5, places=places, exif=False)
    for place, a, b in zip(places, plain, mixed, strict=True):
        if place is None:
            assert json.dumps(b.to_json()) == json.dumps(a.to_json())  # every key, every bit
            continue
        assert b.place is not None and b.place.source == "given" and b.place.date == "2021-06-14" and b.prior_weight == 1.0
        assert b.image_only is not None and json.dumps(b.image_only.to_json()) == core(a.to_json())
        assert [g.probability for g in b.guesses] != [g.probability for g in a.guesses]  # the prior changed them
    # the numpy weighing is lit.prior.combine.weigh's
    import torch

    from lit.prior.combine import located
    from lit.prior.combine import weigh as torch_weigh

    predictor = clf.predictor
    logits = predictor.logits_of([open_image(p) for p in images])
    rows = np.array([Place(51.5, -0.12, 165.0).row(), Place().row()] * 4, np.float32)
    log_prior = predictor.log_prior(rows)
    assert log_prior is not None and log_prior.shape == (8, 32) and log_prior.dtype == np.float32
    t = torch.from_numpy(rows)
    want = torch_weigh(torch.log_softmax(torch.from_numpy(logits).double() / predictor.temperature(), 1),
                       torch.from_numpy(log_prior), located(t), predictor.prior_weight).exp().numpy()
    ours = weigh(log_probabilities(logits[::2], predictor.temperature()), log_prior[::2], predictor.prior_weight)
    np.testing.assert_allclose(ours, want[::2], rtol=1e-9, atol=1e-12)


def test_predict_flags_weigh_every_image_and_rows_keep_the_image_only_answer(prior_run: Path, field_run: FieldRun,
                                                                            tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    images = [str(p) for p in field_run.images[:6]]
    plain, flagged, table = tmp_path / "plain.jsonl", tmp_path / "flagged.jsonl", tmp_path / "flagged.csv"
    assert main(["predict", str(prior_run), *images, "--out", str(plain), "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["predict", str(prior_run), *images, "--out", str(flagged), "--workers", "0", *LONDON]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "places: 6 image(s) with a place (flags 6), 0 image-only" in err and "no location prior" not in err
    for a, b in zip(jsonl(plain), jsonl(flagged), strict=True):
        assert a["place"] is None and a["image_only"] is None and a["prior_weight"] is None
        assert b["place"] == {"lat": 51.5, "lon": -0.12, "date": "2021-06-14", "day": 165, "source": "flags",
                              "date_source": "flags", "problem": None}
        assert b["prior_weight"] == 1.0 and core(b["image_only"]) == core(a)
        assert [g["probability"] for g in b["guesses"]] != [g["probability"] for g in a["guesses"]]
    assert main(["predict", str(prior_run), *images, "--out", str(table), "--workers", "0", *LONDON, "-k", "2"]) == 0
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    first = jsonl(plain)[0]
    assert rows[0]["place_lat"] == "51.5" and rows[0]["place_lon"] == "-0.12" and rows[0]["place_day"] == "165"
    assert (rows[0]["place_date"], rows[0]["place_source"], rows[0]["place_problem"], rows[0]["prior_weight"]) == (
        "2021-06-14", "flags", "", "1")
    assert rows[0]["image_only_taxon"] == first["guesses"][0]["taxon"]
    assert float(rows[0]["image_only_probability"]) == pytest.approx(first["guesses"][0]["probability"], abs=1e-6)
    assert rows[0]["image_only_answer_taxon"] == first["answer"]["taxon"]
    capsys.readouterr()
    assert main(["predict", str(prior_run), images[0], "--workers", "0", *LONDON]) == 0  # a table on the terminal
    out = " ".join(capsys.readouterr().out.split())
    assert "place: 51.5, -0.12, 2021-06-14 (flags)" in out
    assert f"from the image alone: {first['guesses'][0]['taxon']} ({100 * first['guesses'][0]['probability']:.1f}%)" in out


def test_exif_places_a_mixed_folder_malformed_gps_is_counted_and_flags_win(prior_run: Path, field_run: FieldRun,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "trip"
    folder.mkdir()
    src = field_run.images
    jpeg_with_gps(src[0], folder / "a-sydney.jpg", {1: "S", 2: deg(33.87), 3: "E", 4: deg(151.21)})
    jpeg_with_gps(src[1], folder / "b-quito.jpg", {1: "N", 2: deg(0.2), 3: "W", 4: deg(78.5)})
    jpeg_with_gps(src[2], folder / "c-broken.jpg", {1: "N", 2: (IFDRational(1, 0), IFDRational(0, 1), IFDRational(0, 1)),
                                                    3: "E", 4: deg(10)})
    for i in (3, 4, 5):
        (folder / f"d-{i}.jpg").write_bytes(src[i].read_bytes())
    out = tmp_path / "trip.jsonl"
    assert main(["predict", str(prior_run), str(folder), "--out", str(out), "--workers", "0"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "places: 2 image(s) with a place (exif 2), 4 image-only, 1 of them with malformed EXIF GPS" in err
    assert "malformed GPS in" in err and "c-broken.jpg: GPSLatitude has a zero denominator" in err
    rows = {Path(r["image"]).name: r for r in jsonl(out)}
    sydney = rows["a-sydney.jpg"]["place"]
    assert sydney["source"] == "exif" and sydney["lat"] == pytest.approx(-33.87) and sydney["lon"] == pytest.approx(151.21)
    assert rows["a-sydney.jpg"]["image_only"] is not None and rows["c-broken.jpg"]["image_only"] is None
    assert rows["c-broken.jpg"]["place"]["problem"] == "GPSLatitude has a zero denominator"
    # the unlocated rows of the mixed batch are bitwise the engine's answers with no places at all
    clf = Classifier.load(prior_run, device="cpu")
    paths = sorted(folder.iterdir())
    bare, _ = clf.predict_files(paths, clf.scorer(), exif=False, workers=0, progress=False)
    for p in bare:
        row = rows[Path(p.path).name]
        assert p.place is None and p.image_only is None
        assert core(row["image_only"] if row["image_only"] is not None else row) == core(p.to_json())
        if row["image_only"] is None:
            assert json.dumps(row["guesses"]) == json.dumps(p.to_json()["guesses"])
    assert main(["predict", str(prior_run), str(folder), "--out", str(out), "--workers", "0", "--lat", "10", "--lon", "20"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "places: 6 image(s) with a place (flags 6), 0 image-only" in err and "malformed" not in err
    assert {(r["place"]["lat"], r["place"]["lon"], r["place"]["source"]) for r in jsonl(out)} == {(10.0, 20.0, "flags")}


@pytest.mark.parametrize(("flags", "message"), [
    (["--lat", "95", "--lon", "10"], "--lat/--lon: latitude 95.0 is outside -90..90"),
    (["--lat", "10", "--lon", "-181"], "--lat/--lon: longitude -181.0 is outside -180..180"),
    (["--lat", "abc", "--lon", "10"], "latitude 'abc' and longitude '10' must both be numbers"),
    (["--lat", "NaN", "--lon", "10"], "latitude 'NaN' or longitude '10' is NaN"),
    (["--date", "2021-13-45"], "--date: '2021-13-45' is not a date"),
    (["--lat", "10"], "give both"),
])
def test_wrong_flags_are_usage_errors_naming_the_value(field_run: FieldRun, capsys: pytest.CaptureFixture[str],
                                                      flags: list[str], message: str) -> None:
    assert main(["predict", str(field_run.run), str(field_run.images[0]), *flags]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_a_model_without_a_prior_records_the_place_and_changes_nothing(field_run: FieldRun, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    images = [str(p) for p in field_run.images[:3]]
    plain, placed = tmp_path / "plain.jsonl", tmp_path / "placed.jsonl"
    assert main(["predict", str(field_run.run), *images, "--out", str(plain), "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["predict", str(field_run.run), *images, "--out", str(placed), "--workers", "0", *LONDON]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("the model has no location prior: the place of 3 image(s) was recorded but changed nothing") == 1
    for a, b in zip(jsonl(plain), jsonl(placed), strict=True):
        assert core(a) == core(b) and b["place"]["source"] == "flags" and b["image_only"] is None and b["prior_weight"] is None


def test_places_for_all_or_per_image_and_wrong_ones(prior_run: Path, field_run: FieldRun) -> None:
    clf = Classifier.load(prior_run, device="cpu")
    images = field_run.images[:3]
    one = clf.predict(images, places=Place(51.5, -0.12, 165.0), exif=False)
    same = clf.predict(images, places=(51.5, -0.12, dt.date(2021, 6, 14)), exif=False)
    assert [json.dumps(p.to_json()["guesses"]) for p in one] == [json.dumps(p.to_json()["guesses"]) for p in same]
    assert all(p.place is not None and p.place.located and p.image_only is not None for p in one)
    dated = clf.predict(images[0], places=Place(day=165.0), exif=False)[0]  # a date alone places nothing
    assert dated.place is not None and not dated.place.located and dated.image_only is None
    crop = open_image(images[0]).crop((2, 2, 40, 40))
    per = clf.predict([images[0], crop], places=[None, (10, 20)])
    assert per[0].place is None and per[1].place is not None and per[1].path == "<image 1>"
    with pytest.raises(UsageError, match=r"places: 2 places for 3 images"):
        clf.predict(images, places=[(1, 2), (3, 4)])
    with pytest.raises(UsageError, match=r"places\[1\]: lat/lon: latitude 95.0 is outside"):
        clf.predict(images[:2], places=[(1, 2), (95, 4)])
    with pytest.raises(UsageError, match=r"places: 'here'"):
        clf.predict(images[:1], places="here")  # type: ignore[arg-type]


def test_exif_of_a_path_or_an_opened_photo_places_it(prior_run: Path, field_run: FieldRun, tmp_path: Path) -> None:
    clf = Classifier.load(prior_run, device="cpu")
    photo = jpeg_with_gps(field_run.images[7], tmp_path / "gps.jpg", {1: "N", 2: deg(48.85), 3: "E", 4: deg(2.35)})
    by_path, by_image = clf.predict([photo, Image.open(photo)])
    assert by_path.place is not None and by_path.place.source == "exif" and by_path.image_only is not None
    assert by_image.place == by_path.place and by_image.guesses == by_path.guesses
    assert clf.predict(photo, exif=False)[0].place is None
    buf = io.BytesIO()
    Image.open(photo).save(buf, "PNG")
    assert clf.predict(np.asarray(Image.open(buf)))[0].place is None  # an array carries no EXIF


def test_the_onnx_export_weighs_like_the_checkpoint(prior_run: Path, field_run: FieldRun, tmp_path: Path) -> None:
    from lit.field.onnx_export import export_onnx
    folder, _ = export_onnx(prior_run, tmp_path / "export", verify_limit=4)
    onnx, torch_clf = Classifier.load(folder), Classifier.load(prior_run, device="cpu")
    images = field_run.images[:6]
    places = [(51.5, -0.12, "2021-06-14"), None] * 3
    got: list[Prediction] = onnx.predict(images, places=places, exif=False)
    bare = onnx.predict(images, exif=False)
    want = torch_clf.predict(images, places=places, exif=False)
    for place, a, b, c in zip(places, got, bare, want, strict=True):
        if place is None:
            assert json.dumps(a.to_json()) == json.dumps(b.to_json())
        else:
            assert a.image_only is not None and json.dumps(a.image_only.to_json()) == core(b.to_json())
        assert [g.taxon for g in a.guesses] == [g.taxon for g in c.guesses]
        assert [g.probability for g in a.guesses] == pytest.approx([g.probability for g in c.guesses], abs=2e-3)
