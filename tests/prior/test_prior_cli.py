"""`lit prior JOB.yaml`: trains, then `--map SPECIES` draws a range; a wrong species or date is a usage error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lit.cli import main
from tests.prior.test_prior_train import write_ranges

SMALL = ["prior.epochs=2", "prior.batch_size=256", "prior.width=32", "prior.depth=1"]


@pytest.fixture(scope="module")
def job_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("prior-cli")
    job = tmp / "job.yaml"
    job.write_text(yaml.safe_dump({"data": {"root": str(write_ranges(tmp / "data"))}, "run_dir": str(tmp / "run")}))
    return job


def test_prior_trains_then_maps_a_species_by_common_name(job_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prior", str(job_file), *SMALL, "--no-progress", "--map", "yellow garden spider",
                 "--map-date", "2021-06-14"]) == 0
    out = capsys.readouterr().out
    png = job_file.parent / "run" / "prior" / "map-Argiope_aurantia.png"
    assert "120 training observations" in out and png.is_file()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 600 and len(np.unique(np.asarray(im.convert("L")))) > 20


@pytest.mark.parametrize("args, message", [
    (["--map", "Quercus nonexistens"], "--map: 'Quercus nonexistens' is not a species of this prior"),
    (["--map", "Argiope aurantia", "--map-date", "2021-13-40"], "--map-date: '2021-13-40' is not a date"),
])
def test_a_wrong_species_or_date_is_a_usage_error(job_file: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                                  message: str) -> None:
    assert main(["prior", str(job_file), *SMALL, "--no-progress", *args]) == 2
    captured = capsys.readouterr()
    assert message in " ".join((captured.out + captured.err).split())
