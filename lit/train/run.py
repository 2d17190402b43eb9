"""`run(cfg)`: the whole training job of one rank, from config to checkpoints, metrics, plots and evaluation.

Resumes from the newest complete checkpoint in the run directory; a stop signal ends it at an
agreed step boundary with a checkpoint and EXIT_PREEMPTED.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit import checkpoint, dist, signals
from lit.checkpoint import CheckpointError
from lit.config import Config, dump_config, save_config
from lit.configlib import ConfigError
from lit.data.folders import ShardFolder, open_folder
from lit.data.loader import Stream, batch_counts, check_shard_count, make_loader, train_pipeline
from lit.data.views import train_transform
from lit.io import read_jsonl
from lit.log import logger, setup_logging
from lit.model import BuiltModel, build_model, describe, fingerprint, preprocess_cfg
from lit.train.loop import Trainer, rng_state, set_rng_state
from lit.train.metrics_log import MetricsWriter
from lit.train.optim import lr_at
from lit.train.progress import TrainProgress
from lit.train.resume import agree_on_checkpoint, check_schedule

EXIT_OK = 0
EXIT_DIVERGED = 65
"""The run diverged (lit.train.divergence): a `diverged` line in metrics.jsonl says when and why."""


@dataclass(frozen=True)
class StepPlan:
    """How samples map onto optimizer steps and epochs (the learning-rate shape is `lit.train.optim.lr_at`)."""

    samples_per_epoch: int
    global_batch: int
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def training_folder(cfg: Config) -> ShardFolder:
    if cfg.data.image_source == "cached":
        return open_folder(cfg.data.train_embeddings, "data.train_embeddings", "lit embed")
    return open_folder(cfg.data.train_shards, "data.train_shards", "lit shards")


def plan_steps(cfg: Config, folder: ShardFolder, world: int) -> StepPlan:
    samples = cfg.data.samples_per_epoch or folder.samples
    global_batch = cfg.data.batch_size * world * cfg.train.accum_steps
    steps = samples // global_batch
    if steps < 1:
        raise ConfigError("", "data.batch_size", f"one step takes {global_batch} samples (batch_size x world x accum_steps) but an epoch has {samples}")
    return StepPlan(samples, global_batch, steps, cfg.train.epochs)


def siglip_bias(cfg: Config, world: int) -> float:
    """A sigmoid model's initial logit bias: train.siglip_bias, or -log(the pairs' batch: data.batch_size x world)."""
    if cfg.train.siglip_bias is not None:
        return float(cfg.train.siglip_bias)
    return -math.log(cfg.data.batch_size * world)


def check_cache(cfg: Config, folder: ShardFolder, tower_fingerprint: str) -> None:
    """A cache is only valid for the exact frozen tower and preprocessing that made it."""
    made_with = folder.manifest.get("fingerprint")
    if made_with != tower_fingerprint:
        raise ConfigError(
            "", "data.train_embeddings",
            f"{folder.path} was made by another image tower or preprocessing (fingerprint {str(made_with)[:12]} "
            f"vs this model's {tower_fingerprint[:12]}): rerun `lit embed` with this job's model",
        )
    from lit.data.embed import view_spec

    made = {k: folder.manifest.get(k, 1 if k == "views" else "" if k == "view_policy" else 0) for k in view_spec(cfg)}
    if made != view_spec(cfg):
        raise ConfigError(
            "", "data.views",
            f"{folder.path} holds views made with {made}, this job asks for {view_spec(cfg)}: rerun `lit embed` with "
            "this job's data.views / data.view_policy / data.view_seed, or set them as the cache was made",
        )


def epoch_batches(cfg: Config, built: BuiltModel, folder: ShardFolder, info: dist.DistInfo, epoch: int, skip: int) -> Iterator[dict[str, Any]]:
    cached = cfg.data.image_source == "cached"
    views = cfg.data.views
    stream = Stream(
        urls=folder.urls, cached=cached,
        preprocess=None if cached else (built.preprocess_train if cfg.data.augment else built.preprocess_val),
        tokenizer=built.tokenizer, seed=cfg.train.seed, views=views, view_seed=cfg.data.view_seed,
        view_transform=train_transform(cfg.data.view_policy, preprocess_cfg(built.model)) if views > 1 and not cached else None,
    )
    # Workers skip whole rounds before decoding; the rest of a round is read and dropped here.
    rest = skip % max(1, cfg.data.workers)
    pipeline = train_pipeline(
        stream, epoch=epoch, rank=info.rank, world=info.world_size, batch_size=cfg.data.batch_size,
        shuffle_buffer=cfg.data.shuffle_buffer, skip_micro_batches=skip - rest, workers=cfg.data.workers,
    )
    batches = iter(make_loader(pipeline, cfg.data.workers, seed=cfg.train.seed * 1000 + epoch))
    for _ in range(rest):
        next(batches)
    return batches


def resume_state(cfg: Config, trainer: Trainer, tower_fp: str, info: dist.DistInfo) -> tuple[int, str, list[str]]:
    """Load the checkpoint all ranks agree on into the trainer: (step, file name, schedule changes); (0, "", []) if new."""
    if not cfg.checkpoint.resume:
        return 0, "", []
    found = agree_on_checkpoint(cfg.run_dir, info)
    if found is None:
        return 0, "", []
    path, state = found
    changes = check_schedule(path, state, cfg, info.world_size, trainer.total_steps)
    if state["tower_fingerprint"] != tower_fp:
        raise CheckpointError(
            path, f"trained on another frozen image tower (fingerprint {str(state['tower_fingerprint'])[:12]}, "
            f"this config's model gives {tower_fp[:12]})",
            "Restore the model settings and weight files the run started with (model.*), or use a new run_dir",
        )
    try:
        trainer.load_state_dict(state)
    except (ValueError, RuntimeError) as err:  # missing/unexpected keys; tensors of another shape
        raise CheckpointError(path, f"holds another model than this config builds ({err})",
                              "Restore the run's model settings (model.*, train.loss), or use a new run_dir") from err
    rngs = state["rng"]
    set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
    return trainer.step, path.name, changes


def save_checkpoint(cfg: Config, trainer: Trainer, tower_fp: str, info: dist.DistInfo, epoch: int) -> None:
    """Gather every rank's RNG state; rank 0 writes the file atomically."""
    states = dist.gather_objects(rng_state())
    if info.is_main:
        payload = trainer.state_dict()
        payload.update(epoch=epoch, rng=states, tower_fingerprint=tower_fp, config=dump_config(cfg), world_size=info.world_size)
        path = checkpoint.save(cfg.run_dir, payload, cfg.checkpoint.keep_last)
        logger.info("checkpoint %s (step %d)", path.name, trainer.step)
    dist.barrier()


