"""The local path (`make demo`, laptops): submitit's LocalExecutor with two gloo processes, cancelled,
resumed, preempted half way, resumed again, finished."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from launcher.local import run_local
from launcher.rundir import RunDir
from launcher.status import run_status
from launcher.submit import cancel, submit
from lit.runlog import Start, Train
from tests.conftest import tiny_config


def trained(run_dir: str, step: int) -> bool:
    return any(r.step >= step for r in RunDir(run_dir).metrics().of(Train))


@pytest.mark.slow  # about 40-70 s: two process starts per attempt on a small machine
def test_local_run_cancelled_resumed_preempted_finished(engine_data: dict, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", engine_data, ["cluster=local", "slurm.tasks_per_node=2",
                                                      "data.batch_size=4", "data.workers=0"])
    job = submit(cfg).job  # the local controller runs in the background
    deadline = time.monotonic() + 120
    while not trained(cfg.run_dir, 2) and not job.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancel(cfg.run_dir) == job.job_id  # SIGTERM to the controller, which forwards it to the tasks
    job._process.wait(timeout=60)
    run = RunDir(cfg.run_dir)
    cancelled_at = run.checkpoint_step()
    assert 2 <= cancelled_at < 16 and run.outcome() == ""
    assert run_status(run)["last_stop"].startswith("SIGTERM")

    summary = run_local(cfg, preempt_at_step=cancelled_at + 2, timeout_s=300, kind="resume")
    assert summary.error == "" and summary.returncode == 0
    assert summary.finished and summary.final_step == 16 and summary.attempts == 2 and summary.resumed
    assert summary.preempted_at is not None and cancelled_at + 2 <= summary.preempted_at < 16
    assert sorted(r["status"] for r in summary.results) == ["finished", "finished"]
    log = run.metrics()
    assert [r.step for r in log.of(Train)] == list(range(1, 17))  # no step twice, none skipped
    starts = log.of(Start)
    assert [s.world_size for s in starts] == [2, 2, 2]
    assert [s.step for s in starts] == [0, cancelled_at, summary.preempted_at]
    first, second, third = run.attempts().starts
    assert second.job_id == third.job_id == summary.job_id != first.job_id and third.requeue == 1
    assert second.last_stop.startswith("SIGTERM") and third.last_stop.startswith("SIGUSR2")
    assert [j.kind for j in run.jobs()] == ["submit", "cancel", "resume"]
    status = run_status(run)
    assert status["finished"] and status["state"] == "ENDED" and status["attempt"] == 3
