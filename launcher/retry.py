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
import subprocess
import sys
import time
from typing import Any

import torch

from launcher import clusters, logger
from launcher.rundir import RunDir
from launcher.sweepdir import task_home
from lit.log import setup_logging
from lit.runlog import Diverged, Done, Retry, attempt_line

TRANSIENT_TYPES: tuple[type[BaseException], ...] = (OSError, TimeoutError, MemoryError)
"""Errors of the machine rather than of the job (ConnectionError is an OSError)."""
TRANSIENT_WORDS = ("gloo", "nccl", "connection closed", "connection reset", "connection refused", "timed out",
                   "timeout", "killed by signal", "broken pipe", "socket", "out of memory", "peer")
"""Words of torch.distributed's and the DataLoader's RuntimeErrors that a lost peer or worker causes."""


def is_transient(err: BaseException) -> bool:
    """True for errors a new attempt can get past; False for the deterministic ones."""
    if isinstance(err, (*TRANSIENT_TYPES, torch.distributed.DistError, torch.OutOfMemoryError)):
        return True
    if type(err) is RuntimeError:  # only plain RuntimeErrors: our own errors subclass other types
        text = str(err).lower()
        return any(word in text for word in TRANSIENT_WORDS)
    return False


def restart_count() -> int:
    """How often SLURM restarted this job (0 for its first run and for local jobs)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def record_failure(run: RunDir, job_id: str, rank: int, err: BaseException) -> None:
    """Append a `failure` line for the error this rank raised."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    run.record_failure(job_id, restart_count(), rank, f"{type(err).__name__}: {first}", is_transient(err))


def exit_meaning(code: int) -> str:
    if code > 128 and code - 128 in signal.valid_signals():
        return f"exit {code}: a task was killed by {signal.Signals(code - 128).name}"
    return f"exit {code}"


def decide(run: RunDir, job_id: str, exit_code: int, max_failures: int) -> Retry:
    """What to do after srun ended with `exit_code`: a record whose `decision` is retried, not retried, gave up or none."""
    job_id = str(job_id)
    restart = restart_count()
    base: dict[str, Any] = {"job_id": job_id, "restart": restart, "srun": exit_meaning(exit_code), "time": round(time.time(), 3)}

    def decided(decision: str, cause: str, **extra: Any) -> Retry:
        return Retry(attempt_line("retry", **base, decision=decision, cause=cause, **extra))

    if exit_code == 0:
        return decided("none", "srun succeeded")
    attempts = run.attempts()
    starts = attempts.starts_of(job_id)
    if not starts:
        return decided("not retried", "the task never started (see `python -m launcher logs`): the environment or the container is broken")
    tail = run.metrics().attempt_at(starts[-1].time)
    ending = tail.ending() if tail is not None else None
    if ending is not None:
        why = "finished" if isinstance(ending, Done) else "finished: diverged" if isinstance(ending, Diverged) else \
            "stopped on a signal (submitit requeues it)"
        return decided("none", f"the attempt {why}")
    failures = sorted((f for f in attempts.failures if f.job_id == job_id and f.restart == restart),
                      key=lambda f: f.rank)  # in rank order, whichever rank wrote first
    deterministic = [f for f in failures if not f.transient]
    if deterministic:
        return decided("not retried", "deterministic: " + "; ".join(f"rank {f.rank}: {f.error}" for f in deterministic))
    cause = "; ".join(f"rank {f.rank}: {f.error}" for f in failures) or (
        "no rank reported an error: a process was killed (SIGKILL, the OOM killer, a segfault) or its node failed")
    used = attempts.retries_of(job_id)
    if used >= max_failures:
        return decided("gave up", f"{cause} (retries used: {used} of slurm.max_failures={max_failures}; "
                       f"continue with `python -m launcher resume {run}`)")
    return decided("retried", cause, retry=used + 1)


def after_srun(run: RunDir, job_id: str, exit_code: int) -> Retry:
    """The batch script's last step: record the decision and requeue the job when it is retried."""
    record = decide(run, job_id, exit_code, run.config().slurm.max_failures)
    if record.decision == "none":
        return record
    if record.decision == "retried":
        state = clusters.slurm_state(job_id)
        if state != "RUNNING":  # cancelled, completing, or requeued by someone else
            record = Retry({**record.data, "decision": "not retried",
                            "cause": f"{record.cause}; the job is no longer running ({state}): cancelled or requeued already"})
    run.record_decision(record)
    logger.warning("job %s failed (%s): %s, %s", job_id, record.srun, record.decision, record.cause)
    if record.decision == "retried":
        out = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            logger.error("scontrol requeue %s failed: %s", job_id, out.stderr.strip())
    return record


def job_exit(record: Retry, exit_code: int) -> int:
    """The exit code the batch script ends with: 0 once the attempt finished, whatever killed a rank after that.

    (SLURM's time-limit USR2 can reach a rank that has already returned, and srun then reports a
    failure: the job would end FAILED, and a pipeline's next stage would never start.)
    """
    return 0 if record.decision == "none" and "finished" in record.cause else exit_code


def main(argv: list[str]) -> int:
    """Decide and requeue; print the exit code the batch script should end with (stdout's only line)."""
    if len(argv) != 3 or not argv[2].lstrip("-").isdigit():
        print("usage: python -m launcher.retry RUN_DIR JOB_ID SRUN_EXIT_CODE", file=sys.stderr)
        return 2
    setup_logging()
    code = int(argv[2])
    run = task_home(argv[0], argv[1])  # a sweep's array task: its member's run folder
    print(job_exit(after_srun(run, argv[1], code), code), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
