"""The local path (`make demo`, laptops): submitit's LocalExecutor with two gloo processes, preempted half way."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import runs
from launcher.local import run_local
from tests.conftest import tiny_config


@pytest.mark.slow  # about 40-60 s: two process starts per attempt on a small machine
def test_local_run_is_preempted_resumes_and_finishes(engine_data: dict, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", engine_data, ["cluster=local", "slurm.tasks_per_node=2",
                                                      "data.batch_size=4", "data.workers=0"])
    summary = run_local(cfg, preempt_at_step=3, timeout_s=300)
    assert summary.error == "" and summary.returncode == 0
    assert summary.finished and summary.final_step == 16 and summary.attempts == 2 and summary.resumed
    assert summary.preempted_at is not None and 3 <= summary.preempted_at < 16
    assert sorted(r["status"] for r in summary.results) == ["finished", "finished"]
    records = runs.metrics(cfg.run_dir)
    steps = [r["step"] for r in records if r["type"] == "train"]
    assert steps == list(range(1, 17))  # no step trained twice, none skipped
    starts = [r for r in records if r["type"] == "start"]
    assert [s["world_size"] for s in starts] == [2, 2] and starts[1]["step"] == summary.preempted_at
    first, second = runs.attempts(cfg.run_dir)
    assert first["job_id"] == second["job_id"] == summary.job_id and second["requeue"] == 1
    assert second["start_step"] == summary.preempted_at and second["last_stop"].startswith("SIGUSR2")
    status = runs.run_status(cfg.run_dir)
    assert status["finished"] and status["state"] == "ENDED" and status["attempt"] == 2
