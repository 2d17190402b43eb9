"""The launcher on a real 2-node SLURM cluster: submit, USR2 → checkpoint → requeue → resume, time limits,
max_requeues, cancel and resume, and real preemption by a higher-priority partition.

A toy LiT job: the tiny random model, 2 nodes x 1 task (gloo), 24 steps. Four jobs start together (one
CPU per node each) so the waits overlap; the preemption test needs whole nodes and runs after them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from cluster import LocalSlurmCluster  # on sys.path via conftest.py
from launcher import runs
from launcher.submit import cancel, resume, submit
from lit.config import Config, save_config
from lit.train import checkpoint
from tests.conftest import REPO, tiny_config

STEPS = 24
TOY = [
    "cluster=slurm", "slurm.nodes=2", "slurm.tasks_per_node=1", "slurm.cpus_per_task=1", "slurm.mem_gb=1",
    "slurm.time_min=10", "slurm.signal_delay_s=30", "data.batch_size=4", "data.workers=0",
    "data.samples_per_epoch=96", "train.device=cpu",  # 2 epochs x 12 steps of 4 x 2 ranks
]
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL"}
HIGH_SCRIPT = """#!/bin/bash
#SBATCH --job-name=high
#SBATCH --partition=high
#SBATCH --nodes=2
#SBATCH --exclusive
srun --label hostname
"""


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def toy(run_dir: Path, data: dict, *extra: str) -> Config:
    return tiny_config(run_dir, data, [*TOY, *extra])


def launcher_cli(cluster: LocalSlurmCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "launcher", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in runs.metrics(run_dir) if r["type"] == "train"]


def trained_to(run_dir: Path, step: int, starts: int) -> bool:
    """The attempt after `starts - 1` earlier starts has trained `step`."""
    seen, best = 0, 0
    for r in runs.metrics(run_dir):
        seen += r["type"] == "start"
        if r["type"] == "train" and seen >= starts:
            best = max(best, r["step"])
    return best >= step


def ended(cluster: LocalSlurmCluster, job_id: str, timeout: float) -> str:
    return cluster.wait_job(job_id, ENDED, timeout=timeout)


def final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    found = checkpoint.load_latest(run_dir)
    assert found is not None, f"no checkpoint in {run_dir}"
    return found[1]["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = final_model(a), final_model(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def stop_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in runs.metrics(run_dir) if r["type"] == "stop"]


def log_text(run_dir: Path, job_id: str, rank: int = 0) -> str:
    out, err = runs.log_files(run_dir, rank, job_id)
    return "".join(p.read_text(errors="replace") for p in (out, err) if p.is_file())


@pytest.fixture(scope="module")
def jobs(slurm_cluster: LocalSlurmCluster, engine_data: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Submits the four concurrent jobs once: A through the CLI, the others through the library."""
    base = tmp_path_factory.mktemp("launcher-slurm")
    out: dict[str, Any] = {"base": base, "data": engine_data}
    job_file = base / "toy.yaml"
    save_config(toy(base / "uninterrupted", engine_data), job_file)
    # The time-limit job first: its one-minute windows are what the module waits on longest.
    limit = toy(base / "time-limit", engine_data, "slurm.time_min=1", "slurm.signal_delay_s=1", "slurm.max_requeues=5",
                "data.samples_per_epoch=320", "checkpoint.every_steps=5", "train.log_every=5")  # 80 steps
    out["time-limit"] = (limit, submit(limit).job_id)
    done = launcher_cli(slurm_cluster, "submit", str(job_file))
    assert done.returncode == 0, done.stdout + done.stderr
    out["uninterrupted"] = (base / "uninterrupted", runs.current_job(base / "uninterrupted")["job_id"], done.stdout)
    usr2 = toy(base / "usr2", engine_data)
    out["usr2"] = (usr2, submit(usr2).job_id)
    capped = toy(base / "capped", engine_data, "slurm.max_requeues=0")
    out["capped"] = (capped, submit(capped).job_id)
    return out


