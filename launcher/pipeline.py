"""The whole job as one submission: its stages (prior, shards → embed → train → eval) as SLURM jobs linked by afterok.

- Each stage is one submitit job with its own resources (`pipeline.<stage>`, the `slurm` section
  filling what a stage leaves unset); training is `launcher.task.Task`, the others `StageTask`.
- A stage whose outputs are already complete and match the job is skipped (`lit.stages.state`);
  a stage that reads what a stage of this submission makes runs again (`lit.stages.NEEDS`).
- Each job waits for the jobs of this submission whose outputs it reads (`afterok`: `waits_for`;
  the prior runs beside shards and embed, eval waits for it and for training) with
  `--kill-on-invalid-dep=yes`: when a stage fails for good, SLURM cancels the stages that wait
  for it instead of leaving them pending forever.
- `RUN_DIR/pipeline.jsonl` records each submission (stage → job id); a stage's bookkeeping lives in
  its home (`RUN_DIR` for training, `RUN_DIR/stages/NAME` for the others); `status`, `cancel` and
  `resume` read them.
"""

from __future__ import annotations

from collections.abc import Iterable
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
"""Preflight checks of the paths each stage makes: they need not exist when a stage of the submission makes them or none reads them."""


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
    prior = cfg.prior if gpus else replace(cfg.prior, device="cpu")
    return replace(cfg, name=f"{cfg.name}-{stage}", slurm=slurm, train=train, prior=prior)


def waits_for(stage: str, running: Iterable[str]) -> list[str]:
    """The stages of `running` whose outputs `stage` reads, less those another of them waits for already (afterok's list)."""
    mine = [s for s in running if s in stages.upstream(stage)]
    return [s for s in mine if not any(s in stages.upstream(other) for other in mine)]


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
    """Each chosen stage with its state; a complete stage is skipped unless a stage it reads runs.

    `again`: stages that run whatever their state, with the reason (a resume that changes the training's schedule).
    """
    out = []
    running: list[str] = []  # a stage that reads what one of these makes runs too: its inputs are about to change
    for name in names:
        state = stages.state(cfg, name)
        before = [s for s in running if s in stages.upstream(name)]
        if state.complete and name in (again or {}):
            state = stages.StageState(False, (again or {})[name])
        elif before and state.complete:
            state = stages.StageState(False, f"runs after {' and '.join(before)}, which run{'s' * (len(before) == 1)} "
                                      f"({state.detail})")
        if not state.complete:
            running.append(name)
        out.append((name, state))
    return out


def _task(cfg: Config, stage: str) -> Task | StageTask:
    address = clusters.of(cfg).address()
    if stage == "train":
        return Task(cfg, *address)
    return StageTask(cfg, stage, str(RunDir(cfg.run_dir).stage(stage)), *address)


def checks(cfg: Config, names: list[str]) -> None:
    """Preflight of the job, not failing on paths that stages of this submission make or that none of them reads."""
    made = {k for s, keys in OUTPUT_KEYS.items() for k in keys if s in names or not any(s in stages.upstream(n) for n in names)}
    try:
        preflight(cfg)
    except PreflightFailed as err:
        failed = [c for c in err.checks if c.status == "fail" and c.name not in made]
        if failed:
            raise PreflightFailed(failed) from err


def submit(cfg: Config, only: str | None = None, kind: str = "submit", again: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Submit the stages that are not complete, each after the stages it reads; returns the chain (one record per stage)."""
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
    """Submit each planned stage that is not complete, after the jobs of the stages it reads (`waits_for`): the chain.

    `after`: a job (`a:b`: jobs) that each stage waiting for no stage of this chain waits for.
    """
    chain: list[dict[str, Any]] = []
    jobs: dict[str, str] = {}
    for name, state in planned:
        if state.complete:
            chain.append({"stage": name, "job_id": None, "skipped": True, "detail": state.detail})
            continue
        waits = waits_for(name, jobs)
        dependency = ":".join(jobs[s] for s in waits) or after
        sub_cfg = stage_config(cfg, name)
        where = RunDir(cfg.run_dir).stage(name)
        where.save_config(sub_cfg)
        executor = clusters.of(cfg).executor(sub_cfg, where.path, dependency)
        with clean_submit_env():
            job = executor.submit(_task(sub_cfg, name))
        where.record_job(kind, job.job_id, cfg.cluster, stage=name, after=dependency)
        jobs[name] = str(job.job_id)
        chain.append({"stage": name, "job_id": jobs[name], "skipped": False, "detail": state.detail, "after": waits})
        logger.info("%s: stage %s is job %s%s", kind, name, jobs[name], f" (after {dependency})" if dependency else "")
    return chain


def chain_text(planned: list[tuple[str, stages.StageState]]) -> str:
    """The stages in order: `a → b` where b waits for a, `a, b` where b runs beside a (`prior, shards → embed → train → eval`)."""
    text = ""
    for i, (name, state) in enumerate(planned):
        if i:
            text += " → " if planned[i - 1][0] in stages.upstream(name) else ", "
        text += name + (" (skipped)" if state.complete else "")
    return text


def dry_run_text(cfg: Config, only: str | None = None) -> str:
    """Every stage's sbatch script and what it waits for, as `submit` would make them."""
    cfg = prepare(cfg)
    planned = plan(cfg, chosen_stages(cfg, only))
    parts: list[str] = []
    running: list[str] = []
    for name, state in planned:
        if state.complete:
            parts.append(f"## stage {name}: skipped ({state.detail})")
            continue
        waits = waits_for(name, running)
        dep = ":".join(f"<job id of {s}>" for s in waits) or None
        after = f", after {' and '.join(waits)} succeed{'s' * (len(waits) == 1)}" if waits else ""
        parts.append(f"## stage {name} ({state.detail}){after}"
                     + f"\n{render_sbatch(stage_config(cfg, name), RunDir(cfg.run_dir).stage(name).path, dep)}")
        running.append(name)
    return "\n\n".join([f"# pipeline of {cfg.name}: {chain_text(planned)}", *parts])


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


__all__ = ["OUTPUT_KEYS", "active_jobs", "cancel", "chain_text", "checks", "chosen_stages", "dry_run_text", "plan", "resume",
           "stage_config", "submit", "submit_chain", "waits_for"]
