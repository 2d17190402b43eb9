"""`lit predict` over folders and lists: CSV / JSONL rows, skipped files counted, subsets, back-off, both engines agreeing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lit.cli import main
from lit.data.inat import RANKS
from lit.field.scoring import Prediction
from tests.field.conftest import FieldRun


@pytest.fixture
def mixed_folder(field_run: FieldRun, tmp_path: Path) -> tuple[Path, int]:
    """A folder of 40 validation photos in sub-folders, one broken JPEG, one text file with a .png name, and a note."""
    folder = tmp_path / "photos"
    for i, src in enumerate(field_run.images[::3][:40]):
        dst = folder / f"site{i % 3}" / f"{i:03d}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    (folder / "site0" / "broken.jpg").write_bytes(field_run.images[0].read_bytes()[:300])
    (folder / "site1" / "fake.png").write_text("not a png")
    (folder / "README.txt").write_text("field notes: not an image type, not listed")
    return folder, 40


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_folder_to_csv_skips_and_counts_bad_files(field_run: FieldRun, mixed_folder: tuple[Path, int], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder, good = mixed_folder
    out = tmp_path / "predictions.csv"
    rc = main(["predict", "--checkpoint", str(field_run.run), str(folder), "--out", str(out), "--batch-size", "8",
               "--workers", "2", "--min-confidence", "0.2"])
    assert rc == 1  # something was skipped
    err = capsys.readouterr().err
    assert f"{good} image(s) predicted, 2 skipped" in err and "broken.jpg" in err and "fake.png" in err
    listed = (tmp_path / "predictions.csv.skipped.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in listed) == ["broken.jpg", "fake.png"]
    rows = read_csv(out)
    assert len(rows) == good and all(r["path"].endswith(".jpg") and "broken" not in r["path"] for r in rows)
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)  # input order
    for r in rows:
        probs = [float(r[f"probability_{i}"]) for i in range(1, 6)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert r["common_name_1"] and len(r["lineage_1"].split(" > ")) == 7
        assert r["answer_rank"] in (*RANKS, "") and (r["answer_rank"] == "" or float(r["answer_probability"]) >= 0.2)
        if r["answer_rank"] == "species":
            assert r["answer_taxon"] == r["taxon_1"]
        elif r["answer_rank"]:
            assert float(r["probability_1"]) < 0.2  # it backed off because the species was not sure enough
    only_good = [str(p) for p in sorted(folder.rglob("0*.jpg"))][:5]
    assert main(["predict", "--checkpoint", str(field_run.run), *only_good, "--out", str(tmp_path / "p.jsonl")]) == 0


def test_list_file_jsonl_subset_and_back_off(field_run: FieldRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(str(p) for p in field_run.images[:10]) + "\n")
    out = tmp_path / "birds.jsonl"
    assert main(["predict", "--checkpoint", str(field_run.run), str(listing), "--out", str(out), "--subset",
                 "supercategory=Birds", "--subset", "genus=Vulpes", "--min-confidence", "0.6", "-k", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in field_run.images[:10]]
    allowed = {"Boissonneaua flavescens", "Cardinalis cardinalis", "Pica hudsonia", "Ardea herodias", "Vulpes vulpes"}
    for r in rows:
        assert len(r["guesses"]) == 3 and {g["species"] for g in r["guesses"]} <= allowed
        answer = r["answer"]
        assert answer["min_confidence"] == 0.6
        assert answer["rank"] is None or answer["probability"] >= 0.6
        if answer["rank"] != "species":
            assert r["guesses"][0]["probability"] < 0.6
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(field_run.run), str(listing), "--subset", "family=Felidae"]) == 2
    assert "no class has family 'Felidae'" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(field_run.run), str(listing), "--out", str(tmp_path / "x.txt")]) == 2


def test_onnx_export_predicts_like_the_checkpoint(field_run: FieldRun, field_export: tuple[Path, dict], tmp_path: Path) -> None:
    images = [str(p) for p in field_run.images[:24]]
    a, b = tmp_path / "torch.jsonl", tmp_path / "onnx.jsonl"
    assert main(["predict", str(field_run.run), *images, "--out", str(a), "--rank", "genus"]) == 0
    assert main(["predict", "--model", str(field_export[0]), *images, "--out", str(b), "--rank", "genus"]) == 0  # older spelling
    for x, y in zip(*(map(json.loads, p.read_text().splitlines()) for p in (a, b))):
        assert [g["taxon"] for g in x["guesses"]] == [g["taxon"] for g in y["guesses"]]
        assert [g["probability"] for g in x["guesses"]] == pytest.approx([g["probability"] for g in y["guesses"]], abs=2e-3)
    assert main(["predict", "--checkpoint", str(field_run.run), "--model", str(field_export[0]), images[0]]) == 2  # one model


@pytest.mark.parametrize("engine", ["--model", "--checkpoint"])
def test_broken_links_in_a_folder_are_skipped_and_thin_images_predicted(engine: str, field_run: FieldRun,
                                                                        field_export: tuple[Path, dict], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A link to a deleted photo inside a folder is listed as skipped (exit 1), like one named on the command line."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for src in field_run.images[:3]:
        (folder / src.name).write_bytes(src.read_bytes())
    Image.new("RGB", (1, 30_000), (90, 140, 60)).save(folder / "thin.png")  # 224 x 6,720,000 if resized before the crop
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    target = str(field_export[0]) if engine == "--model" else str(field_run.run)
    out = tmp_path / "p.csv"
    assert main(["predict", engine, target, str(folder), "--out", str(out), "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "4 image(s) predicted, 1 skipped" in err and "gone.jpg" in err
    listed = (tmp_path / "p.csv.skipped.txt").read_text().splitlines()
    assert [Path(line.split("\t")[0]).name for line in listed] == ["gone.jpg"] and "broken link" in listed[0]
    assert sorted(Path(r["path"]).name for r in read_csv(out)) == sorted([*(p.name for p in field_run.images[:3]), "thin.png"])


def test_without_keep_every_row_reaches_on_rows_and_none_is_kept(field_run: FieldRun, mixed_folder: tuple[Path, int]) -> None:
    """`lit predict`'s path: rows go to the writer batch by batch; the list a million photos would fill stays empty."""
    from lit.field.classifier import Classifier
    from lit.field.images import discover

    clf = Classifier.load(field_run.run, device="cpu")
    paths, _ = discover([str(mixed_folder[0])])
    kept, skipped = clf.predict_files(paths, clf.scorer(), batch_size=8, workers=0, progress=False)
    seen: list[list[Prediction]] = []
    none, skipped_too = clf.predict_files(paths, clf.scorer(), batch_size=8, workers=0, progress=False,
                                          on_rows=seen.append, keep=False)
    assert none == [] and len(seen) >= 5  # 40 photos in batches of 8
    assert [json.dumps(p.to_json()) for rows in seen for p in rows] == [json.dumps(p.to_json()) for p in kept]
    assert [s.path for s in skipped_too] == [s.path for s in skipped] and len(skipped) == 2


