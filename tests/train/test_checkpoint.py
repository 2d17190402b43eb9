"""Checkpoint files: retention, unreadable files skipped by name, readable-but-foreign files refused, never a silent restart."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lit import checkpoint
from lit.checkpoint import CheckpointError

FULL = {"samples_seen": 0, "total_steps": 10, "optimizer": {}, "scaler": {}, "rng": [], "tower_fingerprint": "x",
        "config": "", "world_size": 1}


def state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, **FULL}


def names(run_dir: Path) -> list[str]:
    return [p.name for p in checkpoint.list_checkpoints(run_dir)]


def test_save_keeps_the_last_k_and_no_pointer(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step-00000001.pt\n")  # left by an older version
    for step in (2, 4, 6, 8):
        checkpoint.save(tmp_path, state(step), keep_last=2)
    assert names(tmp_path) == ["step-00000006.pt", "step-00000008.pt"]
    assert not (tmp_path / "checkpoints" / "latest").exists()  # the listing is the only truth
    path, loaded = checkpoint.choose(tmp_path)
    assert loaded["step"] == 8 and torch.equal(loaded["model"]["w"], torch.full((3,), 8.0))
    assert loaded["format_version"] == checkpoint.FORMAT_VERSION
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # nothing half-written is left


def test_unreadable_files_are_skipped_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    checkpoint.save(tmp_path, state(4), keep_last=3)
    folder = tmp_path / "checkpoints"
    (folder / ".step-00000006.pt.tmp-123").write_bytes(b"half a checkpoint")  # a writer killed mid-way
    whole = (folder / "step-00000004.pt").read_bytes()
    (folder / "step-00000008.pt").write_bytes(whole[: len(whole) // 2])  # truncated under a final name
    torch.save({"step": 9, "model": {}}, folder / "step-00000009.pt")  # a torch file, not a checkpoint
    torch.save({"format_version": 1, "step": 10}, folder / "step-00000010.pt")  # a missing key
    with caplog.at_level(logging.WARNING, logger="lit"):
        path, loaded = checkpoint.choose(tmp_path)
    assert path.name == "step-00000004.pt" and loaded["step"] == 4
    warned = caplog.text
    for name in ("step-00000008.pt", "step-00000009.pt", "step-00000010.pt"):
        assert f"skipping unreadable checkpoint {folder / name}" in warned
    assert "missing key(s) model" in warned


def test_another_format_version_is_an_error_not_a_skip(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, state(4), keep_last=3)
    torch.save({**state(6), "format_version": 99}, checkpoint.path_for(tmp_path, 6))
    with pytest.raises(CheckpointError, match=r"step-00000006.pt: checkpoint: checkpoint format 99 found.*reads format 1"):
        checkpoint.choose(tmp_path)


def test_a_folder_of_only_unreadable_checkpoints_refuses_to_restart(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "step-00000100.pt").write_bytes(b"garbage")
    (folder / "step-00000200.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        checkpoint.choose(tmp_path)
    text = str(err.value)
    assert "none of the 2 checkpoint(s) can be read" in text and "step-00000100.pt" in text and "step-00000200.pt" in text
    assert "restore a readable checkpoint" in text and "new folder" in text


def test_no_checkpoint_means_a_fresh_start(tmp_path: Path) -> None:
    assert checkpoint.choose(tmp_path) is None


def test_purge_counts_only_readable_files(tmp_path: Path) -> None:
    """An unreadable newer file must not push readable ones out (the bug: keep-K by step kept garbage)."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "step-00000900.pt").write_bytes(b"torn at step 900")
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, state(step), keep_last=2)
    assert names(tmp_path) == ["step-00000020.pt", "step-00000030.pt", "step-00000900.pt"]
    path, loaded = checkpoint.choose(tmp_path)
    assert loaded["step"] == 30
    # the file just written stays even when older files look newer by step
    checkpoint.save(tmp_path, state(5), keep_last=1)
    assert "step-00000005.pt" in names(tmp_path)


def test_load_of_one_file_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "step-00000001.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"step-00000001.pt: checkpoint: cannot be read"):
        checkpoint.load(bad)
