"""Transient failures come back by themselves: how a job attempt failed, and whether to run it again.

- A task that raises records a `failure` line in attempts.jsonl: its rank, the error and whether it is
  *transient* (a collective that timed out or lost a peer, an I/O error, memory) or *deterministic*
  (a config or dataset error, a non-finite loss, `lit doctor` failing, the requeue cap: anything else).
- After srun ends, the batch script (submitit's `teardown` lines, `launcher.spec.slurm_parameters`)
  runs `python -m launcher.retry RUN_DIR JOB_ID SRUN_EXIT`. The batch shell lives on when any rank
  dies, rank 0 included. When srun failed, no rank reported a deterministic error, the attempt did not
  stop on a signal (submitit requeues those) and the job has retries left (`slurm.max_failures`), it
  requeues its own job (`scontrol requeue`): the tasks start again and resume from the newest
  checkpoint. Each decision is a `retry` line in attempts.jsonl; `status` shows them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from launcher import logger, runs
from lit.io import append_jsonl

TRANSIENT_TYPES: tuple[type[BaseException], ...] = (OSError, TimeoutError, MemoryError)
"""Errors of the machine rather than of the job (ConnectionError is an OSError)."""
TRANSIENT_WORDS = ("gloo", "nccl", "connection closed", "connection reset", "connection refused", "timed out",
                   "timeout", "killed by signal", "broken pipe", "socket", "out of memory", "peer")
"""Words of torch.distributed's and the DataLoader's RuntimeErrors that a lost peer or worker causes."""


def is_transient(err: BaseException) -> bool:
    """True for errors a new attempt can get past; False for the deterministic ones."""
    import torch

    if isinstance(err, (*TRANSIENT_TYPES, torch.distributed.DistError, torch.OutOfMemoryError)):
        return True
    if type(err) is RuntimeError:  # only plain RuntimeErrors: our own errors subclass other types
        text = str(err).lower()
        return any(word in text for word in TRANSIENT_WORDS)
    return False


def restart_count() -> int:
    """How often SLURM restarted this job (0 for its first run and for local jobs)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def record_failure(run_dir: str | Path, job_id: str, rank: int, err: BaseException) -> dict[str, Any]:
    """Append a `failure` line for the error this rank raised."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    record = {
        "type": "failure", "job_id": str(job_id), "restart": restart_count(), "rank": rank,
        "error": f"{type(err).__name__}: {first}"[:500], "transient": is_transient(err),
        "host": socket.gethostname(), "time": round(time.time(), 3),
    }
    append_jsonl(Path(run_dir) / runs.ATTEMPTS, record)
    return record


def exit_meaning(code: int) -> str:
    if code > 128 and code - 128 in signal.valid_signals():
        return f"exit {code}: a task was killed by {signal.Signals(code - 128).name}"
    return f"exit {code}"


def decide(run_dir: str | Path, job_id: str, exit_code: int, max_failures: int) -> dict[str, Any]:
    """What to do after srun ended with `exit_code`: a record whose `decision` is retried, not retried, gave up or none."""
    job_id = str(job_id)
    restart = restart_count()
    base = {"type": "retry", "job_id": job_id, "restart": restart, "srun": exit_meaning(exit_code),
            "time": round(time.time(), 3)}
    if exit_code == 0:
        return {**base, "decision": "none", "cause": "srun succeeded"}
    starts = [a for a in runs.attempts(run_dir) if a.get("job_id") == job_id]
    if not starts:
        return {**base, "decision": "not retried",
                "cause": "the task never started (see `python -m launcher logs`): the environment or the container is broken"}
    tail = runs.attempt_tail(runs.metrics(run_dir), float(starts[-1].get("time", 0))) or []
    ended = [r["type"] for r in tail if r.get("type") in ("stop", "done", "diverged")]
    if ended:
        why = {"done": "finished", "diverged": "finished: diverged"}.get(ended[-1], "stopped on a signal (submitit requeues it)")
        return {**base, "decision": "none", "cause": f"the attempt {why}"}
    failures = sorted((f for f in runs.attempt_records(run_dir, "failure") if f.get("job_id") == job_id and f.get("restart") == restart),
                      key=lambda f: int(f.get("rank", 0)))  # in rank order, whichever rank wrote first
    deterministic = [f for f in failures if not f.get("transient")]
    reported = "; ".join(f"rank {f['rank']}: {f['error']}" for f in failures)
    if deterministic:
        return {**base, "decision": "not retried",
                "cause": "deterministic: " + "; ".join(f"rank {f['rank']}: {f['error']}" for f in deterministic)}
    cause = reported or ("no rank reported an error: a process was killed (SIGKILL, the OOM killer, a segfault) "
                         "or its node failed")
    used = runs.retries_of(run_dir, job_id)
    if used >= max_failures:
        return {**base, "decision": "gave up", "cause": f"{cause} (retries used: {used} of slurm.max_failures={max_failures}; "
                f"continue with `python -m launcher resume {run_dir}`)"}
    return {**base, "decision": "retried", "retry": used + 1, "cause": cause}


def job_running(job_id: str) -> bool:
    """True while SLURM lists the job as RUNNING (not cancelled, completing or requeued by someone else)."""
    state = runs.slurm_state(job_id)
    return state == "RUNNING"


def after_srun(run_dir: str | Path, job_id: str, exit_code: int) -> dict[str, Any]:
    """The batch script's last step: record the decision and requeue the job when it is retried."""
    cfg = runs.load_run_config(run_dir)
    record = decide(run_dir, job_id, exit_code, cfg.slurm.max_failures)
    if record["decision"] == "none":
        return record
    if record["decision"] == "retried" and not job_running(job_id):
        record = {**record, "decision": "not retried", "cause": f"{record['cause']}; the job is no longer running "
                  f"({runs.slurm_state(job_id)}): cancelled or requeued already"}
    append_jsonl(Path(run_dir) / runs.ATTEMPTS, record)
    logger.warning("job %s failed (%s): %s, %s", job_id, record["srun"], record["decision"], record["cause"])
    if record["decision"] == "retried":
        out = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            logger.error("scontrol requeue %s failed: %s", job_id, out.stderr.strip())
    return record


def job_exit(record: dict[str, Any], exit_code: int) -> int:
    """The exit code the batch script ends with: 0 once the attempt finished, whatever killed a rank after that.

    (SLURM's time-limit USR2 can reach a rank that has already returned, and srun then reports a
    failure: the job would end FAILED, and a pipeline's next stage would never start.)
    """
    return 0 if record["decision"] == "none" and "finished" in record["cause"] else exit_code


def main(argv: list[str]) -> int:
    """Decide and requeue; print the exit code the batch script should end with (stdout's only line)."""
    if len(argv) != 3 or not argv[2].lstrip("-").isdigit():
        print("usage: python -m launcher.retry RUN_DIR JOB_ID SRUN_EXIT_CODE", file=sys.stderr)
        return 2
    from lit.log import setup_logging

    setup_logging()
    from launcher.sweep import member_dir

    code = int(argv[2])
    run_dir = member_dir(argv[0], argv[1])  # a sweep's array task: its member's run folder
    print(job_exit(after_srun(run_dir, argv[1], code), code), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
