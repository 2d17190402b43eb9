"""A run folder as one object: its layout and its state, read and written through `lit.io` and `lit.runlog`.

Besides what `lit.train` writes (config.yaml, metrics.jsonl, checkpoints/), the launcher keeps
- `jobs.jsonl`: one line per submission (`submit`, `resume`) or `cancel`: job id, cluster, time;
- `attempts.jsonl` (`lit.runlog`): a `start` line per start of the task (job id, attempt, start step,
  the reason the previous attempt stopped, schedule changes made on purpose), a `failure` line per
  rank that raised, and a `retry` line per failed attempt with what was decided (`launcher.retry`);
- `slurm/`: submitit's folder (sbatch script, pickles, one log pair per task);
- for a pipeline, `pipeline.jsonl` (each submission's stages → job ids, and cancels) and
  `stages/NAME/`, the home of each stage's job but training's: a run folder itself (config.yaml,
  attempts.jsonl, metrics.jsonl with its start / stop / done lines, slurm/).

A RunDir reads the files when asked (each method once): a caller that needs one state several
times keeps what the method returned.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from launcher.spec import SUBMITIT_DIR
from lit.checkpoint import list_checkpoints, step_of
from lit.config import Config, load_config, save_config
from lit.configlib import ConfigError
from lit.io import append_jsonl, read_jsonl
from lit.runlog import AttemptsLog, AttemptStart, Failure, MetricsLog, Outcome, Retry, append_attempt, attempt_line, describe

CONFIG = "config.yaml"
JOBS = "jobs.jsonl"
PIPELINE = "pipeline.jsonl"
STAGES_DIR = "stages"


@dataclass(frozen=True)
class Job:
    """A line of jobs.jsonl: a submission (`submit`, `resume`) or a `cancel` of a job."""

    kind: str
    job_id: str
    cluster: str
    time: float
    data: dict[str, Any]

    @classmethod
    def parse(cls, line: dict[str, Any]) -> Job:
        return cls(str(line.get("type", "")), str(line.get("job_id", "")), str(line.get("cluster", "")),
                   float(line.get("time") or 0.0), line)

    @property
    def folder(self) -> str:
        """submitit's folder of the job when it is not the run's own (a sweep member's: the sweep's)."""
        return str(self.data.get("folder") or "")


def stop_reason(log: MetricsLog, previous: AttemptStart | None) -> str:
    """How the attempt `previous` (None: there was none) ended, from metrics.jsonl."""
    if previous is None:
        return "new run"
    tail = log.attempt_at(previous.time)
    if tail is None:
        return "ended before training started (killed, failed, preempted or requeued while setting up)"
    return describe(tail.ending()) or "ended without warning (killed, node failure or requeue): resumed from the newest checkpoint"


@dataclass(frozen=True, init=False)
class RunDir:
    """A run folder (a training run, a pipeline, or a pipeline stage's home): where its files are and what they say."""

    path: Path

    def __init__(self, path: str | PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------ layout

    @property
    def submitit_folder(self) -> Path:
        return self.path / SUBMITIT_DIR

    def stage(self, name: str) -> RunDir:
        """The home of a pipeline stage's job: the run folder itself for training, `stages/NAME` for the others."""
        return self if name == "train" else RunDir(self.path / STAGES_DIR / name)

    # ------------------------------------------------------------ config

    def has_config(self) -> bool:
        return (self.path / CONFIG).is_file()

    def config(self) -> Config:
        """The resolved config written at submission."""
        if not self.has_config():
            raise ConfigError(str(self.path), "run_dir", "not a run directory: it has no config.yaml (submit a job first)")
        return load_config(self.path / CONFIG)

    def save_config(self, cfg: Config) -> None:
        save_config(cfg, self.path / CONFIG)

    # ------------------------------------------------------------ training state

    def metrics(self) -> MetricsLog:
        return MetricsLog.read(self.path)

    def outcome(self) -> Outcome:
        """The run's result: 'finished', 'diverged', or '' (`MetricsLog.outcome`)."""
        return self.metrics().outcome()

    def checkpoint_step(self) -> int:
        """Step of the newest complete checkpoint file (0: none)."""
        found = list_checkpoints(self.path)
        return step_of(found[-1]) if found else 0

    def holds_run(self) -> bool:
        """Whether a run was started here (a checkpoint, metrics or a submitted job)."""
        return bool(self.checkpoint_step() or len(self.metrics()) or self.current_job() is not None)

    # ------------------------------------------------------------ attempts

    def attempts(self) -> AttemptsLog:
        return AttemptsLog.read(self.path)

    def record_start(self, job_id: str, cluster: str, **extra: Any) -> AttemptStart:
        """Append the line of a new start (global rank 0 only): attempt, requeue, start step, the last stop's reason."""
        log = self.attempts()
        before = log.starts
        record = AttemptStart(attempt_line(
            "start", attempt=len(before) + 1, job_id=str(job_id),
            requeue=max(0, len(log.starts_of(job_id)) - log.retries_of(job_id)), cluster=cluster,
            start_step=self.checkpoint_step(), last_stop=stop_reason(self.metrics(), before[-1] if before else None),
            time=round(time.time(), 3), host=socket.gethostname(), pid=os.getpid(), **extra,
        ))
        append_attempt(self.path, record)
        return record

    def record_failure(self, job_id: str, restart: int, rank: int, error: str, transient: bool) -> Failure:
        """Append the `failure` line of a rank that raised."""
        record = Failure(attempt_line("failure", job_id=str(job_id), restart=restart, rank=rank, error=error[:500],
                                      transient=transient, host=socket.gethostname()))
        append_attempt(self.path, record)
        return record

    def record_decision(self, decision: Retry) -> None:
        """Append what was decided after srun ended (`launcher.retry`)."""
        append_attempt(self.path, decision)

    # ------------------------------------------------------------ jobs and logs

    def jobs(self) -> list[Job]:
        return [Job.parse(line) for line in read_jsonl(self.path / JOBS)]

    def current_job(self) -> Job | None:
        """The newest submission (`submit` or `resume`) of the run, or None."""
        jobs = [j for j in self.jobs() if j.kind in ("submit", "resume")]
        return jobs[-1] if jobs else None

    def record_job(self, kind: str, job_id: str, cluster: str, **extra: Any) -> Job:
        """Append a `submit`, `resume` or `cancel` line to jobs.jsonl."""
        line = {"type": kind, "job_id": str(job_id), "cluster": cluster, "time": round(time.time(), 3), **extra}
        append_jsonl(self.path / JOBS, line)
        return Job.parse(line)

    def log_files(self, rank: int = 0, job_id: str | None = None) -> tuple[Path, Path]:
        """(stdout, stderr) of one task of the run's newest job (or of `job_id`)."""
        folder = self.submitit_folder
        if job_id is None:
            job = self.current_job()
            if job is None:
                raise ConfigError(str(self.path), "run_dir", "no job was submitted from this run directory")
            job_id = job.job_id
            folder = Path(job.folder) if job.folder else folder  # a sweep member's logs are in the sweep's folder
        return folder / f"{job_id}_{rank}_log.out", folder / f"{job_id}_{rank}_log.err"

    # ------------------------------------------------------------ a pipeline's submissions

    def is_pipeline(self) -> bool:
        return (self.path / PIPELINE).is_file()

    def chains(self) -> list[dict[str, Any]]:
        """Every line of pipeline.jsonl: submissions and resumes (with their stages) and cancels."""
        return read_jsonl(self.path / PIPELINE)

    def last_chain(self) -> list[dict[str, Any]]:
        """The stages of the newest submission or resume: stage, job_id (None: skipped), skipped, detail."""
        submitted = [c for c in self.chains() if "stages" in c]
        if not submitted:
            raise ConfigError(str(self.path), "run_dir", f"no pipeline was submitted from this run directory ({PIPELINE} is missing)")
        return list(submitted[-1]["stages"])

    def record_chain(self, kind: str, stages: list[dict[str, Any]]) -> None:
        append_jsonl(self.path / PIPELINE, {"type": kind, "time": round(time.time(), 3), "stages": stages})

    def record_chain_cancel(self, job_ids: list[str]) -> None:
        append_jsonl(self.path / PIPELINE, {"type": "cancel", "time": round(time.time(), 3), "job_ids": job_ids})


__all__ = ["CONFIG", "JOBS", "Job", "PIPELINE", "RunDir", "STAGES_DIR", "stop_reason"]
