"""Building models leaves nothing in the temporary directory, and open_clip keeps every registration."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import pytest
import torch

from lit.config import ModelConfig
from lit.model import build_model, clip_api, model_config_dict

TINY = ModelConfig(name="lit-tiny", image_weights="")


def _configs() -> tuple[ModelConfig, ModelConfig]:
    """The tiny model under a name no other test registers, and a second config: a wider joint embedding."""
    tiny = model_config_dict(TINY)
    wider = {**tiny, "embed_dim": 2 * tiny["embed_dim"]}
    return (ModelConfig(name="tempdir-test-tiny", image_weights="", config=tiny),
            ModelConfig(name="tempdir-test-wide", image_weights="", config=wider))


def _architecture(cfg: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    built = build_model(cfg)
    return [(name, tuple(p.shape)) for name, p in built.model.state_dict().items()]


def test_model_builds_leave_the_temp_directory_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    (temp / "someone-elses-file").write_text("kept")
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert tempfile.gettempdir() == str(temp)
    before = sorted(p.name for p in temp.iterdir())

    tiny, other = _configs()
    known = set(open_clip.list_models())
    first = build_model(tiny)
    again = _architecture(tiny)
    wide = build_model(other)
    assert sorted(p.name for p in temp.iterdir()) == before

    # the same config twice: one registration, the same architecture
    assert again == [(n, tuple(p.shape)) for n, p in first.model.state_dict().items()]
    assert set(open_clip.list_models()) - known == {first.open_clip_name, wide.open_clip_name}  # registered here, once each
    image = torch.zeros(1, 3, 32, 32)
    assert clip_api(first.model).encode_image(image).shape == (1, 32)
    assert clip_api(wide.model).encode_image(image).shape == (1, 64)
    # open_clip still knows both configs though their files are gone, after later rescans too
    for built, cfg in ((first, tiny), (wide, other)):
        registered = open_clip.get_model_config(built.open_clip_name)
        assert registered is not None and registered["embed_dim"] == model_config_dict(cfg)["embed_dim"]
    with tempfile.TemporaryDirectory() as folder:  # another registration rescans every path open_clip was given
        extra = Path(folder) / "lit-test-rescan.json"
        extra.write_text(json.dumps(model_config_dict(other)))
        open_clip.add_model_config(extra)
    assert open_clip.get_model_config(first.open_clip_name) is not None
    assert open_clip.get_model_config(wide.open_clip_name) is not None
    assert _architecture(other) == [(n, tuple(p.shape)) for n, p in wide.model.state_dict().items()]
    assert sorted(p.name for p in temp.iterdir()) == before