def test_the_tally_counts_places_and_lists_the_first_malformed(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from lit.data.places import Place
    from lit.field.exif import PlaceUsed
    from lit.field.results import Tally, print_places
    from lit.field.scoring import Answer

    here = PlaceUsed(Place(10.0, 20.0, 150.0), "flags", date="2021-05-30")
    broken = PlaceUsed(Place(), "exif", problem="GPSLatitude has a zero denominator")
    unknown = Answer(None, "unknown", (), 0.0, 0.0)
    tally = Tally(limit=3)
    tally.add([Prediction(f"a{i}.jpg", [], unknown, place=here) for i in range(4)])  # located, no prior: unweighed
    tally.add([Prediction(f"b{i}.jpg", [], unknown, place=broken) for i in range(5)])
    tally.add([Prediction("c.jpg", [], unknown)])
    assert (tally.predicted, tally.located, tally.unweighed, tally.malformed_count) == (10, 4, 4, 5)
    print_places(tally, Console(stderr=True, width=200))
    err = capsys.readouterr().err
    assert "places: 4 image(s) with a place (flags 4), 6 image-only, 5 of them with malformed EXIF GPS" in err
    assert err.count("malformed GPS in b") == 3 and "... and 2 more" in err and "place of 4 image(s) was recorded" in err
