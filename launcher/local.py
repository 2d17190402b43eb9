"""Local runs: submitit's LocalExecutor with several processes on this machine (`make demo`, laptops).

`run_local` submits, follows metrics.jsonl, can send the run the preemption signal once a step
is reached (the run saves at an agreed step, submitit's local controller restarts the tasks,
they resume), waits for the end and sums the run up.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Any

from launcher import logger
from launcher.rundir import RunDir
from launcher.submit import submit
from launcher.submitit_api import local_process, task_error
from lit.config import Config
from lit.runlog import MetricsLog, Start, Stop, Train

POLL_S = 0.25


@dataclass
class RunSummary:
    """How a local run went."""

    run_dir: str
    job_id: str
    attempts: int
    """Starts of the training task in this job (1 + requeues)."""
    final_step: int
    """Step of the newest checkpoint at the end."""
    finished: bool
    """The run has its result: it wrote `done` or `diverged` (`MetricsLog.outcome`)."""
    resumed: bool
    """An attempt started from a checkpoint saved by an earlier one."""
    preempted_at: int | None = None
    """Step at which the run stopped on the signal (None: no signal was sent or none stopped it)."""
    returncode: int | None = None
    """Exit code of submitit's local controller."""
    error: str = ""
    """The task's error when it failed."""
    results: list[Any] = field(default_factory=list)
    """What each rank's task returned."""


def _train_step_since(log: MetricsLog, start_count: int) -> int:
    """Highest train step written by attempts after the first `start_count` starts."""
    seen = 0
    step = -1
    for r in log:
        if isinstance(r, Start):
            seen += 1
        elif isinstance(r, Train) and seen > start_count:
            step = max(step, r.step)
    return step


def _rank0_pid(run: RunDir, job_id: str) -> int | None:
    mine = run.attempts().starts_of(job_id)
    return mine[-1].pid if mine else None


def run_local(cfg: Config, preempt_at_step: int | None = None, timeout_s: float | None = None,
              kind: str = "submit") -> RunSummary:
    """Run `cfg` with the local executor (nodes x tasks_per_node processes) and wait for the end.

    With `preempt_at_step`, rank 0 gets SIGUSR2 once a step >= it is trained: all ranks stop at
    the next agreed step with a checkpoint, the task requeues itself through submitit and the
    restarted tasks resume. Continues the run in `cfg.run_dir` if there is one. `kind` is what
    jobs.jsonl records (`submit` or `resume`).
    """
    cfg = replace(cfg, cluster="local")
    starts_before = len(RunDir(cfg.run_dir).metrics().of(Start))
    sub = submit(cfg, kind=kind, fresh=False)
    run = RunDir(sub.run_dir)
    job = sub.job
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    signalled = False
    error = ""
    while not job.done():
        if deadline is not None and time.monotonic() > deadline:
            job.cancel()
            raise TimeoutError(f"local run {sub.run_dir} did not end within {timeout_s} s")
        if preempt_at_step is not None and not signalled:
            if _train_step_since(run.metrics(), starts_before) >= preempt_at_step:
                pid = _rank0_pid(run, sub.job_id)
                if pid is not None:
                    logger.warning("sending SIGUSR2 to rank 0 (pid %d) at step >= %d", pid, preempt_at_step)
                    os.kill(pid, signal.SIGUSR2)
                    signalled = True
        error = task_error(job)
        if error:  # one rank failed: the others would wait in a collective until the timeout
            logger.error("a task failed; stopping the job")
            job.cancel()
            break
        time.sleep(POLL_S)
    return _summary(run, sub.job_id, job, starts_before, error)


def _summary(run: RunDir, job_id: str, job: Any, starts_before: int, error: str) -> RunSummary:
    process = local_process(job)
    if process is not None:
        process.wait()
    results: list[Any] = []
    if not error:
        try:
            results = list(job.results())
        except Exception as err:  # an unfinished or failed task: report, don't raise
            error = str(err)
    log = run.metrics()
    mine = run.attempts().starts_of(job_id)
    starts = 0
    preempted_at = None
    for r in log:
        starts += isinstance(r, Start)
        if isinstance(r, Stop) and starts > starts_before:
            preempted_at = r.step
    return RunSummary(
        run_dir=str(run), job_id=job_id, attempts=len(mine), final_step=run.checkpoint_step(),
        finished=log.has_result(), resumed=any(a.start_step > 0 for a in mine),
        preempted_at=preempted_at, returncode=None if process is None else process.returncode,
        error=error, results=results,
    )


__all__ = ["RunSummary", "run_local"]
