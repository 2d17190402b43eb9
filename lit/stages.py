"""The job's stages as library calls: what each one writes, whether that is already complete, and running it.

shards (`lit shards`, train and val) → embed (`lit embed`, train and val; cached jobs) → train → eval,
and beside them prior (`lit prior`: the location prior, from the annotations alone), which only eval
reads. `NEEDS` says which stages' outputs each one reads. A stage never knows it is in a pipeline:
it reads its inputs' manifests and writes its own; the launcher only orders the stages and reports
(`launcher.pipeline`). Every stage can be asked to stop (`should_stop`): it finishes the unit in
flight (a shard, a training step) or checkpoints (the prior) and returns `stopped`; a re-run goes
on where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lit.config import STAGES, Config
from lit.io import file_sha256
from lit.runlog import MetricsLog

EVAL_DIR = "eval/final"
"""Where the eval stage writes results.json and its plots, inside the run directory."""
NEEDS: dict[str, tuple[str, ...]] = {
    "prior": (), "shards": (), "embed": ("shards",), "train": ("shards", "embed"), "eval": ("prior", "shards", "embed", "train"),
}
"""The stages whose outputs each stage reads (eval reports with and without the prior; training never reads it)."""


@dataclass(frozen=True)
class StageState:
    """Whether a stage's outputs are complete and match the job, and why (for status and --dry-run)."""

    complete: bool
    detail: str


def upstream(stage: str) -> set[str]:
    """Every stage whose outputs `stage` reads, directly or through another stage."""
    found: set[str] = set()
    todo = list(NEEDS[stage])
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += NEEDS[name]
    return found


