"""The task's signal → checkpoint → requeue mechanics against submitit's real handler, in this process.

submitit's `process_job` is reproduced step by step (pickle, `_handle_signals`, call); the trainer is
replaced by a stand-in that takes lit's signal handlers, receives a real signal and returns as
`lit.train.run.run` does. Only the last step of a requeue (`scontrol requeue` / exit 144) is recorded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from submitit.core.job_environment import JobEnvironment
from submitit.core.utils import DelayedSubmission, JobPaths
from submitit.local.local import LocalJobEnvironment
from submitit.slurm.slurm import SlurmJobEnvironment

from launcher import boot
from launcher import task as task_module
from launcher.rundir import RunDir
from launcher.stage_task import StageTask
from launcher.task import DoctorFailed, RequeueLimitReached, Task, _ignore, master_port, rendezvous_env
from lit import signals
from lit.config import Config, load_config
from lit.io import append_jsonl
from lit.train.run import EXIT_OK

JOB = "4242"


@pytest.fixture
def job_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The environment of rank 0 of a submitit local job; handlers and os.environ restored after."""
    saved_env = dict(os.environ)
    lit_logger = logging.getLogger("lit")
    saved_log = (lit_logger.level, list(lit_logger.handlers), lit_logger.propagate)
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)}
    folder = tmp_path / "run" / "slurm"
    os.environ.update(SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID=JOB, SUBMITIT_LOCAL_NTASKS="2",
                      SUBMITIT_LOCAL_GLOBALID="0", SUBMITIT_LOCAL_LOCALID="0", SUBMITIT_LOCAL_NODEID="0",
                      SUBMITIT_LOCAL_JOB_NUM_NODES="1", SUBMITIT_FOLDER=str(folder))
    requeued: list[int] = []
    monkeypatch.setattr(LocalJobEnvironment, "_requeue", lambda self, countdown: requeued.append(countdown))
    monkeypatch.setattr(SlurmJobEnvironment, "_requeue", lambda self, countdown: requeued.append(countdown))
    signals.clear()
    try:
        yield {"folder": folder, "requeued": requeued, "run_dir": tmp_path / "run"}
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        signals.clear()
        os.environ.clear()
        os.environ.update(saved_env)
        lit_logger.setLevel(saved_log[0])
        lit_logger.handlers[:] = saved_log[1]
        lit_logger.propagate = saved_log[2]


def config(run_dir: Path, *overrides: str) -> Config:
    return load_config(None, [f"run_dir={run_dir}", "cluster=local", "slurm.max_requeues=2", *overrides])


def submitted(task: Task | StageTask, folder: Path, countdown: int = 2, timeout_min: int = 60) -> tuple[JobPaths, DelayedSubmission]:
    """What submitit's executor and `process_job` do before calling the task."""
    env = JobEnvironment()
    paths = JobPaths(folder, job_id=env.job_id, task_id=env.global_rank)
    paths.folder.mkdir(parents=True, exist_ok=True)
    delayed = DelayedSubmission(task)
    delayed.set_timeout(timeout_min, countdown)
    delayed.dump(paths.submitted_pickle)
    env._handle_signals(paths, delayed)
    return paths, delayed


def fake_run(run_dir: Path, sig: int | None, code: int) -> Callable[[Config], int]:
    """Stands in for lit.train.run.run: lit's handlers, a real signal, the metrics of a stop."""
    def run(cfg: Config) -> int:
        previous = signals.install()
        try:
            metrics = [{"type": "start", "step": 2, "total_steps": 16}]
            if sig is not None:
                os.kill(os.getpid(), sig)
                deadline = time.monotonic() + 5
                while not signals.requested() and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert signals.requested(), "lit's handler did not get the signal"
                metrics.append({"type": "stop", "step": 4, "reason": signals.reason()})
            if code == EXIT_OK:
                metrics.append({"type": "done", "step": 16})
            append_jsonl(run_dir / "metrics.jsonl", metrics[0])
            for m in metrics[1:]:
                append_jsonl(run_dir / "metrics.jsonl", m)
            return code
        finally:
            signals.restore(previous)
    return run


