"""README.md keeps its promises: the two set-up commands, and a configuration reference that matches the code."""

from __future__ import annotations

from pathlib import Path

from lit import config
from lit.configdoc import field_docs, splice

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_names_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_configuration_reference_matches_the_code() -> None:
    text = README.read_text()
    assert splice(text) == text, "README.md is stale: run `python -m lit.configdoc --write`"


def test_every_config_field_has_a_docstring() -> None:
    import dataclasses

    docs = field_docs()
    for cls in (config.Config, config.DataConfig, config.CaptionConfig, config.ShardConfig, config.ModelConfig,
                config.TrainConfig, config.CheckpointConfig, config.EvalConfig, config.SlurmConfig, config.ContainerConfig):
        for f in dataclasses.fields(cls):
            assert docs[cls.__name__].get(f.name), f"{cls.__name__}.{f.name} has no docstring"
