"""`lit predict`'s class embeddings on disk: built once, used while their inputs stay the same, never after."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from lit.config import CaptionConfig
from lit.data.toy import toy_categories
from lit.eval.classifier_cache import KEEP, cache_dir, classifier_key, load_or_build
from lit.eval.templates import resolve_templates


class Builds:
    """A stand-in for build_classifier that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return torch.randn(5, 8)


def test_built_once_then_loaded(tmp_path: Path) -> None:
    build, key = Builds(), {"checkpoint": "a", "classes": 5}
    first = load_or_build(tmp_path / "c", key, build)
    again = load_or_build(tmp_path / "c", key, build)
    assert build.calls == 1 and torch.equal(first, again)
    other = load_or_build(tmp_path / "c", {"checkpoint": "b", "classes": 5}, build)
    assert build.calls == 2 and not torch.equal(first, other)


def test_a_damaged_or_foreign_file_is_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build, key = Builds(), {"checkpoint": "a", "classes": 5}
    load_or_build(tmp_path, key, build)
    (path,) = tmp_path.glob("classifier-*.pt")
    path.write_bytes(b"torn")
    with caplog.at_level(logging.WARNING, logger="lit"):
        rebuilt = load_or_build(tmp_path, key, build)
    assert build.calls == 2 and "unreadable" in caplog.text
    torch.save({"key": {"checkpoint": "other"}, "weights": rebuilt}, path)  # same name, other inputs
    with caplog.at_level(logging.WARNING, logger="lit"):
        load_or_build(tmp_path, key, build)
    assert build.calls == 3 and "saved for other inputs" in caplog.text


def test_keeps_the_most_recently_used(tmp_path: Path) -> None:
    build, files = Builds(), []
    for i in range(KEEP):
        before = set(tmp_path.glob("*.pt"))
        load_or_build(tmp_path, {"checkpoint": str(i)}, build)
        (new,) = set(tmp_path.glob("*.pt")) - before
        os.utime(new, ns=(i * 10**9, i * 10**9))  # file i was used at second i: no ties whatever the clock
        files.append(new)
    load_or_build(tmp_path, {"checkpoint": "0"}, build)  # used again: now the newest
    load_or_build(tmp_path, {"checkpoint": "new"}, build)  # one too many: the least recently used goes
    assert build.calls == KEEP + 1 and len(list(tmp_path.glob("*.pt"))) == KEEP
    assert files[0].exists() and not files[1].exists() and all(f.exists() for f in files[2:])


def test_an_unwritable_folder_costs_a_rebuild_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("not a folder")
    build = Builds()
    with caplog.at_level(logging.WARNING, logger="lit"):
        load_or_build(tmp_path / "file" / "classifiers", {"checkpoint": "a"}, build)
    assert build.calls == 1 and "could not keep" in caplog.text


def test_key_follows_checkpoint_classes_and_templates(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000007.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    cats, captions = toy_categories(), CaptionConfig()
    paper, simple = resolve_templates(("paper",), captions), resolve_templates(("simple",), captions)
    key = classifier_key(ckpt, cats, paper)
    assert json.loads(json.dumps(key)) == key == classifier_key(ckpt, cats, paper)
    assert classifier_key(ckpt, cats, simple) != key
    assert classifier_key(ckpt, cats[:-1], paper) != key
    ckpt.write_bytes(b"new weights")  # a checkpoint saved again under the same name
    assert classifier_key(ckpt, cats, paper) != key
    assert cache_dir(ckpt) == (tmp_path / "run" / "eval" / "classifiers").resolve()
    assert cache_dir(tmp_path / "run" / "checkpoints" / ".." / "x.pt") == (tmp_path / "run" / "classifiers").resolve()
