"""The run folder (RunDir): attempts, stop reasons, status, logs, and the guards of submit/resume/cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launcher import clusters
from launcher.__main__ import main
from launcher.rundir import RunDir, stop_reason
from launcher.status import run_status
from launcher.submit import check_fresh, clean_submit_env, resume_config
from lit.config import load_config, save_config
from lit.configlib import ConfigError
from lit.io import append_jsonl
from lit.runlog import ATTEMPTS, AttemptStart, MetricsLog


def metrics_file(run_dir: Path, records: list[dict[str, Any]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def start(step: int, total: int = 16) -> dict[str, Any]:
    return {"type": "start", "step": step, "total_steps": total, "time": 1.0}


def train(step: int, loss: float = 2.0) -> dict[str, Any]:
    return {"type": "train", "step": step, "loss": loss, "lr": 1e-3, "epoch": 0, "samples_per_s": 10.0, "time": 2.0}


def make_run(tmp_path: Path, records: list[dict[str, Any]], ckpt_steps: tuple[int, ...] = ()) -> Path:
    run_dir = tmp_path / "run"
    save_config(load_config(None, [f"run_dir={run_dir}", "name=toy", "slurm.max_requeues=3"]), run_dir / "config.yaml")
    metrics_file(run_dir, records)
    (run_dir / "checkpoints").mkdir()
    for step in ckpt_steps:
        (run_dir / "checkpoints" / f"step-{step:08d}.pt").write_bytes(b"x")
    return run_dir


def at(record: dict[str, Any], t: float) -> dict[str, Any]:
    return {**record, "time": t}


STOP2 = {"type": "stop", "step": 2, "reason": "SIGUSR2"}


@pytest.mark.parametrize("records, previous, expected", [
    ([], None, "new run"),
    ([at(start(0), 10), at(train(1), 11)], {"time": 20.0}, "ended before training started"),
    ([at(start(0), 10), at(train(1), 11), at(STOP2, 12)], {"time": 9.0}, "SIGUSR2: time limit or preemption"),
    ([at(start(0), 10), at({"type": "stop", "step": 2, "reason": "SIGTERM"}, 12)], {"time": 9.0}, "SIGTERM: preemption"),
    ([at(start(0), 10), at(train(1), 11), at({"type": "done", "step": 1}, 12)], {"time": 9.0}, "finished"),
    ([at(start(0), 10), at(train(1), 11)], {"time": 9.0}, "ended without warning"),
    # the attempt before the previous one never trained; the previous one did, and saved on USR2
    ([at(start(0), 10), at(STOP2, 12), at(start(2), 30), at(train(3), 31)], {"time": 25.0}, "ended without warning"),
    ([at(start(0), 10), at(STOP2, 12), at(start(2), 30), at(train(3), 31)], {"time": 9.0}, "SIGUSR2"),
])
def test_stop_reason(records: list[dict[str, Any]], previous: dict[str, Any] | None, expected: str) -> None:
    assert stop_reason(MetricsLog.parse(records), AttemptStart(previous) if previous else None).startswith(expected)


def test_attempts_and_requeues(tmp_path: Path) -> None:
    run = RunDir(make_run(tmp_path, [], ckpt_steps=()))
    first = run.record_start("11", "slurm")
    assert (first.attempt, first.requeue, first.start_step, first.last_stop) == (1, 0, 0, "new run")
    t = first.time + 1
    metrics_file(run.path, [at(start(0), t), at(train(3), t), at({"type": "stop", "step": 4, "reason": "SIGUSR2"}, t)])
    (run.path / "checkpoints" / "step-00000004.pt").write_bytes(b"x")
    second = run.record_start("11", "slurm")
    assert (second.attempt, second.requeue, second.start_step) == (2, 1, 4)
    assert second.last_stop.startswith("SIGUSR2")
    third = run.record_start("12", "slurm")  # resumed by hand: a new job, its own count
    assert (third.attempt, third.requeue) == (3, 0)
    attempts = run.attempts()
    assert attempts.requeues_of("11") == 1 and attempts.requeues_of("12") == 0
    assert [a.attempt for a in attempts.starts] == [1, 2, 3]


def test_status_of_a_local_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [start(0), train(1, 2.5), train(2, 2.25), {"type": "stop", "step": 2, "reason": "SIGUSR2"},
               start(2), train(3, 2.0), {"type": "eval", "step": 3, "top1": 12.5, "top5": 40.0, "final": True},
               {"type": "done", "step": 3}]
    run_dir = make_run(tmp_path, [at(r, 10.0 * (i >= 4) + i) for i, r in enumerate(records)], ckpt_steps=(2, 3))
    RunDir(run_dir).record_job("submit", "999999999", "local")  # no such process: ENDED
    for attempt, t, step, last in ((1, 0.0, 0, "new run"), (2, 13.0, 2, "SIGUSR2")):  # untyped: an older folder's lines
        append_jsonl(run_dir / ATTEMPTS, {"attempt": attempt, "job_id": "999999999", "time": t,
                                          "start_step": step, "last_stop": last})
    status = run_status(run_dir)
    assert status["state"] == "ENDED" and status["finished"] and status["last_stop"] == "finished"
    assert (status["attempt"], status["requeues"], status["max_requeues"]) == (2, 1, 3)
    assert (status["step"], status["total_steps"], status["checkpoint_step"]) == (3, 16, 3)
    assert status["last_train"]["loss"] == 2.0 and status["last_eval"]["top1"] == 12.5
    assert main(["status", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3
    assert main(["status", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert "loss=2" in text and "3 / 16" in text and "attempts" in text


def test_status_while_running_and_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [at(start(0), 1), at(train(1), 2), at(STOP2, 3), at(start(2), 11), at(train(3), 12)]
    run_dir = make_run(tmp_path, records, ckpt_steps=(2,))
    RunDir(run_dir).record_job("submit", "42", "slurm")
    append_jsonl(run_dir / ATTEMPTS, {"attempt": 1, "job_id": "42", "time": 0.5, "last_stop": "new run"})
    append_jsonl(run_dir / ATTEMPTS, {"attempt": 2, "job_id": "42", "time": 10.5, "last_stop": "SIGUSR2: ..."})
    monkeypatch.setattr(clusters, "slurm_state", lambda job_id: "RUNNING")
    status = run_status(run_dir)
    assert status["state"] == "RUNNING" and status["last_stop"] == "SIGUSR2: ..." and not status["finished"]
    monkeypatch.setattr(clusters, "slurm_state", lambda job_id: "NODE_FAIL")
    assert run_status(run_dir)["last_stop"].startswith("NODE_FAIL: ended without a stop record")


def test_slurm_state_without_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert clusters.slurm_state("1") == "UNKNOWN" and clusters.named("slurm").state("1") == "UNKNOWN"


def test_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run(tmp_path, [])
    assert main(["logs", str(run_dir)]) == 2  # nothing submitted yet
    RunDir(run_dir).record_job("submit", "7", "slurm")
    out, err = RunDir(run_dir).log_files(rank=1)
    assert out == run_dir / "slurm" / "7_1_log.out" and err == run_dir / "slurm" / "7_1_log.err"
    assert main(["logs", str(run_dir), "--rank", "1"]) == 1  # pending: no file yet
    out.parent.mkdir(parents=True)
    out.write_text("".join(f"line {i}\n" for i in range(10)))
    err.write_text("a warning\n")
    capsys.readouterr()
    assert main(["logs", str(run_dir), "--rank", "1", "--tail", "3"]) == 0
    text = capsys.readouterr().out
    assert "line 9" in text and "line 6" not in text and "a warning" in text


def test_submit_refuses_an_existing_run(tmp_path: Path) -> None:
    check_fresh(tmp_path / "new")
    run_dir = make_run(tmp_path, [start(0), train(1)], ckpt_steps=(2,))
    with pytest.raises(ConfigError, match="resume"):
        check_fresh(run_dir)


def test_resume_guards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = make_run(tmp_path, [start(0), train(1), {"type": "stop", "step": 2, "reason": "SIGTERM"}], ckpt_steps=(2,))
    RunDir(run_dir).record_job("submit", "42", "slurm")
    monkeypatch.setattr(clusters, "slurm_state", lambda job_id: "PENDING")
    with pytest.raises(ConfigError, match="PENDING"):
        resume_config(run_dir)
    monkeypatch.setattr(clusters, "slurm_state", lambda job_id: "CANCELLED")
    cfg = resume_config(run_dir, ["slurm.time_min=5"])
    assert cfg.slurm.time_min == 5 and cfg.name == "toy"
    metrics_file(run_dir, [start(0), {"type": "done", "step": 16}])
    with pytest.raises(ConfigError, match="finished"):
        resume_config(run_dir)


def test_cancel_needs_an_active_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.submit import cancel

    run_dir = make_run(tmp_path, [])
    with pytest.raises(ConfigError, match="no job"):
        cancel(run_dir)
    RunDir(run_dir).record_job("submit", "42", "slurm")
    monkeypatch.setattr(clusters, "slurm_state", lambda job_id: "COMPLETED")
    with pytest.raises(ConfigError, match="COMPLETED"):
        cancel(run_dir)


def test_clean_submit_env_keeps_slurm_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("SLURM_CONF", "/etc/x.conf")
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    monkeypatch.setenv("MASTER_PORT", "1234")
    with clean_submit_env():
        assert os.environ["SLURM_CONF"] == "/etc/x.conf"
        assert "SLURM_JOB_ID" not in os.environ and "MASTER_PORT" not in os.environ
    assert os.environ["SLURM_JOB_ID"] == "5" and os.environ["MASTER_PORT"] == "1234"
