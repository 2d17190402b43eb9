"""`lit eval --open-clip`: a whole pretrained open_clip model from local files, evaluated as a checkpoint is."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import save_tiny_checkpoint

from lit.cli import main
from lit.config import Config, save_config
from lit.model import BuiltModel


def test_an_exported_model_evaluates_to_the_same_numbers_as_its_checkpoint(
        tiny: BuiltModel, toy_val: Path, tmp_path: Path, config_for: Callable[..., Config], capsys: pytest.CaptureFixture[str]) -> None:
    from lit.field.open_clip_export import export

    cfg = config_for(tmp_path / "run", toy_val)
    save_tiny_checkpoint(cfg, tiny, step=7)
    folder = export(cfg.run_dir, tmp_path / "export")  # an open_clip folder, as BioCLIP's repository is one
    save_config(cfg, tmp_path / "job.yaml")
    assert main(["eval", "--checkpoint", cfg.run_dir, "--out", str(tmp_path / "ours"), "--quiet"]) == 0
    assert main(["eval", "--open-clip", f"local-dir:{folder}", "--config", str(tmp_path / "job.yaml"), "--quiet"]) == 0
    ours = json.loads((tmp_path / "ours/results.json").read_text())
    theirs = json.loads((tmp_path / "run/baselines/export/results.json").read_text())  # default: RUN_DIR/baselines/NAME
    assert theirs["num_samples"] == ours["num_samples"] == 128 and theirs["num_classes"] == 32
    assert (theirs["top1"], theirs["top5"], theirs["per_rank"]) == (ours["top1"], ours["top5"], ours["per_rank"])
    assert theirs["checkpoint"] == {"path": f"local-dir:{folder}", "step": None, "baseline": True}
    assert theirs["setup"]["image_source"] == "raw"


def test_baseline_arguments_are_checked(tmp_path: Path, toy_val: Path, config_for: Callable[..., Config],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    save_config(config_for(tmp_path / "run", toy_val), tmp_path / "job.yaml")
    assert main(["eval", "--open-clip", f"local-dir:{tmp_path}"]) == 2
    assert "lit eval JOB.yaml --open-clip SPEC" in " ".join(capsys.readouterr().err.split())
    assert main(["eval", str(tmp_path / "job.yaml"), "--open-clip", f"local-dir:{tmp_path}"]) == 2
    assert "no open_clip_config.json" in capsys.readouterr().err
    assert main(["eval", "--open-clip", "ViT-L-14:/nowhere/weights.pt", "--config", str(tmp_path / "job.yaml")]) == 2
    assert "nothing is downloaded" in capsys.readouterr().err
    assert main(["eval", "--open-clip", "bioclip", "--config", str(tmp_path / "job.yaml")]) == 2
    assert "local-dir:DIR or ARCH:FILE" in capsys.readouterr().err
