"""Submit, resume and cancel runs through submitit's executors; `debug` runs in this process.

`resume_config` is the one check of every resume, at submit time: a run's, a pipeline's training and
each member of a sweep.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

from launcher import clusters, logger
from launcher.clusters import free_port
from launcher.preflight import preflight
from launcher.rundir import RunDir
from launcher.spec import prepare, submitit_folder, world_size
from launcher.task import Task
from lit.config import Config, with_overrides
from lit.configlib import ConfigError
from lit.train.resume import schedule_changes
from lit.train.run import run as train_here

KEEP_ENV = ("SLURM_CONF",)
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass
class Submission:
    """A submitted job: its id, where it runs, and submitit's Job handle (None for debug runs)."""

    job_id: str
    cluster: str
    run_dir: str
    job: Any = None


@contextlib.contextmanager
def clean_submit_env() -> Iterator[None]:
    """Hide the variables of an enclosing SLURM job or torch launch while submitting (keeps SLURM_CONF).

    Like submitit.helpers.clean_env, which would also hide SLURM_CONF, the cluster's address.
    """
    hidden = {
        name: os.environ.pop(name) for name in list(os.environ)
        if (name.startswith(("SLURM_", "SLURMD_", "SRUN_", "SUBMITIT_")) or name in DIST_ENV) and name not in KEEP_ENV
    }
    try:
        yield
    finally:
        os.environ.update(hidden)


def check_fresh(run_dir: str | PathLike[str]) -> None:
    """`submit` starts new runs only: an existing one is continued with `resume`."""
    run = RunDir(run_dir)
    if run.holds_run():
        raise ConfigError(
            "", "run_dir",
            f"{run} already holds a run (newest checkpoint: step {run.checkpoint_step()}): continue it with "
            f"`python -m launcher resume {run}`, or set run_dir to a new folder",
        )


def submit(cfg: Config, kind: str = "submit", fresh: bool = True) -> Submission:
    """Check the job spec, save the resolved config, and submit one task per rank with submitit.

    `fresh`: refuse a run directory that already holds a run. Raises ConfigError naming the key,
    or spec.PreflightFailed with `lit doctor`'s checks.
    """
    cfg = prepare(cfg)
    kind_of = clusters.of(cfg)
    if fresh:
        check_fresh(cfg.run_dir)
    preflight(cfg)
    if kind_of.in_process:
        raise ConfigError("", "cluster", f"{cfg.cluster} runs in this process: use launcher.submit.run_debug")
    run_dir = RunDir(cfg.run_dir)
    run_dir.save_config(cfg)
    executor = kind_of.executor(cfg)
    with clean_submit_env():
        job = executor.submit(Task(cfg, *kind_of.address()))
    run_dir.record_job(kind, job.job_id, cfg.cluster, folder=str(submitit_folder(cfg)))
    logger.info("%s: job %s (%s) for run %s", kind, job.job_id, cfg.cluster, cfg.run_dir)
    return Submission(str(job.job_id), cfg.cluster, cfg.run_dir, job)


def run_debug(cfg: Config, fresh: bool = True) -> int:
    """Train in this process (one rank, no submitit): returns run()'s exit code (0 or 75)."""
    cfg = prepare(cfg)
    if fresh:
        check_fresh(cfg.run_dir)
    preflight(cfg)
    run_dir = RunDir(cfg.run_dir)
    run_dir.save_config(cfg)
    job_id = f"debug-{os.getpid()}"
    run_dir.record_job("submit" if fresh else "resume", job_id, cfg.cluster)
    run_dir.record_start(job_id, cfg.cluster, world_size=1)
    with clean_submit_env():
        return train_here(cfg)


def schedule_changes_of(saved: Config, cfg: Config) -> list[str]:
    """How `cfg` changes the schedule or data order of a run saved as `saved` (`key: old → new`)."""
    return schedule_changes(saved, cfg, world_size(saved), world_size(cfg))


def resume_config(run_dir: str | PathLike[str], overrides: Sequence[str] = (), *, result_ok: bool = False) -> Config:
    """The run's saved config with overrides, checked as every resume is checked, at submit time.

    Refused: a change of the schedule or the data order in the middle of the run (the `key: old → new`
    list; `train.allow_schedule_change=true` makes it on purpose), a run whose job is still queued or
    running, and a run that has its result (finished or diverged) resumed without overrides, unless
    `result_ok` (a pipeline whose training is done but a later stage is not).
    """
    run = RunDir(run_dir)
    saved = run.config()
    cfg = with_overrides(saved, overrides) if overrides else saved
    changes = schedule_changes_of(saved, cfg)
    if changes and not cfg.train.allow_schedule_change and run.checkpoint_step():
        raise ConfigError("command line", "train.allow_schedule_change",
                          "these overrides change the schedule or the data order in the middle of the run: " + "; ".join(changes)
                          + ". Drop them, or add train.allow_schedule_change=true to change it on purpose")
    job = run.current_job()
    state = clusters.named(job.cluster).state(job.job_id) if job else "NONE"
    if job is not None and clusters.is_active(state):
        raise ConfigError(str(run), "run_dir", f"job {job.job_id} of this run is {state}: "
                          f"wait for it or `python -m launcher cancel {run}` first")
    result = run.metrics().result_text()
    if result and not overrides and not result_ok:
        raise ConfigError(str(run), "run_dir", f"the run has its result ({result}); to train longer, resume with "
                          "overrides such as train.epochs=N train.allow_schedule_change=true")
    return cfg


def resume(run_dir: str | PathLike[str], overrides: Sequence[str] = ()) -> Submission:
    """Resubmit a stopped, failed or cancelled run: it continues from its newest checkpoint."""
    return submit(resume_config(run_dir, overrides), kind="resume", fresh=False)


def cancel(run_dir: str | PathLike[str]) -> str:
    """Cancel the run's current job (`scancel`, or SIGTERM to a local controller); returns its id.

    The tasks get SIGTERM first: a step boundary reached in time still saves a checkpoint.
    """
    run = RunDir(run_dir)
    job = run.current_job()
    if job is None:
        raise ConfigError(str(run), "run_dir", "no job was submitted from this run directory")
    kind = clusters.named(job.cluster)
    state = kind.state(job.job_id)
    if not clusters.is_active(state):
        raise ConfigError(str(run), "run_dir", f"job {job.job_id} is {state}: nothing to cancel")
    kind.cancel([job.job_id])
    run.record_job("cancel", job.job_id, job.cluster)
    return job.job_id


__all__ = ["Submission", "cancel", "check_fresh", "clean_submit_env", "free_port", "resume", "resume_config", "run_debug",
           "schedule_changes_of", "submit"]
