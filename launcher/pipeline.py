"""The whole job as one submission: its stages (shards → embed → train → eval) as SLURM jobs chained with afterok.

- Each stage is one submitit job with its own resources (`pipeline.<stage>`, the `slurm` section
  filling what a stage leaves unset); training is `launcher.task.Task`, the others `StageTask`.
- A stage whose outputs are already complete and match the job is skipped (`lit.stages.state`).
- Each job depends on the one before it (`afterok`) with `--kill-on-invalid-dep=yes`: when a stage
  fails for good, SLURM cancels the stages after it instead of leaving them pending forever.
- `RUN_DIR/pipeline.jsonl` records each submission (stage → job id); a stage's bookkeeping lives in
  its home (`RUN_DIR` for training, `RUN_DIR/stages/NAME` for the others); `status`, `cancel` and
  `resume` read them.
"""

from __future__ import annotations

from dataclasses import replace
from os import PathLike
from typing import Any

from launcher import clusters, logger
from launcher.preflight import PreflightFailed, preflight
from launcher.rundir import RunDir
from launcher.spec import prepare, render_sbatch
from launcher.stage_task import StageTask
from launcher.submit import clean_submit_env, resume_config, schedule_changes_of
from launcher.task import Task
from lit import stages
from lit.config import STAGES, Config, StageConfig
from lit.configlib import ConfigError
from lit.errors import UsageError

OUTPUT_KEYS = {"shards": ("data.train_shards", "data.val_shards"), "embed": ("data.train_embeddings", "data.val_embeddings")}
"""Preflight checks of paths a stage of the submission makes: they need not exist yet."""


def stage_config(cfg: Config, stage: str) -> Config:
    """The job's config with the stage's resources in its slurm section (training: the job as it is)."""
    if stage == "train":
        return cfg
    res: StageConfig = getattr(cfg.pipeline, stage)
    s = cfg.slurm
    gpus = s.gpus_per_node if res.gpus_per_node is None else res.gpus_per_node
    slurm = replace(
        s, nodes=res.nodes or s.nodes, gpus_per_node=gpus,
        tasks_per_node=res.tasks_per_node or (s.tasks_per_node if res.gpus_per_node is None else 0),
        cpus_per_task=res.cpus_per_task or s.cpus_per_task, mem_gb=res.mem_gb or s.mem_gb, time_min=res.time_min or s.time_min,
        partition=res.partition or s.partition, constraint=res.constraint or (s.constraint if gpus else ""),
        exclusive=s.exclusive and bool(gpus),
    )
    train = cfg.train if gpus else replace(cfg.train, device="cpu")
    return replace(cfg, name=f"{cfg.name}-{stage}", slurm=slurm, train=train)


def chosen_stages(cfg: Config, only: str | None) -> list[str]:
    """The stages to run: `--stages a,b` or the job's pipeline.stages (train alone when both are empty)."""
    names = [s.strip() for s in only.split(",") if s.strip()] if only else list(cfg.pipeline.stages or ("train",))
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise UsageError("stages", f"{unknown[0]!r} is not a stage; choose from {', '.join(STAGES)}")
    if "embed" in names and cfg.data.image_source != "cached":
        raise UsageError("stages", "the embed stage makes cached embeddings: set data.image_source=cached")
    return sorted(names, key=STAGES.index)


def plan(cfg: Config, names: list[str], again: dict[str, str] | None = None) -> list[tuple[str, stages.StageState]]:
    """Each chosen stage with its state; complete stages before the first incomplete one are skipped.

    `again`: stages that run whatever their state, with the reason (a resume that changes the training's schedule).
    """
    out = []
    behind = False  # a stage after one that runs always runs: its inputs are about to change
    for name in names:
        state = stages.state(cfg, name)
        if state.complete and name in (again or {}):
            state = stages.StageState(False, (again or {})[name])
        elif behind and state.complete:
            state = stages.StageState(False, f"runs after a stage that runs ({state.detail})")
        behind = behind or not state.complete
        out.append((name, state))
    return out


def _task(cfg: Config, stage: str) -> Task | StageTask:
    address = clusters.of(cfg).address()
    if stage == "train":
        return Task(cfg, *address)
    return StageTask(cfg, stage, str(RunDir(cfg.run_dir).stage(stage)), *address)


def checks(cfg: Config, names: list[str]) -> None:
    """Preflight of the first stage's config, not failing on paths that earlier stages of this submission make."""
    made = {k for s in names for k in OUTPUT_KEYS.get(s, ())}
    try:
        preflight(cfg)
    except PreflightFailed as err:
        failed = [c for c in err.checks if c.status == "fail" and c.name not in made]
        if failed:
            raise PreflightFailed(failed) from err


