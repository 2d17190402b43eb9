"""The run log (lit.runlog): typed records that read older folders as they are, and one outcome for every reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.rundir import RunDir
from lit.config import load_config
from lit.runlog import (
    AttemptsLog,
    AttemptStart,
    Diverged,
    Done,
    Metric,
    MetricsLog,
    Retry,
    Start,
    Stop,
    Train,
    describe,
    metrics_line,
)
from lit.stages import train_state
from lit.train.metrics_log import MetricsWriter


def log(*lines: dict) -> MetricsLog:
    return MetricsLog.parse(lines)


START = {"type": "start", "step": 0, "time": 1.0, "total_steps": 20, "steps_per_epoch": 10, "world_size": 2}


@pytest.mark.parametrize("lines, outcome, has_result", [
    ([], "", False),
    ([{"type": "done", "step": 9}], "", False),  # no start: not a run's result
    ([START, {"type": "train", "step": 1, "loss": 2.0}], "", False),
    ([START, {"type": "stop", "step": 4, "reason": "SIGUSR2"}], "", False),
    ([START, {"type": "done", "step": 20}], "finished", True),
    ([START, {"type": "diverged", "step": 12, "reason": "loss is nan at step 12"}], "diverged", True),
    ([START, {"type": "done", "step": 20}, START], "", False),  # resumed to train longer: no result yet
])
def test_one_outcome(lines: list[dict], outcome: str, has_result: bool) -> None:
    found = log(*lines)
    assert (found.outcome(), found.has_result()) == (outcome, has_result)


def test_records_are_typed_and_keep_the_line_as_written() -> None:
    lines = [START, {"type": "train", "step": 3, "epoch": 0, "loss": None, "lr": 1e-4, "samples_per_s": 9.5, "time": 2.0},
             {"type": "mystery", "step": 4, "x": 1}, {"type": "diverged", "step": 5, "reason": "loss is nan", "time": 3.0}]
    found = log(*lines)
    start, train, other, diverged = found.records
    assert isinstance(start, Start) and (start.total_steps, start.steps_per_epoch, start.world_size) == (20, 10, 2)
    assert isinstance(train, Train) and train.loss is None and train.lr == 1e-4 and train.get("samples_per_s") == 9.5
    assert type(other) is Metric and other.type == "mystery" and other.step == 4  # a newer version's record: kept
    assert isinstance(diverged, Diverged) and found.diverged() == diverged
    assert [dict(r.data) for r in found] == lines
    assert describe(diverged) == "diverged at step 5: loss is nan" == found.result_text()
    assert describe(Stop({"type": "stop", "reason": "SIGUSR2"})).startswith("SIGUSR2: time limit")
    assert describe(Done({"type": "done"})) == "finished" and describe(None) == ""


def test_attempts_of_older_folders_read_as_starts() -> None:
    found = AttemptsLog.parse([{"attempt": 1, "job_id": "7", "time": 1.0, "last_stop": "new run"},
                               {"type": "start", "attempt": 2, "job_id": "7", "time": 2.0},
                               {"type": "retry", "job_id": "7", "decision": "retried", "cause": "killed", "srun": "exit 137"},
                               {"type": "retry", "job_id": "7", "decision": "none", "cause": "srun succeeded"}])
    assert [a.attempt for a in found.starts] == [1, 2] and all(isinstance(a, AttemptStart) for a in found.starts)
    assert found.retries_of("7") == 1 and found.requeues_of("7") == 0
    assert [d.decision for d in found.failed()] == ["retried"] and isinstance(found.failed()[0], Retry)


def test_the_writer_goes_through_the_run_log(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path)
    writer.write("train", 1, loss=float("nan"), lr=1e-3)
    (line,) = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert list(line)[:3] == ["type", "step", "time"] and line["loss"] is None and line["lr"] == 1e-3
    with pytest.raises(ValueError, match="'trian' is not a metrics record"):
        metrics_line("trian", 1)


def test_the_planner_and_the_run_folder_agree_on_the_outcome(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}"])
    lines = [START, {"type": "diverged", "step": 12, "reason": "loss is nan at step 12"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    state = train_state(cfg)
    assert state.complete and state.detail == "diverged at step 12: loss is nan at step 12"
    assert RunDir(tmp_path).outcome() == "diverged"