def test_usr2_requeues_through_submitit(job_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = job_env["run_dir"]
    task = Task(config(run_dir), "127.0.0.1", 23456)
    paths, _ = submitted(task, job_env["folder"])
    before = paths.submitted_pickle.stat().st_mtime_ns
    monkeypatch.setattr(task_module, "run", fake_run(run_dir, signal.SIGUSR2, signals.EXIT_PREEMPTED))
    with pytest.raises(SystemExit):  # submitit's handler exits after the requeue
        task()
    assert job_env["requeued"] == [2]  # a preemption: the time-out countdown is unchanged
    resubmitted = DelayedSubmission.load(paths.submitted_pickle)
    assert paths.submitted_pickle.stat().st_mtime_ns >= before and isinstance(resubmitted.function, Task)
    assert resubmitted._timeout_countdown == 2 and resubmitted.function.cfg == task.cfg
    assert signal.getsignal(signal.SIGUSR2) is _ignore  # one requeue only
    assert os.environ["MASTER_ADDR"] == "127.0.0.1" and os.environ["MASTER_PORT"] == "23456"
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("0", "2", "0")
    (attempt,) = RunDir(run_dir).attempts().starts
    assert attempt.job_id == JOB and attempt.requeue == 0 and attempt.pid == os.getpid()


def test_a_short_job_counts_a_timeout(job_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = job_env["run_dir"]
    task = Task(config(run_dir), "127.0.0.1", 23456)
    paths, _ = submitted(task, job_env["folder"], countdown=2, timeout_min=5)  # <= 10 min: every signal is a time-out
    monkeypatch.setattr(task_module, "run", fake_run(run_dir, signal.SIGUSR2, signals.EXIT_PREEMPTED))
    with pytest.raises(SystemExit):
        task()
    assert job_env["requeued"] == [1]
    assert DelayedSubmission.load(paths.submitted_pickle)._timeout_countdown == 1


def test_finished_run_never_requeues(job_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = job_env["run_dir"]
    task = Task(config(run_dir), "127.0.0.1", 23456)
    submitted(task, job_env["folder"])
    monkeypatch.setattr(task_module, "run", fake_run(run_dir, None, EXIT_OK))
    assert task() == {"status": "finished", "rank": 0, "step": 0}
    assert signal.getsignal(signal.SIGUSR2) is _ignore
    os.kill(os.getpid(), signal.SIGUSR2)  # arrives after the end: ignored
    time.sleep(0.05)
    assert job_env["requeued"] == [] and task.checkpoint() is None


def test_other_ranks_return_after_the_agreed_stop(job_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    os.environ["SUBMITIT_LOCAL_GLOBALID"] = os.environ["SUBMITIT_LOCAL_LOCALID"] = "1"
    run_dir = job_env["run_dir"]
    task = Task(config(run_dir), "127.0.0.1", 23456)
    submitted(task, job_env["folder"])
    monkeypatch.setattr(task_module, "run", fake_run(run_dir, signal.SIGUSR2, signals.EXIT_PREEMPTED))
    result = task()
    assert result["status"] == "stopped" and result["rank"] == 1 and "SIGUSR2" in result["reason"]
    assert job_env["requeued"] == [] and RunDir(run_dir).attempts().starts == []  # rank 0 records the attempts


def test_max_requeues_is_respected(job_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = job_env["run_dir"]
    for _ in range(2):  # two earlier starts of this job: this one is its 2nd requeue, the cap
        RunDir(run_dir).record_start(JOB, "local")
    task = Task(config(run_dir), "127.0.0.1", 23456)
    submitted(task, job_env["folder"])
    monkeypatch.setattr(task_module, "run", fake_run(run_dir, signal.SIGUSR2, signals.EXIT_PREEMPTED))
    with pytest.raises(RequeueLimitReached, match="max_requeues=2"):
        task()
    assert job_env["requeued"] == [] and signal.getsignal(signal.SIGUSR2) is _ignore
    RunDir(run_dir).record_start(JOB, "local")  # a requeue beyond the cap (by SLURM): refused at the start
    with pytest.raises(RequeueLimitReached, match="more than slurm.max_requeues"):
        task()


def test_sigterm_waits_for_slurm(job_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    os.environ.update(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="77", SLURM_PROCID="0", SLURM_LOCALID="0",
                      SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="2", SLURM_NODEID="0", SLURM_JOB_NODELIST="node[1-2]")
    run_dir = job_env["run_dir"]
    task = Task(config(run_dir, "cluster=slurm"))
    submitted(task, job_env["folder"])
    monkeypatch.setattr(task_module, "run", fake_run(run_dir, signal.SIGTERM, signals.EXIT_PREEMPTED))
    monkeypatch.setattr(Task, "_doctor", lambda self: None)
    monkeypatch.setattr(task_module, "TERM_WAIT_S", 0.3)
    start = time.monotonic()
    result = task()
    assert time.monotonic() - start >= 0.3  # stays up for SLURM's requeue or kill
    assert result["status"] == "stopped" and result["reason"] == "SIGTERM" and job_env["requeued"] == []
    assert os.environ["MASTER_ADDR"] == "node1" and os.environ["MASTER_PORT"] == str(master_port("77"))


def test_doctor_failure_stops_the_task(job_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    os.environ.update(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="78", SLURM_PROCID="0", SLURM_LOCALID="0",
                      SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_JOB_NODELIST="node1")
    run_dir = job_env["run_dir"]
    task = Task(config(run_dir, "cluster=slurm", f"data.root={run_dir / 'missing'}"))
    submitted(task, job_env["folder"])
    monkeypatch.setattr(task_module, "run", lambda cfg: pytest.fail("trained despite a failing doctor"))
    with pytest.raises(DoctorFailed, match="data.root"):
        task()
    assert signal.getsignal(signal.SIGUSR2) is _ignore


def test_rendezvous() -> None:
    env = SimpleNamespace(hostnames=["gpu17", "gpu18"], job_id="123456", global_rank=9, num_tasks=16,
                          local_rank=1, num_nodes=2)
    out = rendezvous_env(env)  # type: ignore[arg-type]
    assert out == {"MASTER_ADDR": "gpu17", "MASTER_PORT": str(master_port("123456")), "RANK": "9",
                   "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8"}
    assert master_port("123456") == master_port("123456") and 20000 <= master_port("123456") <= 60000
    assert len({master_port(str(j)) for j in range(100)}) > 90
    assert rendezvous_env(env, "127.0.0.1", 5555)["MASTER_PORT"] == "5555"  # type: ignore[arg-type]


def test_a_signal_while_loading_requeues_without_training(job_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = job_env["run_dir"]
    task = Task(config(run_dir), "127.0.0.1", 23456)
    submitted(task, job_env["folder"])
    monkeypatch.setattr(boot, "EARLY", [signal.SIGUSR2])  # what launcher.boot recorded while the task loaded
    monkeypatch.setattr(task_module, "run", lambda cfg: pytest.fail("trained after an early signal"))
    with pytest.raises(SystemExit):
        task()
    assert job_env["requeued"] == [2] and len(RunDir(run_dir).attempts().starts) == 1


def test_a_schedule_change_made_on_purpose_is_recorded_in_attempts(job_env: dict[str, Any]) -> None:
    from lit import checkpoint
    from lit.config import dump_config

    run_dir = job_env["run_dir"]
    before = config(run_dir, "train.warmup_steps=10")
    checkpoint.save(run_dir, {"step": 4, "model": {}, "world_size": 2, "config": dump_config(before)}, keep_last=2)
    task = Task(config(run_dir, "train.warmup_steps=20", "train.lr=1e-3", "train.allow_schedule_change=true"))
    task._record_start(JobEnvironment())
    (attempt,) = RunDir(run_dir).attempts().starts
    assert attempt.schedule_changes == ["train.lr: 0.0005 → 0.001", "train.warmup_steps: 10 → 20"]
    assert attempt.get("schedule_change_allowed") is True


def test_the_prior_stage_stops_on_usr2_requeues_goes_on_and_a_requeue_after_the_end_does_nothing(
        job_env: dict[str, Any], engine_data: dict[str, Path]) -> None:
    from lit.prior.store import CHECKPOINT_FILE, PRIOR_FILE
    from lit.runlog import Stop

    run_dir = job_env["run_dir"]
    cfg = config(run_dir, f"data.root={engine_data['root']}", "prior.epochs=6", "prior.width=32", "prior.depth=1",
                 "prior.batch_size=16")
    home = RunDir(run_dir).stage("prior")
    task = StageTask(cfg, "prior", str(home), "127.0.0.1", 23456)
    metrics = run_dir / "prior" / "metrics.jsonl"

    def usr2_after_the_first_epoch() -> None:
        deadline = time.monotonic() + 60
        while not metrics.is_file() and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGUSR2)

    submitted(task, job_env["folder"])
    threading.Thread(target=usr2_after_the_first_epoch, daemon=True).start()
    with pytest.raises(SystemExit):  # stopped with a checkpoint, requeued through submitit's handler
        task()
    assert job_env["requeued"] == [2] and (run_dir / "prior" / CHECKPOINT_FILE).is_file()
    assert not (run_dir / "prior" / PRIOR_FILE).is_file() and "SIGUSR2" in home.metrics().of(Stop)[0].reason
    assert task.checkpoint() is not None  # resubmitted unchanged
    submitted(task, job_env["folder"])  # the requeued job goes on from the checkpoint
    assert task() == {"status": "finished", "stage": "prior", "rank": 0}
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, 7))  # no epoch twice: it went on, it did not start over
    made = (run_dir / "prior" / PRIOR_FILE).stat().st_mtime_ns
    submitted(task, job_env["folder"])  # a requeue of the finished job: nothing to do
    assert task() == {"status": "finished", "stage": "prior", "rank": 0}
    assert (run_dir / "prior" / PRIOR_FILE).stat().st_mtime_ns == made and job_env["requeued"] == [2]
    assert len(home.attempts().starts) == 3 and task.checkpoint() is None
