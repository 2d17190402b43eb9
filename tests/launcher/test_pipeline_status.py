"""A pipeline's and a sweep's folder read the same way by status, resume and the planner, without a cluster.

The folders are written the way the launcher writes them (RunDir, launcher.retry's decisions, the
stages' own metrics lines); SLURM's answers come from a stand-in for squeue/sacct.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from launcher import clusters, pipeline, retry, status, sweep
from launcher.__main__ import main
from launcher.rundir import RunDir
from launcher.submit import resume_config
from lit.config import PriorConfig, load_config
from lit.configlib import ConfigError
from lit.io import write_json
from lit.runlog import append_metric

START = {"type": "start", "step": 0, "time": 1.0, "total_steps": 20, "steps_per_epoch": 10, "world_size": 1}
TRAIN = {"type": "train", "step": 4, "time": 2.0, "epoch": 0, "loss": 2.5, "lr": 2e-4}
SAID = "diverged at step 12: loss is nan at step 12"


def pipeline_folder(base: Path, stages: list[str], lines: list[dict[str, Any]], checkpoint: int = 0) -> RunDir:
    """A pipeline's run folder after one submission of `stages` (job ids 101, 102, ...): config, chain, jobs, metrics."""
    cfg = load_config(None, [f"run_dir={base}", "name=pipe", "cluster=slurm", "data.image_source=cached",
                             "data.augment=false", f"pipeline.stages=[{','.join(stages)}]"])
    run = RunDir(base)
    run.save_config(cfg)
    chain = []
    for i, name in enumerate(stages):
        job_id = str(101 + i)
        run.stage(name).save_config(pipeline.stage_config(cfg, name))
        run.stage(name).record_job("submit", job_id, "slurm", stage=name)
        chain.append({"stage": name, "job_id": job_id, "skipped": False, "detail": "not finished"})
    run.record_chain("submit", chain)
    (base / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if checkpoint:
        (base / "checkpoints").mkdir()
        (base / "checkpoints" / f"step-{checkpoint:08d}.pt").write_bytes(b"x")
    return run


@pytest.fixture
def slurm(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """SLURM's state of each job (COMPLETED unless set), and no submission at all."""
    states: dict[str, str] = {}
    monkeypatch.setattr(clusters, "slurm_state", lambda job_id: states.get(job_id, "COMPLETED"))
    monkeypatch.setattr(pipeline, "checks", lambda cfg, names: None)  # sbatch need not be on PATH

    def no_submission(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a job was submitted")

    monkeypatch.setattr(clusters.Slurm, "executor", no_submission)
    return states


def captured_chains(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, Any]]]:
    planned: list[list[tuple[str, Any]]] = []

    def submit_chain(cfg: Any, stages: list[tuple[str, Any]], kind: str = "submit", after: str | None = None) -> list[Any]:
        planned.append(stages)
        return [{"stage": n, "job_id": None if s.complete else "201", "skipped": s.complete, "detail": s.detail} for n, s in stages]

    monkeypatch.setattr(pipeline, "submit_chain", submit_chain)
    return planned


def test_a_diverged_training_is_reported_the_same_by_status_resume_and_the_planner(
        tmp_path: Path, slurm: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    diverged = {"type": "diverged", "step": 12, "time": 3.0, "reason": "loss is nan at step 12"}
    run = pipeline_folder(tmp_path / "a", ["train", "eval"], [START, TRAIN, diverged])

    planned = dict(pipeline.plan(run.config(), ["train", "eval"]))  # the planner
    assert planned["train"].complete and planned["train"].detail == SAID

    data = status.status(run.path)  # status
    assert (data["outcome"], data["result"], data["last_stop"], data["finished"]) == ("diverged", SAID, SAID, True)
    rows = {r["stage"]: r for r in data["stages"]}
    assert rows["train"]["outcome"] == "diverged" and SAID in rows["train"]["progress"]
    assert main(["status", str(run.path)]) == 0
    assert "yes: " + SAID in " ".join(capsys.readouterr().out.split())

    with pytest.raises(ConfigError, match=re.escape(f"has its result ({SAID})")):  # resume of the training alone
        resume_config(run.path)
    chains = captured_chains(monkeypatch)  # resume of the pipeline: the eval stage runs, the training does not
    pipeline.resume(run.path)
    assert [(name, state.complete, state.detail) for name, state in chains[0]][0] == ("train", True, SAID)
    assert not dict(chains[0])["eval"].complete

    alone = pipeline_folder(tmp_path / "b", ["train"], [START, TRAIN, diverged])  # nothing after the training
    with pytest.raises(ConfigError, match=re.escape(f"every stage of this pipeline is complete (train: {SAID})")):
        pipeline.resume(alone.path)
    again = ["train.lr=1e-4", "train.allow_schedule_change=true"]  # on purpose: the training runs again, as a run's would
    assert resume_config(alone.path, again).train.lr == 1e-4
    pipeline.resume(alone.path, again)
    assert [(n, s.complete, s.detail) for n, s in chains[-1]] == [("train", False, "resumed with a new schedule: train.lr: 0.0005 → 0.0001")]


def test_status_of_a_pipeline_lists_a_stage_attempt_that_failed_and_was_retried(
        tmp_path: Path, slurm: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = pipeline_folder(tmp_path, ["embed", "train"], [START, TRAIN])
    embed = run.stage("embed")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the embed job's first attempt is SIGKILLed: srun exits 137
    embed.record_start("101", "slurm", world_size=1, stage="embed")
    append_metric(embed, "start", 0, stage="embed")
    embed.record_decision(retry.decide(embed, "101", 137, max_failures=3))  # what launcher.retry records, then requeues
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the requeued job finishes the stage
    embed.record_start("101", "slurm", world_size=1, stage="embed")
    append_metric(embed, "start", 0, stage="embed")
    append_metric(embed, "done", 0, stage="embed", outcome="done")
    slurm["102"] = "RUNNING"

    data = status.status(run.path)
    rows = {r["stage"]: r for r in data["stages"]}
    assert (rows["embed"]["state"], rows["embed"]["attempts"], rows["embed"]["outcome"]) == ("COMPLETED", 2, "finished")
    assert rows["embed"]["why"].startswith("1 failed attempt, retried: no rank reported an error: a process was killed")
    (failed,) = data["failed_attempts"]
    assert (failed["where"], failed["job_id"], failed["restart"], failed["decision"]) == ("embed", "101", 0, "retried")
    assert "killed by SIGKILL" in failed["srun"]
    assert main(["status", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert "failed attempts" in text and "SIGKILL" in text and "retried" in text


def test_status_of_a_sweep_lists_every_failed_attempt_of_its_members(tmp_path: Path, slurm: dict[str, str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sweep_dir = tmp_path / "sw"
    members = []
    for name in ("a", "b"):
        run = RunDir(sweep_dir / name)
        run.save_config(load_config(None, [f"run_dir={run}", "cluster=slurm"]))
        run.record_job("submit", f"300_{len(members)}", "slurm")
        run.record_start(f"300_{len(members)}", "slurm")
        members.append({"name": name, "overrides": [], "run_dir": str(run)})
    write_json(sweep_dir / "sweep.json", {"name": "sw", "job": "job.yaml", "overrides": [], "paper": "", "members": members})
    b = RunDir(sweep_dir / "b")
    retry.record_failure(b, "300_1", 0, ValueError("bad value"))
    b.record_decision(retry.decide(b, "300_1", 1, 3))
    data = status.sweep_status(sweep_dir)
    (failed,) = data["failed_attempts"]
    assert failed["where"] == "b" and failed["decision"] == "not retried" and "ValueError: bad value" in failed["cause"]
    assert [r["member"] for r in data["members"]] == ["a", "b"]


def test_a_schedule_change_is_refused_at_submit_time_for_a_run_a_pipeline_and_a_sweep(
        tmp_path: Path, slurm: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stop = {"type": "stop", "step": 4, "time": 3.0, "reason": "SIGUSR2"}
    change = re.escape("train.lr: 0.0005 → 0.001")
    run = pipeline_folder(tmp_path / "pipe", ["shards", "train"], [START, TRAIN, stop], checkpoint=4)
    slurm.update({"101": "COMPLETED", "102": "CANCELLED"})
    chains = captured_chains(monkeypatch)
    with pytest.raises(ConfigError, match=change):  # a run
        resume_config(run.path, ["train.lr=1e-3"])
    with pytest.raises(ConfigError, match=change):  # a pipeline, before anything is submitted
        pipeline.resume(run.path, ["train.lr=1e-3"])
    assert main(["resume", str(run.path), "train.lr=1e-3"]) == 2
    assert "train.lr: 0.0005 → 0.001" in capsys.readouterr().err and chains == []
    pipeline.resume(run.path, ["train.lr=1e-3", "train.allow_schedule_change=true"])  # on purpose: submitted
    assert len(chains) == 1

    member = RunDir(tmp_path / "sw" / "m")  # a sweep's member that stopped with a checkpoint
    member.save_config(load_config(None, [f"run_dir={member}", "cluster=slurm"]))
    (member.path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in (START, TRAIN, stop)))
    (member.path / "checkpoints").mkdir()
    (member.path / "checkpoints" / "step-00000004.pt").write_bytes(b"x")
    write_json(tmp_path / "sw" / "sweep.json", {"name": "sw", "job": "job.yaml", "overrides": [], "paper": "",
                                                "members": [{"name": "m", "overrides": [], "run_dir": str(member)}]})
    with pytest.raises(ConfigError, match=change):
        sweep.resume(tmp_path / "sw", ["train.lr=1e-3"])


def test_a_failed_prior_cancels_only_the_eval_and_status_says_why(tmp_path: Path, slurm: dict[str, str]) -> None:
    run = pipeline_folder(tmp_path, ["prior", "shards", "train", "eval"], [START, TRAIN])
    slurm.update({"101": "FAILED", "102": "COMPLETED", "103": "RUNNING", "104": "CANCELLED"})
    (tmp_path / "prior").mkdir()
    (tmp_path / "prior" / "metrics.jsonl").write_text('{"epoch": 1, "loss": 2.0}\n{"epoch": 2, "loss": 1.5}\n')
    rows = {r["stage"]: r for r in status.status(run.path)["stages"]}
    assert rows["prior"]["state"] == "FAILED" and rows["prior"]["progress"] == f"epoch 2 of {PriorConfig().epochs} done"
    assert rows["train"]["why"] == "" and rows["eval"]["why"].startswith("cancelled by SLURM: the prior stage before it failed")
