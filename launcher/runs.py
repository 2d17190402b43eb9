"""The run directory as the launcher sees it: jobs, attempts, state, status and logs.

Besides what `lit.train` writes (config.yaml, metrics.jsonl, checkpoints/), the launcher keeps
- `jobs.jsonl`: one line per submission (`submit`, `resume`) or `cancel`: job id, cluster, time;
- `attempts.jsonl`: one `start` line per start of the training task (job id, attempt, start step,
  the reason the previous attempt stopped, schedule changes made on purpose), a `failure` line per
  rank that raised, and a `retry` line per failed attempt with what was decided (`launcher.retry`);
- `slurm/`: submitit's folder (sbatch script, pickles, one log pair per task).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from launcher.spec import SUBMITIT_DIR
from lit.checkpoint import list_checkpoints, step_of
from lit.config import Config, load_config
from lit.configlib import ConfigError
from lit.io import append_jsonl, read_jsonl

ATTEMPTS = "attempts.jsonl"
JOBS = "jobs.jsonl"
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
    "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
})
"""SLURM states of a job that is still queued or running (`resume` and `submit` refuse then)."""
REASONS = {
    "SIGUSR2": "SIGUSR2: time limit or preemption warning, checkpoint saved",
    "SIGTERM": "SIGTERM: preemption or cancel, checkpoint saved",
}


# ---------------------------------------------------------------- jobs


def record_job(run_dir: str | Path, kind: str, job_id: str, cluster: str, **extra: Any) -> dict[str, Any]:
    """Append a `submit`, `resume` or `cancel` line to jobs.jsonl."""
    record = {"type": kind, "job_id": str(job_id), "cluster": cluster, "time": round(time.time(), 3), **extra}
    append_jsonl(Path(run_dir) / JOBS, record)
    return record


def current_job(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest submission (`submit` or `resume`) of the run, or None."""
    jobs = [j for j in read_jsonl(Path(run_dir) / JOBS) if j.get("type") in ("submit", "resume")]
    return jobs[-1] if jobs else None


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config of a run directory (written at submission)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(str(run_dir), "run_dir", "not a run directory: it has no config.yaml (submit a job first)")
    return load_config(path)


# ---------------------------------------------------------------- metrics and checkpoints


def metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def checkpoint_step(run_dir: str | Path) -> int:
    """Step of the newest complete checkpoint file (0: none)."""
    found = list_checkpoints(run_dir)
    return step_of(found[-1]) if found else 0