def run(cfg: Config) -> int:
    """Train one rank. Returns EXIT_OK when finished, signals.EXIT_PREEMPTED after a stop request."""
    info = dist.resolve()
    setup_logging(rank=info.rank)
    device = dist.pick_device(info, cfg.train.device)
    dist.init(info, device)
    try:
        return _run(cfg, info, device)
    finally:
        dist.shutdown()


def _run(cfg: Config, info: dist.DistInfo, device: torch.device) -> int:
    run_dir = Path(cfg.run_dir)
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")
    folder = training_folder(cfg)
    check_shard_count(len(folder.urls), cfg.data.workers, info.world_size, folder.path)
    plan = plan_steps(cfg, folder, info.world_size)
    built = build_model(cfg.model, device, seed=cfg.train.seed, loss=cfg.train.loss)
    tower_fp = fingerprint(built.model, built.preprocess_val)
    bias = getattr(built.model, "logit_bias", None)
    if bias is not None:  # a sigmoid model; a resumed run then loads its trained bias over this
        with torch.no_grad():
            bias.fill_(siglip_bias(cfg, info.world_size))
    if cfg.data.image_source == "cached":
        check_cache(cfg, folder, tower_fp)
    counts = describe(built.model)
    logger.info(
        "model %s: image tower %.2fM parameters (%s), text side %.2fM, trainable %.2fM; %d ranks (%s), device %s",
        cfg.model.name, counts["image_params"] / 1e6, "frozen" if counts["image_trainable"] == 0 else "partly trainable",
        counts["text_params"] / 1e6, counts["trainable"] / 1e6, info.world_size, info.source, device,
    )
    trainer = Trainer(cfg, built, info, device, plan.total_steps, plan.steps_per_epoch)
    start_step, resumed_from, changes = resume_state(cfg, trainer, tower_fp, info)
    metrics = MetricsWriter(run_dir, enabled=info.is_main, tensorboard=cfg.train.tensorboard)
    metrics.write("start", start_step, resumed_from=resumed_from, world_size=info.world_size,
                  total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch, schedule_changes=changes, **counts)
    if resumed_from:
        logger.info("resumed from %s at step %d of %d", resumed_from, start_step, plan.total_steps)
    previous = signals.install()
    try:
        return _loop(cfg, built, folder, info, trainer, plan, metrics, tower_fp)
    finally:
        signals.restore(previous)
        metrics.close()