def submit(cfg: Config, only: str | None = None, kind: str = "submit", again: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Submit the stages that are not complete, each after the one before; returns the chain (one record per stage)."""
    cfg = prepare(cfg)
    if not clusters.of(cfg).scheduled:
        raise ConfigError("", "cluster", "a pipeline runs stages as SLURM jobs: set cluster=slurm "
                          "(locally, run `lit shards`/`lit embed` and submit the training alone)")
    names = chosen_stages(cfg, only)
    checks(cfg, names)
    run = RunDir(cfg.run_dir)
    run.save_config(cfg)
    chain = submit_chain(cfg, plan(cfg, names, again), kind)
    run.record_chain(kind, chain)
    return chain


def submit_chain(cfg: Config, planned: list[tuple[str, stages.StageState]], kind: str = "submit",
                 after: str | None = None) -> list[dict[str, Any]]:
    """Submit each planned stage that is not complete after the one before (the first after `after`): the chain."""
    chain: list[dict[str, Any]] = []
    for name, state in planned:
        if state.complete:
            chain.append({"stage": name, "job_id": None, "skipped": True, "detail": state.detail})
            continue
        sub_cfg = stage_config(cfg, name)
        where = RunDir(cfg.run_dir).stage(name)
        where.save_config(sub_cfg)
        executor = clusters.of(cfg).executor(sub_cfg, where.path, after)
        with clean_submit_env():
            job = executor.submit(_task(sub_cfg, name))
        where.record_job(kind, job.job_id, cfg.cluster, stage=name, after=after)
        after = str(job.job_id)
        chain.append({"stage": name, "job_id": after, "skipped": False, "detail": state.detail})
        logger.info("%s: stage %s is job %s", kind, name, after)
    return chain


def dry_run_text(cfg: Config, only: str | None = None) -> str:
    """Every stage's sbatch script and the chain, as `submit` would make them."""
    cfg = prepare(cfg)
    names = chosen_stages(cfg, only)
    parts: list[str] = []
    previous: str | None = None
    for name, state in plan(cfg, names):
        if state.complete:
            parts.append(f"## stage {name}: skipped ({state.detail})")
            continue
        dep = f"<job id of {previous}>" if previous else None
        parts.append(f"## stage {name} ({state.detail})" + (f", after {previous} succeeds" if previous else "")
                     + f"\n{render_sbatch(stage_config(cfg, name), RunDir(cfg.run_dir).stage(name).path, dep)}")
        previous = name
    chain = " → ".join(f"{n}{' (skipped)' if s.complete else ''}" for n, s in plan(cfg, names))
    return "\n\n".join([f"# pipeline of {cfg.name}: {chain}", *parts])


def active_jobs(run: RunDir) -> list[str]:
    """The jobs of the newest submission that are still queued or running."""
    kind = clusters.of(run.config())
    return [e["job_id"] for e in run.last_chain() if e["job_id"] and clusters.is_active(kind.state(e["job_id"]))]


def cancel(run_dir: str | PathLike[str]) -> list[str]:
    """Cancel every job of the newest submission that is still queued or running; returns their ids."""
    run = RunDir(run_dir)
    ids = active_jobs(run)
    clusters.of(run.config()).cancel(ids)
    run.record_chain_cancel(ids)
    return ids


def resume(run_dir: str | PathLike[str], overrides: list[str] | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Submit again from the first stage that is not complete (the stages of the last submission).

    Checked at submit time as every resume is (`launcher.submit.resume_config`): a schedule change of
    the training is refused with its `key: old → new` list (unless made on purpose: then the training
    runs again, as a run's resume would), and so is a resume while a job of the chain is queued or
    running, or once every stage is complete. `dry_run`: the same checks and the chain as planned; nothing submitted.
    """
    run = RunDir(run_dir)
    names = [e["stage"] for e in run.last_chain()]
    active = active_jobs(run)
    if active:
        raise ConfigError(str(run), "run_dir", f"jobs {', '.join(active)} of this pipeline are still queued or running: "
                          f"wait for them or `python -m launcher cancel {run}` first")
    cfg = resume_config(run, overrides or (), result_ok=True)
    changes = schedule_changes_of(run.config(), cfg)
    again = {"train": "resumed with a new schedule: " + "; ".join(changes)} if changes and "train" in names else {}
    planned = plan(prepare(cfg), names, again)
    if all(state.complete for _, state in planned):
        raise ConfigError(str(run), "run_dir", "every stage of this pipeline is complete ("
                          + "; ".join(f"{name}: {state.detail}" for name, state in planned) + "): nothing to resume")
    if dry_run:
        checks(prepare(cfg), names)
        return [{"stage": name, "job_id": None, "skipped": state.complete,
                 "detail": state.detail if state.complete else "would be submitted (dry run)"} for name, state in planned]
    return submit(cfg, ",".join(names), kind="resume", again=again)


__all__ = ["OUTPUT_KEYS", "active_jobs", "cancel", "checks", "chosen_stages", "dry_run_text", "plan", "resume", "stage_config",
           "submit", "submit_chain"]
