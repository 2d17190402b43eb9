"""Resuming a run: one checkpoint for all ranks, and no silent change of the schedule or the data order.

1. Global rank 0 chooses the file (`lit.checkpoint.choose`); every rank loads that same file and
   checks its step. Any disagreement (a rank that cannot read it, a different step) is an error on
   every rank, never a hang and never ranks that continue from different steps.
2. The saved config is compared with this one on every key that shapes the learning-rate schedule
   or the data order (`SCHEDULE_KEYS`, the world size, the total step count): a change is refused
   with the list `key: old → new` unless `train.allow_schedule_change` is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit import checkpoint, dist
from lit.checkpoint import CheckpointError
from lit.config import Config
from lit.configlib import ConfigError, to_dict
from lit.log import logger

SCHEDULE_KEYS = (
    "train.lr", "train.min_lr", "train.warmup_steps", "train.schedule", "train.cooldown_steps", "train.epochs",
    "train.accum_steps", "train.seed", "data.batch_size", "data.samples_per_epoch", "data.workers",
    "data.shuffle_buffer", "data.views", "data.view_policy", "data.view_seed", "captions.recipe", "captions.mixed_recipes",
    "captions.prefix",
)
"""Config keys whose change in the middle of a run changes its learning rates or the samples it sees."""


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = to_dict(cfg)
    for part in dotted.split("."):
        node = node[part]
    return node


def schedule_changes(old: Config, new: Config, old_world: int, new_world: int,
                     old_total: int | None = None, new_total: int | None = None) -> list[str]:
    """`key: old → new` for every schedule-shaping difference between two configs of a run."""
    changes = [f"{key}: {_get(old, key)!r} → {_get(new, key)!r}" for key in SCHEDULE_KEYS if _get(old, key) != _get(new, key)]
    if old_world != new_world:
        changes.append(f"world size: {old_world} → {new_world}")
    if old_total is not None and new_total is not None and old_total != new_total:
        changes.append(f"total steps: {old_total} → {new_total}")
    return changes


def check_schedule(path: Path, state: dict[str, Any], cfg: Config, world: int, total_steps: int) -> list[str]:
    """The schedule changes of this resume; raises ConfigError unless train.allow_schedule_change is set."""
    saved = checkpoint.saved_config(path, state)
    changes = schedule_changes(saved, cfg, int(state["world_size"]), world, int(state["total_steps"]), total_steps)
    if changes and not cfg.train.allow_schedule_change:
        raise ConfigError(
            str(path), "train.allow_schedule_change",
            "resuming would change the schedule or the data order of the run: " + "; ".join(changes)
            + ". Resume with the original values, or set train.allow_schedule_change=true to change them on purpose",
        )
    if changes:
        logger.warning("schedule changed on purpose (train.allow_schedule_change): %s", "; ".join(changes))
    return changes


def agree_on_checkpoint(run_dir: str | Path, info: dist.DistInfo) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint every rank resumes from, loaded on every rank; None for a new run (on every rank)."""
    choice: tuple[str, Any]
    found: tuple[Path, dict[str, Any]] | None = None
    if info.is_main:
        try:
            found = checkpoint.choose(run_dir)
            choice = ("file", found[0].name if found else None)
        except ConfigError as err:
            choice = ("error", (err.source, err.key, err.detail))
    kind, value = dist.broadcast_object(choice if info.is_main else None)
    if kind == "error":
        raise ConfigError(*value)
    if value is None:
        return None
    path = checkpoint.ckpt_dir(run_dir) / value
    expected = int(checkpoint.step_of(path))
    view: tuple[int | None, str] = (expected, "")
    if found is None:
        try:
            found = path, checkpoint.read(path, "cpu", checkpoint.REQUIRED + checkpoint.TRAINING_KEYS)
            view = (int(found[1]["step"]), "")
        except (checkpoint.Unreadable, ConfigError) as err:
            view = (None, str(err))
    else:
        view = (int(found[1]["step"]), "")
    views = dist.gather_objects(view)
    wrong = [f"rank {r}: " + (f"cannot read it ({e})" if s is None else f"step {s}") for r, (s, e) in enumerate(views)
             if s != expected]
    if wrong:
        raise CheckpointError(
            path, f"rank 0 chose this checkpoint (step {expected}) but not every rank sees it so: {'; '.join(wrong)}",
            "Every rank must read the same file: check that the run directory is on a file system all nodes share "
            "and see alike, then resume again",
        )
    assert found is not None
    return found


__all__ = ["SCHEDULE_KEYS", "agree_on_checkpoint", "check_schedule", "schedule_changes"]
