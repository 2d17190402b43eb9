"""Atomic checkpoints: temp file, flush, fsync, rename; `latest` pointer; keep the last K.

Loaded with `torch.load(weights_only=True)`; a file that fails to load is skipped in favour of
the previous one, so a crash mid-write never blocks a resume.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from lit.log import logger

FORMAT_VERSION = 1
NAME = re.compile(r"^step-(\d{8,})\.pt$")


def ckpt_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def path_for(run_dir: str | Path, step: int) -> Path:
    return ckpt_dir(run_dir) / f"step-{step:08d}.pt"


def atomic_write(path: Path, write: Any) -> None:
    """`write(file)` into a temporary file beside `path`, synced, then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(run_dir: str | Path, state: dict[str, Any], keep_last: int) -> Path:
    """Write `state` as the checkpoint of its step, point `latest` at it, delete old ones."""
    state = {"format_version": FORMAT_VERSION, **state}
    path = path_for(run_dir, int(state["step"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write(path.parent / "latest", lambda f: f.write(path.name.encode() + b"\n"))
    purge(run_dir, keep_last)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint files, oldest first (temp files never match the name pattern)."""
    folder = ckpt_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def purge(run_dir: str | Path, keep_last: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    state = torch.load(path, map_location=map_location, weights_only=True)
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {version} is not {FORMAT_VERSION}; it was written by another version of lit")
    return state


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, or None; unreadable files are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load(path, map_location)
        except Exception as err:  # a truncated or foreign file must not block the resume
            logger.warning("skipping unreadable checkpoint %s: %s", path, err)
    return None