def test_submit_runs_to_completion_and_reports_status(slurm_cluster: LocalSlurmCluster, jobs: dict[str, Any]) -> None:
    run_dir, job_id, submitted = jobs["uninterrupted"]
    assert f"submitted job {job_id}" in submitted
    assert ended(slurm_cluster, job_id, timeout=180) == "COMPLETED", log_text(run_dir, job_id)
    result = launcher_cli(slurm_cluster, "status", str(run_dir), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "COMPLETED" and status["finished"] and status["attempt"] == 1
    assert status["step"] == status["total_steps"] == status["checkpoint_step"] == STEPS
    assert status["last_train"]["loss"] > 0 and status["last_train"]["epoch"] == 1
    assert status["attempts"][0]["world_size"] == 2 and status["attempts"][0]["last_stop"] == "new run"
    assert train_steps(run_dir) == list(range(1, STEPS + 1))
    starts = [r for r in runs.metrics(run_dir) if r["type"] == "start"]
    assert starts[0]["world_size"] == 2  # two nodes met: gloo over the allocation's first host
    table = launcher_cli(slurm_cluster, "status", str(run_dir))
    assert "COMPLETED" in table.stdout and f"{STEPS} / {STEPS}" in table.stdout
    logs = launcher_cli(slurm_cluster, "logs", str(run_dir), "--rank", "1")
    assert logs.returncode == 0 and "Job completed successfully" in logs.stdout


def test_usr2_checkpoints_requeues_and_resumes_exactly(slurm_cluster: LocalSlurmCluster, jobs: dict[str, Any]) -> None:
    cfg, job_id = jobs["usr2"]
    run_dir = Path(cfg.run_dir)
    wait_for(lambda: trained_to(run_dir, 3, starts=1), 150, "step 3 of the first attempt")
    slurm_cluster.run("scancel", "--signal=USR2", job_id)
    assert ended(slurm_cluster, job_id, timeout=180) == "COMPLETED", log_text(run_dir, job_id)
    (stop,) = stop_steps(run_dir)
    assert 3 <= stop < STEPS
    first, second = runs.attempts(run_dir)
    assert (first["job_id"], second["job_id"], second["requeue"], second["slurm_restart"]) == (job_id, job_id, 1, 1)
    assert second["start_step"] == stop and second["last_stop"].startswith("SIGUSR2")
    assert train_steps(run_dir) == list(range(1, STEPS + 1))  # no step trained twice, none skipped
    assert "Requeued job" in log_text(run_dir, job_id, 0)  # submitit's own requeue path on rank 0
    uninterrupted, ref_job, _ = jobs["uninterrupted"]
    assert ended(slurm_cluster, ref_job, timeout=180) == "COMPLETED"
    assert_same_weights(run_dir, uninterrupted)


def test_max_requeues_then_resume_a_failed_and_a_cancelled_run(slurm_cluster: LocalSlurmCluster,
                                                                jobs: dict[str, Any]) -> None:
    cfg, job_id = jobs["capped"]
    run_dir = Path(cfg.run_dir)
    wait_for(lambda: trained_to(run_dir, 3, starts=1), 150, "step 3 of the first attempt")
    slurm_cluster.run("scancel", "--signal=USR2", job_id)
    assert ended(slurm_cluster, job_id, timeout=90) == "FAILED"  # max_requeues=0: saved, not requeued
    assert len(runs.attempts(run_dir)) == 1 and "max_requeues=0" in log_text(run_dir, job_id, 0)
    (stop,) = stop_steps(run_dir)
    assert runs.checkpoint_step(run_dir) == stop

    second = resume(run_dir).job_id  # a failed run continues
    wait_for(lambda: trained_to(run_dir, stop + 2, starts=2), 150, "the resumed attempt to train")
    assert cancel(run_dir) == second
    assert ended(slurm_cluster, second, timeout=60) == "CANCELLED"
    status = runs.run_status(run_dir)
    assert status["state"] == "CANCELLED" and not status["finished"]

    third = resume(run_dir).job_id  # a cancelled run continues
    assert ended(slurm_cluster, third, timeout=180) == "COMPLETED", log_text(run_dir, third)
    tries = runs.attempts(run_dir)
    assert [a["job_id"] for a in tries] == [job_id, second, third]
    assert tries[1]["start_step"] == stop and tries[2]["start_step"] > stop
    steps = train_steps(run_dir)
    assert sorted(set(steps)) == list(range(1, STEPS + 1))  # SIGTERM may cut a step short: retrained, not skipped
    uninterrupted, ref_job, _ = jobs["uninterrupted"]
    assert ended(slurm_cluster, ref_job, timeout=180) == "COMPLETED"
    assert_same_weights(run_dir, uninterrupted)


@pytest.mark.slow  # two or three one-minute attempts
def test_time_limit_requeues_until_finished(slurm_cluster: LocalSlurmCluster, jobs: dict[str, Any]) -> None:
    cfg, job_id = jobs["time-limit"]
    run_dir = Path(cfg.run_dir)
    assert ended(slurm_cluster, job_id, timeout=420) == "COMPLETED", log_text(run_dir, job_id)
    tries = runs.attempts(run_dir)
    assert len(tries) >= 2 and {a["job_id"] for a in tries} == {job_id}
    assert all(a["last_stop"].startswith("SIGUSR2") for a in tries[1:])
    assert [a["start_step"] for a in tries] == sorted(a["start_step"] for a in tries)
    text = log_text(run_dir, job_id, 0)
    assert text.count("this job is timed-out") == len(tries) - 1  # submitit counted each as a time-out
    assert int(slurm_cluster.job_info(job_id)["Restarts"]) == len(tries) - 1
    assert runs.run_status(run_dir)["finished"]


@pytest.mark.slow  # about a minute: the preemption, the high job, the requeue delay
def test_real_preemption_requeues_and_finishes(slurm_cluster: LocalSlurmCluster, jobs: dict[str, Any]) -> None:
    wait_for(lambda: not slurm_cluster.squeue(), 420, "the other launcher jobs to end")  # `high` preempts any tier-1 job
    run_dir = jobs["base"] / "preempted"
    cfg = toy(run_dir, jobs["data"], "slurm.partition=low", "slurm.exclusive=true")
    job_id = submit(cfg).job_id
    wait_for(lambda: trained_to(run_dir, 3, starts=1), 150, "step 3 of the low job")
    high = slurm_cluster.sbatch(HIGH_SCRIPT)
    assert slurm_cluster.wait_job(high, {"COMPLETED", "FAILED"}, timeout=90) == "COMPLETED"
    assert ended(slurm_cluster, job_id, timeout=180) == "COMPLETED", log_text(run_dir, job_id)
    (stop,) = stop_steps(run_dir)
    first, second = runs.attempts(run_dir)
    assert second["start_step"] == stop and second["last_stop"].startswith("SIGUSR2")
    assert train_steps(run_dir) == list(range(1, STEPS + 1))
    assert int(slurm_cluster.job_info(job_id)["Restarts"]) >= 1
    assert runs.run_status(run_dir)["finished"]
