"""Which failures retry by themselves: the classification of errors and the decision after srun, on real run records."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from launcher import retry
from launcher.rundir import RunDir
from launcher.status import run_status
from launcher.submitit_api import SubmititVersionError, check_version
from lit.checkpoint import CheckpointError
from lit.config import load_config, save_config
from lit.configlib import ConfigError
from lit.data.inat import DatasetError
from lit.io import append_jsonl


def test_errors_of_the_machine_are_transient_and_errors_of_the_job_are_not() -> None:
    transient = [
        RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41231"),
        RuntimeError("DataLoader worker (pid 1234) is killed by signal: Segmentation fault."),
        torch.distributed.DistBackendError("NCCL communicator was aborted"),
        ConnectionResetError(104, "Connection reset by peer"),
        OSError(5, "Input/output error"),
        TimeoutError("collective timed out"),
        MemoryError(),
    ]
    deterministic = [
        ConfigError("job.yaml", "train.lr", "must be > 0"),
        CheckpointError("ckpt", "checkpoint format 9 found", "use a new run_dir"),
        DatasetError("train.json", "image 3 has no category"),
        FloatingPointError("loss is nan at step 7"),
        ValueError("bad value"),
        KeyError("model"),
        RuntimeError("lit.train.run returned 3, expected 0 or 75"),
    ]
    assert [retry.is_transient(e) for e in transient] == [True] * len(transient)
    assert [retry.is_transient(e) for e in deterministic] == [False] * len(deterministic)


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    save_config(load_config(None, [f"run_dir={tmp_path}"]), tmp_path / "config.yaml")
    return RunDir(tmp_path)


def start(run_dir: RunDir, job: str = "42") -> None:
    run_dir.record_start(job, "slurm", world_size=2)


def test_no_retry_when_srun_succeeded_or_the_attempt_stopped_on_a_signal(run_dir: RunDir) -> None:
    start(run_dir)
    assert retry.decide(run_dir, "42", 0, 3).decision == "none"
    append_jsonl(run_dir.path / "metrics.jsonl", {"type": "start", "step": 0, "time": 1e12})
    append_jsonl(run_dir.path / "metrics.jsonl", {"type": "stop", "step": 4, "reason": "SIGUSR2", "time": 1e12})
    decided = retry.decide(run_dir, "42", 1, 3)
    assert decided.decision == "none" and "signal" in decided.cause


def test_a_killed_rank_is_retried_until_max_failures(run_dir: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    for restart in range(3):
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restart))
        start(run_dir)
        decided = retry.decide(run_dir, "42", 137, max_failures=2)
        if restart < 2:
            assert decided.decision == "retried" and decided.retry == restart + 1
            assert "killed by SIGKILL" in decided.srun and "no rank reported an error" in decided.cause
            assert retry.job_exit(decided, 137) == 137  # not finished: the job ends as srun did (and is requeued)
            run_dir.record_decision(decided)
        else:
            assert decided.decision == "gave up" and "slurm.max_failures=2" in decided.cause
    # retries are not preemption requeues: the requeue cap does not count them
    attempts = run_dir.attempts()
    assert attempts.retries_of("42") == 2 and attempts.requeues_of("42") == 0
    assert [a.requeue for a in attempts.starts] == [0, 0, 0]


def test_a_deterministic_error_on_any_rank_is_never_retried(run_dir: RunDir) -> None:
    start(run_dir)
    retry.record_failure(run_dir, "42", 1, RuntimeError("[gloo] Connection closed by peer"))
    assert retry.decide(run_dir, "42", 1, 3).decision == "retried"
    retry.record_failure(run_dir, "42", 0, ConfigError("data", "data.train_shards", "manifest.json is not valid JSON"))
    decided = retry.decide(run_dir, "42", 1, 3)
    assert decided.decision == "not retried"
    assert decided.cause == "deterministic: rank 0: ConfigError: data: data.train_shards: manifest.json is not valid JSON"
    failures = run_dir.attempts().failures
    assert [(f.rank, f.transient, f.get("host")) for f in failures] == [(1, True, socket.gethostname()), (0, False, socket.gethostname())]


def test_failures_of_an_earlier_restart_do_not_count(run_dir: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    start(run_dir)
    retry.record_failure(run_dir, "42", 0, FloatingPointError("loss is nan"))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    start(run_dir)
    assert retry.decide(run_dir, "42", 137, 3).decision == "retried"


def test_a_task_that_never_started_is_not_retried(run_dir: RunDir) -> None:
    decided = retry.decide(run_dir, "42", 1, 3)
    assert decided.decision == "not retried" and "never started" in decided.cause


def test_status_lists_each_failed_attempt(run_dir: RunDir) -> None:
    run_dir.record_job("submit", "42", "slurm")
    start(run_dir)
    run_dir.record_decision(retry.decide(run_dir, "42", 137, 3))
    status = run_status(run_dir)
    assert status["retries"] == 1 and status["max_failures"] == 3
    assert [d["decision"] for d in status["retry_decisions"]] == ["retried"]
    (row,) = status["failed_attempts"]
    assert row["decision"] == "retried" and "killed by SIGKILL" in row["srun"] and "no rank reported an error" in row["cause"]


def test_untested_submitit_versions_are_refused_with_the_fix() -> None:
    assert check_version() == "1.5.4"
    with pytest.raises(SubmititVersionError, match=r"submitit 9.9 is installed.*pip install submitit==1.5.4"):
        check_version("9.9")


def test_a_finished_attempt_ends_the_job_well_whatever_srun_says(run_dir: RunDir) -> None:
    """SLURM's time-limit USR2 can kill a rank after the run's `done`: the job must still end COMPLETED."""
    start(run_dir)
    append_jsonl(run_dir.path / "metrics.jsonl", {"type": "start", "step": 0, "time": 1e12})
    append_jsonl(run_dir.path / "metrics.jsonl", {"type": "done", "step": 16, "time": 1e12})
    decided = retry.decide(run_dir, "42", 140, 3)
    assert retry.job_exit(decided, 140) == 0
    retry.record_failure(run_dir, "42", 0, RuntimeError("[gloo] Connection closed by peer"))
    assert retry.job_exit(retry.decide(run_dir, "42", 140, 3), 140) == 0


def test_the_teardown_ends_with_what_launcher_retry_prints(tmp_path: Path) -> None:
    """The sbatch lines themselves, run by bash with a stand-in for the python command."""
    import subprocess

    from launcher.spec import teardown_lines

    cfg = load_config(None, [f"run_dir={tmp_path}", "cluster=slurm"])
    body = "\n".join(teardown_lines(cfg))
    for printed, srun, want in (("0", 3, 0), ("7", 0, 7), ("", 5, 5), ("oops", 6, 6)):
        fake = tmp_path / "fakepy"
        fake.write_text(f"#!/bin/bash\necho '{printed}'\n")
        fake.chmod(0o755)
        script = body.replace(body.split(" -m launcher.retry")[0].split("$(")[1], str(fake))
        done = subprocess.run(["bash", "-c", f"(exit {srun})\n{script}"], env={"SLURM_JOB_ID": "1", "PATH": "/usr/bin:/bin"})
        assert done.returncode == want, (printed, srun)
