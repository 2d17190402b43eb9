"""Atomic checkpoint files: pointer, retention, partial and corrupt files never block a resume."""

from __future__ import annotations

from pathlib import Path

import torch

from lit.train import checkpoint


def state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "rng": [{"torch": torch.get_rng_state()}]}


def test_save_points_latest_and_keeps_the_last_k(tmp_path: Path) -> None:
    for step in (2, 4, 6, 8):
        checkpoint.save(tmp_path, state(step), keep_last=2)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["step-00000006.pt", "step-00000008.pt"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000008.pt"
    path, loaded = checkpoint.load_latest(tmp_path)
    assert loaded["step"] == 8 and torch.equal(loaded["model"]["w"], torch.full((3,), 8.0))
    assert loaded["format_version"] == checkpoint.FORMAT_VERSION
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # nothing half-written is left


def test_partial_and_corrupt_files_are_skipped(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, state(4), keep_last=3)
    folder = tmp_path / "checkpoints"
    (folder / ".step-00000006.pt.tmp-123").write_bytes(b"half a checkpoint")  # a writer killed mid-way
    (folder / "step-00000008.pt").write_bytes(b"PK\x03\x04 not really a zip")  # a damaged file under a final name
    path, loaded = checkpoint.load_latest(tmp_path)
    assert path.name == "step-00000004.pt" and loaded["step"] == 4


def test_no_checkpoint_means_a_fresh_start(tmp_path: Path) -> None:
    assert checkpoint.load_latest(tmp_path) is None
