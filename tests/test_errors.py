"""One error table for both command lines: each kind of user error reads `LABEL: message` and exits 2, in `lit` and
`python -m launcher` alike; a failing preflight prints the doctor's report (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.__main__ import main as launch
from lit.cli import main as lit
from lit.config import save_config
from tests.conftest import REPO, tiny_config


def said(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def test_each_kind_reads_the_same_in_both_command_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = REPO / "jobs" / "demo.yaml"
    # configuration: a dotted key
    assert lit(["train", str(job), "train.bogus=1"]) == 2
    assert "config error:" in said(capsys)
    assert launch(["submit", str(job), "train.bogus=1", "--dry-run"]) == 2
    assert "config error:" in said(capsys)
    # usage: a flag
    assert lit(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "usage error: --port: must be 1-65535, got 0" in said(capsys)
    assert launch(["submit", str(job), "cluster=slurm", "--preempt-at-step", "3"]) == 2
    assert "usage error: --preempt-at-step: is for local runs" in said(capsys)
    # data: a dataset file
    root = tmp_path / "broken"
    root.mkdir()
    (root / "train.json").write_text(json.dumps({"images": [], "categories": [{"id": "x"}], "annotations": []}))
    assert lit(["shards", str(root), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    text = said(capsys)
    assert "data error:" in text and "train.json" in text
    assert lit(["captions"]) == 2
    assert "usage error: ROOT: give a dataset ROOT or --categories-csv PATH" in said(capsys)


def test_a_failing_preflight_prints_the_doctors_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"run_dir: {tmp_path / 'run'}\ncluster: local\ndata: {{image_source: raw, train_shards: {tmp_path / 'none'}}}\n")
    assert launch(["submit", str(job)]) == 1
    text = said(capsys)
    assert "lit doctor" in text and "data.train_shards" in text and "nothing was submitted" in text
    assert launch(["sweep", str(job), "train.seed=1,2", "--sweep-dir", str(tmp_path / "sweep")]) == 1  # a sweep alike
    text = said(capsys)
    assert "FAIL" in text and "nothing was submitted" in text and "Traceback" not in text


def test_dry_runs_run_the_submissions_checks(engine_data: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`submit --dry-run` and `resume --dry-run` pass or stop exactly where the real command would, and submit nothing."""
    cfg = tiny_config(tmp_path / "run", engine_data, ["cluster=debug", "data.workers=0"])
    job = tmp_path / "job.yaml"
    save_config(cfg, job)
    assert launch(["submit", str(job), "--dry-run"]) == 0
    assert "preflight passed" in said(capsys) and not (tmp_path / "run").exists()
    (tmp_path / "file").write_text("not a folder")
    assert launch(["submit", str(job), f"run_dir={tmp_path / 'file'}", "--dry-run"]) == 1  # the real submit refuses it too
    assert "submit would stop here:" in said(capsys)
    assert launch(["submit", str(job)]) == 0  # a debug run: trains here
    capsys.readouterr()
    assert launch(["resume", str(tmp_path / "run"), "--dry-run", "train.lr=0.5"]) == 2  # a schedule change: refused
    assert "train.lr: 0.001 → 0.5" in said(capsys)
    jobs = (tmp_path / "run" / "jobs.jsonl").read_text()
    assert launch(["resume", str(tmp_path / "run"), "--dry-run", "slurm.time_min=9"]) == 0  # not a schedule change
    assert "preflight passed" in said(capsys) and (tmp_path / "run" / "jobs.jsonl").read_text() == jobs  # nothing submitted
