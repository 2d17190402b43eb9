"""Submit, resume and cancel runs through submitit's executors; `debug` runs in this process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import logger, runs
from launcher.spec import make_executor, preflight, prepare, submitit_folder, world_size
from launcher.task import Task
from lit.config import Config, save_config, with_overrides
from lit.configlib import ConfigError
from lit.train.resume import schedule_changes

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_fresh(run_dir: str | Path) -> None:
    """`submit` starts new runs only: an existing one is continued with `resume`."""
    run_dir = Path(run_dir)
    step = runs.checkpoint_step(run_dir)
    if step or runs.metrics(run_dir) or runs.current_job(run_dir):
        raise ConfigError(
            "", "run_dir",
            f"{run_dir} already holds a run (newest checkpoint: step {step}): continue it with "
            f"`python -m launcher resume {run_dir}`, or set run_dir to a new folder",
        )


def submit(cfg: Config, kind: str = "submit", fresh: bool = True) -> Submission:
    """Check the job spec, save the resolved config, and submit one task per rank with submitit.

    `fresh`: refuse a run directory that already holds a run. Raises ConfigError naming the key,
    or spec.PreflightFailed with `lit doctor`'s checks.
    """
    cfg = prepare(cfg)
    if fresh:
        check_fresh(cfg.run_dir)
    preflight(cfg)
    if cfg.cluster == "debug":
        raise ConfigError("", "cluster", "debug runs in this process: use launcher.submit.run_debug")
    save_config(cfg, Path(cfg.run_dir) / "config.yaml")
    executor = make_executor(cfg)
    task = Task(cfg, "127.0.0.1", free_port()) if cfg.cluster == "local" else Task(cfg)
    with clean_submit_env():
        job = executor.submit(task)
    runs.record_job(cfg.run_dir, kind, job.job_id, cfg.cluster, folder=str(submitit_folder(cfg)))
    logger.info("%s: job %s (%s) for run %s", kind, job.job_id, cfg.cluster, cfg.run_dir)
    return Submission(str(job.job_id), cfg.cluster, cfg.run_dir, job)


def run_debug(cfg: Config, fresh: bool = True) -> int:
    """Train in this process (one rank, no submitit): returns run()'s exit code (0 or 75)."""
    from lit.train.run import run

    cfg = prepare(cfg)
    if fresh:
        check_fresh(cfg.run_dir)
    preflight(cfg)
    save_config(cfg, Path(cfg.run_dir) / "config.yaml")
    job_id = f"debug-{os.getpid()}"
    runs.record_job(cfg.run_dir, "submit" if fresh else "resume", job_id, "debug")
    runs.record_attempt(cfg.run_dir, job_id, "debug", world_size=1)
    with clean_submit_env():
        return run(cfg)


def resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The run's saved config with overrides; refuses while its job is queued or running."""
    saved = runs.load_run_config(run_dir)
    cfg = with_overrides(saved, overrides) if overrides else saved
    changes = schedule_changes(saved, cfg, world_size(saved), world_size(cfg))
    if changes and not cfg.train.allow_schedule_change and runs.checkpoint_step(run_dir):
        raise ConfigError("command line", "train.allow_schedule_change",
                          "these overrides change the schedule or the data order in the middle of the run: " + "; ".join(changes)
                          + ". Drop them, or add train.allow_schedule_change=true to change it on purpose")
    job = runs.current_job(run_dir)
    state = runs.job_state(job)
    if job is not None and runs.is_active(state):
        raise ConfigError(str(run_dir), "run_dir", f"job {job['job_id']} of this run is {state}: "
                          f"wait for it or `python -m launcher cancel {run_dir}` first")
    if runs.is_finished(runs.metrics(run_dir)) and not overrides:
        raise ConfigError(str(run_dir), "run_dir", "the run is finished; to train longer, resume with overrides "
                          "such as train.epochs=N train.allow_schedule_change=true")
    return cfg


def resume(run_dir: str | Path, overrides: Sequence[str] = ()) -> Submission:
    """Resubmit a stopped, failed or cancelled run: it continues from its newest checkpoint."""
    return submit(resume_config(run_dir, overrides), kind="resume", fresh=False)


def cancel(run_dir: str | Path) -> str:
    """Cancel the run's current job (`scancel`, or SIGTERM to a local controller); returns its id.

    The tasks get SIGTERM first: a step boundary reached in time still saves a checkpoint.
    """
    job = runs.current_job(run_dir)
    if job is None:
        raise ConfigError(str(run_dir), "run_dir", "no job was submitted from this run directory")
    state = runs.job_state(job)
    if not runs.is_active(state):
        raise ConfigError(str(run_dir), "run_dir", f"job {job['job_id']} is {state}: nothing to cancel")
    if job["cluster"] == "slurm":
        import subprocess

        out = subprocess.run(["scancel", job["job_id"]], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"scancel {job['job_id']} failed: {out.stderr.strip()}")
    else:
        os.kill(int(job["job_id"]), signal.SIGTERM)  # submitit's local controller forwards it to the tasks
    runs.record_job(run_dir, "cancel", job["job_id"], job["cluster"])
    return str(job["job_id"])


__all__ = ["Submission", "cancel", "check_fresh", "clean_submit_env", "resume", "resume_config", "run_debug", "submit"]