def _since_last_start(records: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    starts = [i for i, r in enumerate(records) if r.get("type") == "start"]
    return records[starts[-1] + 1:] if starts else None


def attempt_tail(records: list[dict[str, Any]], since: float) -> list[dict[str, Any]] | None:
    """Records of the training attempt recorded at time `since`: after its `start`, up to the next one.

    None when it never wrote a `start` (it ended while loading or setting up).
    """
    for i, r in enumerate(records):
        if r.get("type") == "start" and float(r.get("time", 0)) >= since:
            rest = records[i + 1:]
            following = next((k for k, q in enumerate(rest) if q.get("type") == "start"), len(rest))
            return rest[:following]
    return None


def _ending(tail: list[dict[str, Any]]) -> str:
    """'finished', the reason of a `stop` record, or '' when the attempt wrote neither."""
    ended = [r for r in tail if r.get("type") in ("stop", "done", "diverged")]
    if not ended:
        return ""
    if ended[-1]["type"] == "done":
        return "finished"
    if ended[-1]["type"] == "diverged":
        return f"diverged at step {ended[-1]['step']}: {ended[-1].get('reason', '')}"
    reason = str(ended[-1].get("reason", ""))
    return REASONS.get(reason, reason)


def is_finished(records: list[dict[str, Any]]) -> bool:
    """True when the latest training attempt ended with its result: `done`, or `diverged` (lit.train.divergence)."""
    return outcome(records) in ("finished", "diverged")


def outcome(records: list[dict[str, Any]]) -> str:
    """'finished', 'diverged' (the latest attempt wrote that record), or '' while the run has no result."""
    tail = _since_last_start(records) or []
    kinds = {r.get("type") for r in tail}
    return "diverged" if "diverged" in kinds else "finished" if "done" in kinds else ""


def diverged_at(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The `diverged` record of the latest attempt (step, reason), or None."""
    found = [r for r in _since_last_start(records) or [] if r.get("type") == "diverged"]
    return found[-1] if found else None


def stop_reason(records: list[dict[str, Any]], previous: dict[str, Any] | None) -> str:
    """How the attempt `previous` (an attempts.jsonl record; None: there was none) ended, from metrics.jsonl."""
    if previous is None:
        return "new run"
    tail = attempt_tail(records, float(previous.get("time", 0)))
    if tail is None:
        return "ended before training started (killed, failed, preempted or requeued while setting up)"
    return _ending(tail) or "ended without warning (killed, node failure or requeue): resumed from the newest checkpoint"


# ---------------------------------------------------------------- attempts


def attempt_records(run_dir: str | Path, kind: str) -> list[dict[str, Any]]:
    """attempts.jsonl lines of one type: `start` (also the untyped lines of earlier versions), `failure`, `retry`."""
    return [r for r in read_jsonl(Path(run_dir) / ATTEMPTS) if r.get("type", "start") == kind]


def attempts(run_dir: str | Path) -> list[dict[str, Any]]:
    """One record per start of the training task, oldest first."""
    return attempt_records(run_dir, "start")


def retries_of(run_dir: str | Path, job_id: str) -> int:
    """Automatic retries of this job after a transient failure (`launcher.retry`)."""
    return sum(r.get("job_id") == str(job_id) and r.get("decision") == "retried" for r in attempt_records(run_dir, "retry"))


def record_attempt(run_dir: str | Path, job_id: str, cluster: str, **extra: Any) -> dict[str, Any]:
    """Append the line of a new start (global rank 0 only): attempt, start step, the last stop's reason."""
    before = attempts(run_dir)
    same_job = [a for a in before if a.get("job_id") == str(job_id)]
    record = {
        "type": "start",
        "attempt": len(before) + 1,
        "job_id": str(job_id),
        "requeue": max(0, len(same_job) - retries_of(run_dir, job_id)),
        "cluster": cluster,
        "start_step": checkpoint_step(run_dir),
        "last_stop": stop_reason(metrics(run_dir), before[-1] if before else None),
        "time": round(time.time(), 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **extra,
    }
    append_jsonl(Path(run_dir) / ATTEMPTS, record)
    return record


def requeues_of(run_dir: str | Path, job_id: str) -> int:
    """Requeues (time limits, preemptions) this job has had so far: its starts minus one, minus its retries."""
    starts = sum(a.get("job_id") == str(job_id) for a in attempts(run_dir))
    return max(0, starts - 1 - retries_of(run_dir, job_id))


# ---------------------------------------------------------------- job state


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def slurm_state(job_id: str) -> str:
    """SLURM's state of a job: squeue while it is known there, else sacct; UNKNOWN without SLURM."""
    live = _run(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if live and live.strip():
        return live.split()[0]
    done = _run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"])
    lines = [line.strip() for line in (done or "").splitlines() if line.strip()]
    return lines[-1].split()[0] if lines else "UNKNOWN"


def pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def local_controller_running(pid: int) -> bool:
    """True while submitit's local controller `pid` runs (not some later process that reused the pid)."""
    if not pid_running(pid):
        return False
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid


def job_state(job: dict[str, Any] | None) -> str:
    """State of a jobs.jsonl record: SLURM's, or RUNNING/ENDED for a local controller process."""
    if job is None:
        return "NONE"
    if job["cluster"] == "slurm":
        return slurm_state(job["job_id"])
    if job["cluster"] == "local":
        return "RUNNING" if job["job_id"].isdigit() and local_controller_running(int(job["job_id"])) else "ENDED"
    return "ENDED"


def is_active(state: str) -> bool:
    return state in ACTIVE_STATES


# ---------------------------------------------------------------- status and logs


def _strip(record: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (record or {}).items() if k not in ("type",)}


def last_stop(records: list[dict[str, Any]], tries: list[dict[str, Any]], state: str) -> str:
    """Why the newest attempt stopped; while it runs, why the one before it stopped."""
    tail = attempt_tail(records, float(tries[-1].get("time", 0))) if tries else _since_last_start(records)
    ending = _ending(tail or [])
    if ending:
        return ending
    if tries and not is_active(state) and state not in ("NONE", "UNKNOWN"):
        return f"{state}: ended without a stop record (see `python -m launcher logs`)"
    return str(tries[-1].get("last_stop", "")) if tries else ""


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """Everything `status` shows, as plain data."""
    cfg = load_run_config(run_dir)
    job = current_job(run_dir)
    records = metrics(run_dir)
    tries = attempts(run_dir)
    starts = [r for r in records if r.get("type") == "start"]
    trains = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    state = job_state(job)
    finished = is_finished(records)
    return {
        "name": cfg.name,
        "run_dir": str(run_dir),
        "cluster": job["cluster"] if job else cfg.cluster,
        "job_id": job["job_id"] if job else None,
        "state": state,
        "attempt": len(tries),
        "requeues": requeues_of(run_dir, job["job_id"]) if job else 0,
        "max_requeues": cfg.slurm.max_requeues,
        "retries": retries_of(run_dir, job["job_id"]) if job else 0,
        "max_failures": cfg.slurm.max_failures,
        "failures": attempt_records(run_dir, "failure"),
        "retry_decisions": attempt_records(run_dir, "retry"),
        "step": max([checkpoint_step(run_dir)] + [r["step"] for r in (trains[-1:] + starts[-1:])]),
        "total_steps": starts[-1].get("total_steps") if starts else None,
        "checkpoint_step": checkpoint_step(run_dir),
        "finished": finished,
        "outcome": outcome(records),
        "last_train": _strip(trains[-1] if trains else None),
        "last_eval": _strip(evals[-1] if evals else None),
        "last_stop": last_stop(records, tries, state),
        "attempts": tries,
    }


def log_files(run_dir: str | Path, rank: int = 0, job_id: str | None = None) -> tuple[Path, Path]:
    """(stdout, stderr) of one task of the run's newest job (or of `job_id`)."""
    if job_id is None:
        job = current_job(run_dir)
        if job is None:
            raise ConfigError(str(run_dir), "run_dir", "no job was submitted from this run directory")
        job_id = job["job_id"]
        folder = Path(job.get("folder") or Path(run_dir) / SUBMITIT_DIR)  # a sweep member's logs are in the sweep's folder
    else:
        folder = Path(run_dir) / SUBMITIT_DIR
    return folder / f"{job_id}_{rank}_log.out", folder / f"{job_id}_{rank}_log.err"


__all__ = [
    "ACTIVE_STATES", "ATTEMPTS", "JOBS", "attempts", "checkpoint_step", "current_job", "is_active",
    "is_finished", "job_state", "load_run_config", "log_files", "metrics", "record_attempt",
    "record_job", "attempt_records", "requeues_of", "retries_of", "run_status", "slurm_state", "stop_reason",
]