def _loop(cfg: Config, built: BuiltModel, folder: ShardFolder, info: dist.DistInfo, trainer: Trainer,
          plan: StepPlan, metrics: MetricsWriter, tower_fp: str) -> int:
    accum = cfg.train.accum_steps
    stop_at = cfg.train.stop_at_step or plan.total_steps
    progress = TrainProgress(plan.total_steps, trainer.step, enabled=info.is_main)
    with progress:
        while trainer.step < plan.total_steps:
            epoch = trainer.step // plan.steps_per_epoch
            epoch_end = (epoch + 1) * plan.steps_per_epoch
            skip = (trainer.step - epoch * plan.steps_per_epoch) * accum
            batches = batch_counts(epoch_batches(cfg, built, folder, info, epoch, skip))
            tick = time.perf_counter()
            while trainer.step < epoch_end:
                micro = [next(batches) for _ in range(accum)]
                bad = micro[-1][1]
                out = trainer.train_step([b for b, _ in micro])
                now = time.perf_counter()
                rate = plan.global_batch / max(now - tick, 1e-9)
                tick = now
                progress.update(trainer.step, out, rate)
                if trainer.step % cfg.train.log_every == 0 or trainer.step == epoch_end:
                    bad_total = int(dist.all_reduce_sum(torch.tensor([float(bad)], device=trainer.device)).item())
                    metrics.write("train", trainer.step, epoch=epoch, samples=trainer.samples_seen,
                                  samples_per_s=round(rate, 2), bad_samples=bad_total, **out)
                why_diverged = trainer.watch.after_step(trainer.step, out["loss"])
                if trainer.step == epoch_end and why_diverged is None:
                    why_diverged = trainer.watch.end_epoch(trainer.step, epoch)
                if dist.any_rank(why_diverged is not None, trainer.device):
                    return _diverged(cfg, info, metrics, plan, trainer.step, why_diverged or "another rank's loss is not finite")
                stop = dist.any_rank(signals.requested(), trainer.device)
                every = cfg.checkpoint.every_steps
                if stop or trainer.step == epoch_end or trainer.step >= stop_at or (every and trainer.step % every == 0):
                    save_checkpoint(cfg, trainer, tower_fp, info, epoch)
                stop_early = stop_at < plan.total_steps and trainer.step >= stop_at
                if stop or stop_early:
                    why = signals.reason() if stop else f"train.stop_at_step={stop_at}"
                    metrics.write("stop", trainer.step, reason=why)
                    logger.warning("stopped at step %d (%s): checkpoint saved, resume continues from here", trainer.step, why)
                    return signals.EXIT_PREEMPTED if stop else EXIT_OK
            del batches
            metrics.write("epoch", trainer.step, epoch=epoch)
            _maybe_evaluate(cfg, built, info, trainer, metrics, epoch)
    _plot(cfg, info, metrics, plan)
    if cfg.eval.final:
        _evaluate(cfg, built, info, trainer, metrics, final=True)
    metrics.write("done", trainer.step, samples=trainer.samples_seen)
    return EXIT_OK


def _plot(cfg: Config, info: dist.DistInfo, metrics: MetricsWriter, plan: StepPlan) -> None:
    if info.is_main:
        from lit.plots import training_curves

        lrs = [lr_at(s, plan.total_steps, cfg.train) for s in range(plan.total_steps)]
        training_curves(read_jsonl(metrics.path), Path(cfg.run_dir) / "plots" / "training.png", lrs)


def _diverged(cfg: Config, info: dist.DistInfo, metrics: MetricsWriter, plan: StepPlan, step: int, reason: str) -> int:
    """End a diverged run: no checkpoint (its weights are what diverged), a `diverged` line, the plots."""
    metrics.write("diverged", step, reason=reason)
    logger.error("diverged at step %d: %s (lower train.lr or raise train.warmup_steps)", step, reason)
    _plot(cfg, info, metrics, plan)
    return EXIT_DIVERGED


def _maybe_evaluate(cfg: Config, built: BuiltModel, info: dist.DistInfo, trainer: Trainer, metrics: MetricsWriter, epoch: int) -> None:
    every = cfg.eval.every_epochs
    last_epoch = epoch + 1 == cfg.train.epochs
    if every and (epoch + 1) % every == 0 and not (last_epoch and cfg.eval.final):
        _evaluate(cfg, built, info, trainer, metrics, final=False)


def _evaluate(cfg: Config, built: BuiltModel, info: dist.DistInfo, trainer: Trainer, metrics: MetricsWriter, final: bool) -> None:
    from lit.eval.runner import evaluate_model

    result = evaluate_model(cfg, built, info, subset=0 if final else cfg.eval.subset, write_results=final)
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    scalars.update({f"top1_{rank}": acc for rank, acc in result.get("per_rank", {}).items()})
    metrics.write("eval", trainer.step, final=final, **scalars)
