"""Checkpoint files of a run: atomic saves, loading that fails loudly, retention, and the trained model.

- A checkpoint is `RUN/checkpoints/step-NNNNNNNN.pt`, written through `lit.io.atomic_file` and read
  with `torch.load(weights_only=True)`. There is no `latest` pointer: the newest loadable file is
  found by listing, so a pointer can never disagree with the files (an old one is removed).
- Only an *unreadable* file (truncated, not a torch file, a missing key) is skipped, with a warning
  naming it. A readable checkpoint of another format version is a `CheckpointError`; a run folder
  whose checkpoints are all unreadable refuses to start again at step 0 (`choose`).
- Retention keeps the newest `keep_last` *readable* files and never the unreadable ones in their place.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from lit.config import Config, config_from_dict
from lit.configlib import ConfigError
from lit.io import atomic_file
from lit.log import logger

if TYPE_CHECKING:
    from lit.model import BuiltModel

FORMAT_VERSION = 1
NAME = re.compile(r"^step-(\d{8,})\.pt$")
REQUIRED = ("format_version", "step", "model")
"""Keys every checkpoint has; a file without one of them is unreadable (not ours, or damaged)."""
TRAINING_KEYS = ("samples_seen", "total_steps", "optimizer", "scaler", "rng", "tower_fingerprint", "config", "world_size")
"""Keys a training resume needs on top of REQUIRED."""


class CheckpointError(ConfigError):
    """A readable checkpoint that this run cannot continue from: names the file, what was found and the fix."""

    label = "checkpoint error"

    def __init__(self, path: str | Path, found: str, fix: str) -> None:
        super().__init__(str(path), "checkpoint", f"{found}. {fix}")


class Unreadable(Exception):
    """A checkpoint file that cannot be read: truncated, not a torch file, or without the keys of one."""


def ckpt_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def path_for(run_dir: str | Path, step: int) -> Path:
    return ckpt_dir(run_dir) / f"step-{step:08d}.pt"


def step_of(path: Path) -> int:
    match = NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not named like a checkpoint (step-NNNNNNNN.pt)")
    return int(match.group(1))


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files by step, oldest first (temporary files never match the name pattern)."""
    folder = ckpt_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save(run_dir: str | Path, state: dict[str, Any], keep_last: int) -> Path:
    """Write `state` as the checkpoint of its step, then apply retention."""
    state = {"format_version": FORMAT_VERSION, **state}
    path = path_for(run_dir, int(state["step"]))
    with atomic_file(path) as f:
        torch.save(state, f)
    (path.parent / "latest").unlink(missing_ok=True)  # written by older versions; listing is the truth now
    purge(run_dir, keep_last, keep=path)
    return path


def looks_complete(path: Path) -> bool:
    """Cheap test of a file torch wrote: a zip whose central directory (written last) is intact."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def purge(run_dir: str | Path, keep_last: int, keep: Path | None = None) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints; returns the deleted files.

    `keep` (the file just written) always stays. Incomplete files are neither counted nor deleted:
    they are left for a person to inspect (resume skips them with a warning).
    """
    complete = [p for p in list_checkpoints(run_dir) if p == keep or looks_complete(p)]
    kept = set(complete[-keep_last:]) | ({keep} if keep else set())
    deleted = [p for p in complete if p not in kept]
    for old in deleted:
        old.unlink(missing_ok=True)
    return deleted


def read(path: str | Path, map_location: str | torch.device = "cpu", keys: tuple[str, ...] = REQUIRED,
         mmap: bool = False) -> dict[str, Any]:
    """Load one checkpoint. Raises Unreadable for a damaged or foreign file, CheckpointError for another format."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, zipfile errors...
        raise Unreadable(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    if not isinstance(state, dict):
        raise Unreadable(f"holds a {type(state).__name__}, not a checkpoint")
    missing = [k for k in keys if k not in state]
    if "format_version" in missing:
        raise Unreadable("no format_version: not a lit checkpoint")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            path, f"checkpoint format {state['format_version']!r} found, this version of lit reads format {FORMAT_VERSION}",
            "Continue the run with the version of lit that wrote it, or start a new run_dir",
        )
    if missing:
        raise Unreadable(f"missing key(s) {', '.join(missing)}")
    return state


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """One checkpoint file (evaluation, export): an unreadable file is a CheckpointError here."""
    try:
        return read(path, map_location)
    except Unreadable as err:
        raise CheckpointError(path, f"cannot be read ({err})", "Pass another checkpoint file or run directory") from err


def peek(path: str | Path) -> dict[str, Any]:
    """A checkpoint's small fields without reading its tensors (memory-mapped): for launchers and status."""
    state = read(path, "cpu", mmap=True)
    return {k: v for k, v in state.items() if not isinstance(v, (dict, list, torch.Tensor))}


def choose(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, or None when the run has none.

    Unreadable files are skipped with a warning naming each. When files exist but none can be
    read, this raises instead of letting the run start again at step 0 over them.
    """
    files = list_checkpoints(run_dir)
    skipped = []
    for path in reversed(files):
        try:
            return path, read(path, map_location, REQUIRED + TRAINING_KEYS)
        except Unreadable as err:
            logger.warning("skipping unreadable checkpoint %s: %s", path, err)
            skipped.append(f"{path.name} ({err})")
    if files:
        raise CheckpointError(
            ckpt_dir(run_dir), f"none of the {len(files)} checkpoint(s) can be read: {'; '.join(skipped)}",
            "The run will not start again at step 0 over them: restore a readable checkpoint file into this folder, "
            "or set run_dir to a new folder to start a new run",
        )
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory / checkpoints folder (its newest checkpoint)."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path, path.parent):
        found = list_checkpoints(folder)
        if found:
            return found[-1]
    raise ConfigError("", "checkpoint", f"{path} is neither a checkpoint file nor a run directory with checkpoints")


def saved_config(path: str | Path, state: dict[str, Any]) -> Config:
    """The resolved config a checkpoint was written with."""
    return config_from_dict(yaml.safe_load(state["config"]), f"{path} (saved config)")


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Config, BuiltModel, dict[str, Any]]:
    """The checkpoint's config, its model with trained weights (frozen tower verified), and the raw state."""
    from lit.model import build_model, fingerprint  # open_clip: only where a model is built (launcher status stays fast)

    path = resolve_checkpoint(path)
    state = load(path)
    cfg = saved_config(path, state)
    built = build_model(cfg.model, "cpu", seed=cfg.train.seed, loss=cfg.train.loss)
    if fingerprint(built.model, built.preprocess_val) != state["tower_fingerprint"]:
        raise ConfigError(
            str(path), "model",
            "the frozen image tower built from the saved config differs from the one this run trained with: "
            "the local weight files changed since (model.image_weights / model.pretrained)",
        )
    missing, unexpected = built.model.load_state_dict(state["model"], strict=False)
    if unexpected or any(not k.startswith("visual.") for k in missing):
        raise ConfigError(str(path), "model", f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    built.model.to(device).eval()
    return cfg, built, state


__all__ = [
    "CheckpointError", "FORMAT_VERSION", "NAME", "Unreadable", "choose", "ckpt_dir", "list_checkpoints", "load",
    "looks_complete", "model_from_checkpoint", "path_for", "peek", "purge", "read", "resolve_checkpoint", "save",
    "saved_config", "step_of",
]
