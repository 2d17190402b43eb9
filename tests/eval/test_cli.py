"""`lit eval` and `lit predict` on a tiny checkpoint; probabilities summed up the tree."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_checkpoint

from lit.cli import main
from lit.config import Config
from lit.data.inat import RANKS
from lit.data.taxonomy import Taxonomy, rank_probabilities, top_k
from lit.data.toy import toy_categories
from lit.model import BuiltModel


@pytest.fixture
def tiny_run(tiny: BuiltModel, toy_val: Path, tmp_path: Path, config_for: Callable[..., Config]) -> Path:
    cfg = config_for(tmp_path / "run", toy_val)
    save_tiny_checkpoint(cfg, tiny, step=7)
    return tmp_path / "run"


def test_lit_eval_writes_results(tiny_run: Path, toy_val: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--checkpoint", str(tiny_run), "--data", str(toy_val), "--templates", "paper,simple"]) == 0
    out_dir = tiny_run / "eval" / "step-00000007-paper+simple"
    result = json.loads((out_dir / "results.json").read_text())
    assert result["checkpoint"]["step"] == 7 and result["checkpoint"]["path"].endswith("step-00000007.pt")
    assert result["templates"] == ["paper", "simple"] and result["num_samples"] == 128
    assert (out_dir / "plots" / "accuracy.png").is_file()
    printed = capsys.readouterr().out
    assert "LiT OpenCLIP" in printed and "63.28" in printed and "rank: genus" in printed


def test_lit_eval_reports_bad_arguments(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert main(["eval", "--checkpoint", str(tiny_run), "--data", str(tmp_path)]) == 2
    assert main(["eval", "--checkpoint", str(tiny_run), "--templates", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "--data" in err and "imagenet" in err


def test_lit_predict(tiny_run: Path, toy_val: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    images = sorted((toy_val.parent / "toy" / "val").rglob("*.jpg"))[:2]
    args = ["predict", "--checkpoint", str(tiny_run), *map(str, images), "--rank", "genus", "-k", "3", "--json"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert len(list((tiny_run / "eval" / "classifiers").glob("classifier-*.pt"))) == 1

    def no_build(*a: object, **k: object) -> None:
        raise AssertionError("the class embeddings were built again")

    monkeypatch.setattr("lit.eval.zeroshot.build_classifier", no_build)
    assert main(args) == 0 and capsys.readouterr().out == printed  # the kept class embeddings, the same answer
    monkeypatch.undo()
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    assert [line["image"] for line in lines] == list(map(str, images))
    guesses = lines[0]["guesses"]
    assert len(guesses) == 3 and all(g["rank"] == "genus" and len(g["lineage"]) == 6 for g in guesses)
    assert guesses[0]["probability"] >= guesses[1]["probability"] >= guesses[2]["probability"]
    assert all(g["probability"] >= g["species_probability"] - 1e-6 for g in guesses)  # a genus holds its species
    assert main(["predict", "--checkpoint", str(tiny_run), str(images[0])]) == 0
    assert "common name" in capsys.readouterr().out
    capsys.readouterr()
    # a file that is not an image is skipped and listed, and the exit code says so (1); a usage error is 2
    assert main(["predict", "--checkpoint", str(tiny_run), str(toy_val / "manifest.json")]) == 1
    assert "0 image(s) predicted, 1 skipped" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tiny_run), str(images[0]), "--top", "0"]) == 2


def test_probabilities_sum_up_the_tree() -> None:
    cats = toy_categories()
    tax = Taxonomy.of(cats)
    torch.manual_seed(0)
    probs = torch.randn(3, len(cats), dtype=torch.float64).softmax(-1).numpy()
    for rank in RANKS:
        taxa = rank_probabilities(probs, tax, rank)
        np.testing.assert_allclose(taxa.sum(-1), np.ones(3))
    # genus Cepaea nemoralis / Cornu aspersum are two genera; the two Asteraceae plants share a family
    family = rank_probabilities(probs, tax, "family")[0]
    asteraceae = [i for i, c in enumerate(cats) if c.family == "Asteraceae"]
    fid = int(tax.ids[RANKS.index("family"), asteraceae[0]])
    assert family[fid] == pytest.approx(probs[0, asteraceae].sum())
    guesses = top_k(probs[0], cats, tax, k=40, rank="family")
    assert len(guesses) == len(tax.lineages[RANKS.index("family")])
    best = next(g for g in guesses if g.taxon == "Asteraceae")
    assert abs(best.probability - float(probs[0, asteraceae].sum())) < 1e-6
    assert best.species.id in {cats[i].id for i in asteraceae}
    assert best.species_probability == pytest.approx(float(probs[0, asteraceae].max()))



def test_eval_takes_its_settings_as_overrides_and_reads_the_old_flags_as_them(
        tiny_run: Path, toy_val: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["eval", str(tiny_run), "--data", str(toy_val), "eval.hardest=2", "--no-tables", "--out", str(out),
                 "--batch-size", "8", "data.workers=0"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert len(result["hardest"]) == 2 and result["setup"]["batch_size"] == 8
    assert main(["eval", str(tiny_run), "model.name=lit-tiny"]) == 2
    assert "lit eval takes eval.* and data.workers overrides" in " ".join(capsys.readouterr().err.split())
