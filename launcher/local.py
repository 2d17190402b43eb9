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

from launcher import logger, runs
from launcher.submit import submit
from launcher.submitit_api import local_process, task_error
from lit.config import Config

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
    """The run wrote its `done` record."""
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


def _train_step_since(records: list[dict[str, Any]], start_count: int) -> int:
    """Highest train step written by attempts after the first `start_count` starts."""
    seen = 0
    step = -1
    for r in records:
        if r.get("type") == "start":
            seen += 1
        elif r.get("type") == "train" and seen > start_count:
            step = max(step, int(r["step"]))
    return step


def _rank0_pid(run_dir: str, job_id: str) -> int | None:
    mine = [a for a in runs.attempts(run_dir) if a.get("job_id") == job_id]
    return int(mine[-1]["pid"]) if mine else None


def run_local(cfg: Config, preempt_at_step: int | None = None, timeout_s: float | None = None,
              kind: str = "submit") -> RunSummary:
    """Run `cfg` with the local executor (nodes x tasks_per_node processes) and wait for the end.

    With `preempt_at_step`, rank 0 gets SIGUSR2 once a step >= it is trained: all ranks stop at
    the next agreed step with a checkpoint, the task requeues itself through submitit and the
    restarted tasks resume. Continues the run in `cfg.run_dir` if there is one. `kind` is what
    jobs.jsonl records (`submit` or `resume`).
    """
    cfg = replace(cfg, cluster="local")
    starts_before = sum(r.get("type") == "start" for r in runs.metrics(cfg.run_dir))
    sub = submit(cfg, kind=kind, fresh=False)
    job = sub.job
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    signalled = False
    error = ""
    while not job.done():
        if deadline is not None and time.monotonic() > deadline:
            job.cancel()
            raise TimeoutError(f"local run {sub.run_dir} did not end within {timeout_s} s")
        if preempt_at_step is not None and not signalled:
            if _train_step_since(runs.metrics(sub.run_dir), starts_before) >= preempt_at_step:
                pid = _rank0_pid(sub.run_dir, sub.job_id)
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
    return _summary(sub.run_dir, sub.job_id, job, starts_before, error)


def _summary(run_dir: str, job_id: str, job: Any, starts_before: int, error: str) -> RunSummary:
    process = local_process(job)
    if process is not None:
        process.wait()
    results: list[Any] = []
    if not error:
        try:
            results = list(job.results())
        except Exception as err:  # an unfinished or failed task: report, don't raise
            error = str(err)
    records = runs.metrics(run_dir)
    mine = [a for a in runs.attempts(run_dir) if a.get("job_id") == job_id]
    starts = 0
    preempted_at = None
    for r in records:
        starts += r.get("type") == "start"
        if r.get("type") == "stop" and starts > starts_before:
            preempted_at = int(r["step"])
    return RunSummary(
        run_dir=str(run_dir), job_id=job_id, attempts=len(mine), final_step=runs.checkpoint_step(run_dir),
        finished=runs.is_finished(records), resumed=any(a.get("start_step", 0) > 0 for a in mine),
        preempted_at=preempted_at, returncode=None if process is None else process.returncode,
        error=error, results=results,
    )


__all__ = ["RunSummary", "run_local"]
