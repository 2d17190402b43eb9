"""The config tree: YAML loading, dotted-path errors, type-checked overrides, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit.config import Config, dump_config, load_config, save_config, with_overrides
from lit.configlib import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_documented() -> None:
    cfg = load_config()
    assert cfg.model.lock_image and cfg.captions.recipe == "paper"
    assert cfg.train.precision == "fp32"


def test_unknown_key_names_file_and_dotted_path(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: 0.001\n  warmup_step: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "train.warmup_step" in str(err.value)
    assert "warmup_steps" in str(err.value)  # the message lists what is accepted


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer, got 'big'"):
        load_config(write(tmp_path, "data:\n  batch_size: big\n"))
    with pytest.raises(ConfigError, match=r"train\.precision"):
        load_config(write(tmp_path, "train:\n  precision: fp8\n"))
    with pytest.raises(ConfigError, match=r"eval\.templates\[1\]"):
        load_config(write(tmp_path, "eval:\n  templates: [paper, 3]\n"))


def test_validation_errors_carry_the_dotted_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"slurm\.nodes: must be >= 1, got 0"):
        load_config(write(tmp_path, "slurm:\n  nodes: 0\n"))
    with pytest.raises(ConfigError, match=r"slurm\.tasks_per_node"):
        load_config(None, ["slurm.gpus_per_node=4", "slurm.tasks_per_node=8"])
    with pytest.raises(ConfigError, match=r"data\.augment"):
        load_config(None, ["data.image_source=cached", "data.augment=true"])


def test_overrides_are_type_checked(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "train:\n  lr: 0.001\n"), ["train.lr=2e-4", "data.batch_size=32", "eval.templates=[paper,openai]"])
    assert cfg.train.lr == pytest.approx(2e-4) and cfg.data.batch_size == 32
    assert cfg.eval.templates == ("paper", "openai")
    with pytest.raises(ConfigError, match=r"overrides: data\.batch_size"):
        load_config(None, ["data.batch_size=1.5"])
    with pytest.raises(ConfigError, match=r"nope: unknown key"):
        load_config(None, ["nope.key=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.lr"])


def test_mistake_in_file_is_reported_against_the_file_even_with_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: fast\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.lr=0.1"])
    assert str(err.value).startswith(str(path))


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = with_overrides(Config(), ["model.config={embed_dim: 8, vision_cfg: {}, text_cfg: {}}", "container.binds=[/a:/b]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert dump_config(again) == dump_config(cfg)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_the_loss_is_clip_unless_asked_and_the_paper_jobs_keep_it() -> None:
    assert load_config().train.loss == "clip"
    assert load_config(None, ["train.loss=siglip"]).train.loss == "siglip"
    with pytest.raises(ConfigError, match=r"train\.loss"):
        load_config(None, ["train.loss=sigmoid"])
    jobs = sorted((Path(__file__).resolve().parents[1] / "jobs").glob("inat21-vitl14-warmup*.yaml"))
    assert len(jobs) == 3 and all(load_config(job).train.loss == "clip" for job in jobs)