def _manifest(folder: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def splits(cfg: Config) -> list[tuple[str, str, str]]:
    """(split, image shards folder, embeddings folder) of the job."""
    return [("train", cfg.data.train_shards, cfg.data.train_embeddings), ("val", cfg.data.val_shards, cfg.data.val_embeddings)]


def shards_state(cfg: Config) -> StageState:
    for split, folder, _ in splits(cfg):
        m = _manifest(folder)
        if m is None:
            return StageState(False, f"{folder}: no manifest")
        annotations = Path(cfg.data.root) / f"{split}.json"
        if annotations.is_file() and m.get("source", {}).get("sha256") != file_sha256(annotations):
            return StageState(False, f"{folder}: made from another {annotations.name}")
        want = {"recipe": cfg.captions.recipe, "samples_per_shard": cfg.shards.samples_per_shard, "seed": cfg.shards.seed}
        got = {k: m.get(k) for k in want}
        if got != want:
            return StageState(False, f"{folder}: made with {got}, the job asks for {want}")
    return StageState(True, "train and val shards complete")


def embed_state(cfg: Config) -> StageState:
    for _, shards, emb in splits(cfg):
        m = _manifest(emb)
        if m is None:
            return StageState(False, f"{emb}: no manifest")
        source = Path(shards) / "manifest.json"
        if not source.is_file() or m.get("source_manifest_sha256") != file_sha256(source):
            return StageState(False, f"{emb}: made from other shards than {shards}")
        if m.get("model") != cfg.model.name or m.get("dtype") != cfg.pipeline.embed_dtype:
            return StageState(False, f"{emb}: made by {m.get('model')} in {m.get('dtype')}, the job asks for "
                                     f"{cfg.model.name} in {cfg.pipeline.embed_dtype}")
        if emb == cfg.data.train_embeddings and int(m.get("views", 1)) != cfg.data.views:
            return StageState(False, f"{emb}: {m.get('views', 1)} view(s) per image, the job asks for {cfg.data.views}")
    return StageState(True, "train and val embeddings complete")


def train_state(cfg: Config) -> StageState:
    """Complete once the run has its result (`MetricsLog.outcome`): finished, or diverged (a result, not retrained)."""
    log = MetricsLog.read(cfg.run_dir)
    outcome = log.outcome()
    if outcome == "finished":
        return StageState(True, f"trained to step {log.records[-1].step}")
    if outcome == "diverged":
        return StageState(True, log.result_text())
    return StageState(False, "not finished")


def eval_state(cfg: Config) -> StageState:
    from lit import checkpoint

    try:
        result = json.loads((Path(cfg.run_dir) / EVAL_DIR / "results.json").read_text())
    except (OSError, ValueError):
        return StageState(False, "no results yet")
    files = checkpoint.list_checkpoints(cfg.run_dir)
    step = result.get("checkpoint", {}).get("step")
    if not files or step != checkpoint.step_of(files[-1]):
        return StageState(False, f"results are of step {step}, not of the newest checkpoint")
    return StageState(True, f"top-1 {result.get('top1', 0):.2f}%, top-5 {result.get('top5', 0):.2f}%")


def prior_state(cfg: Config) -> StageState:
    """Complete once the job's prior is trained from the job's annotations with its prior settings (`lit.prior.train.complete`)."""
    from lit.prior.train import complete

    return StageState(*complete(cfg))


STATE: dict[str, Callable[[Config], StageState]] = {
    "prior": prior_state, "shards": shards_state, "embed": embed_state, "train": train_state, "eval": eval_state,
}


def state(cfg: Config, stage: str) -> StageState:
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    return STATE[stage](cfg)


def run_shards(cfg: Config, should_stop: Callable[[], bool], part: tuple[int, int] = (0, 1)) -> str:
    """Both splits' shards (validation unshuffled); 'done', 'stopped' or 'part done' (a task other than 0)."""
    from lit.data.shards import build_shards

    outcome = "done"
    for split, folder, _ in splits(cfg):
        shard_cfg = cfg.shards if split == "train" else replace(cfg.shards, shuffle=False)
        result = build_shards(cfg.data.root, split, folder, shard_cfg, cfg.captions, progress=part[0] == 0, part=part,
                              should_stop=should_stop)
        if result.get("stopped"):
            return "stopped"
        if result.get("part_done"):
            outcome = "part done"
    return outcome


def run_embed(cfg: Config, should_stop: Callable[[], bool]) -> str:
    """Both splits' embeddings with the job's frozen tower: 'done' or 'stopped'."""
    from lit.data.embed import embed_folder

    for split, shards, emb in splits(cfg):
        # validation is evaluated on the plain view: its cache needs no augmented ones
        job = cfg if split == "train" else replace(cfg, data=replace(cfg.data, views=1))
        result = embed_folder(job, shards, emb, batch_size=cfg.pipeline.embed_batch_size, dtype=cfg.pipeline.embed_dtype,
                              device=cfg.train.device, should_stop=should_stop)
        if result is not None and result.get("stopped"):
            return "stopped"
    return "done"


def run_prior(cfg: Config, should_stop: Callable[[], bool]) -> str:
    """Train the job's location prior (or go on from its checkpoint, or keep it when complete): 'done' or 'stopped'."""
    from lit.prior.train import train_prior

    return "stopped" if train_prior(cfg, should_stop, progress=False).get("stopped") else "done"


def run_eval(cfg: Config) -> dict[str, Any]:
    """Zero-shot evaluation of the newest checkpoint on the validation data into RUN/eval/final."""
    from lit.eval.runner import evaluate_checkpoint

    data = cfg.data.val_embeddings if cfg.data.image_source == "cached" else cfg.data.val_shards
    result, _ = evaluate_checkpoint(cfg.run_dir, data=data, out=Path(cfg.run_dir) / EVAL_DIR, device=cfg.train.device,
                                    progress=False)
    return result


__all__ = ["EVAL_DIR", "NEEDS", "StageState", "embed_state", "eval_state", "prior_state", "run_embed", "run_eval", "run_prior",
           "run_shards", "shards_state", "splits", "state", "train_state", "upstream"]
