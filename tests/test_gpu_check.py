"""The GPU check on a machine without a GPU: every part runs at a tiny CPU shape, says the GPU parts were skipped, exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    return done, out


@pytest.mark.slow  # about a minute: toy JPEGs, shards, two embeds, tiny training steps, a classifier
def test_without_a_gpu_every_part_runs_and_says_the_gpu_parts_were_skipped(cpu_report: tuple) -> None:
    done, out = cpu_report
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the GPU parts were skipped" in done.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["gpu_parts_skipped"] is True and report["gpu"] == ""
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == ["doctor", "train", "embed", "zeroshot"]
    assert {n: p["error"] for n, p in parts.items()} == dict.fromkeys(parts, "")
    train = {r["metric"]: r for r in parts["train"]["rows"]}
    assert set(train) == {"train cached fp32, batch 8", "train raw fp32, batch 8"}
    assert all(r["loss_finite"] and r["values"][0] > 0 for r in train.values())
    embed = [r["metric"] for r in parts["embed"]["rows"]]
    assert embed[0].startswith("lit embed fp32") and "lit embed / tower-only forward, fp32" in embed
    zeroshot = [r["metric"] for r in parts["zeroshot"]["rows"]]
    assert zeroshot[0].startswith("classifier build, 64 classes") and zeroshot[1].startswith("cached evaluation pass, 32 samples")
    assert (out / "doctor.txt").read_text().count("torch") >= 1
    md = (out / "gpu_check.md").read_text()
    assert "GPU parts skipped: no CUDA GPU is visible" in md


@pytest.mark.slow
def test_only_a_real_gpu_report_is_merged_into_the_benchmarks(cpu_report: tuple, tmp_path: Path) -> None:
    from bench.__main__ import merge_gpu

    _, out = cpu_report
    raw, md = tmp_path / "BENCHMARKS.json", tmp_path / "BENCHMARKS.md"
    raw.write_text((REPO / "BENCHMARKS.json").read_text())
    assert merge_gpu(out / "gpu_check.json", raw, md) == 1 and not md.exists()  # CPU test shapes are no GPU figures
    report = json.loads((out / "gpu_check.json").read_text())
    gpu = {**report, "gpu": "Test GPU 80GB", "gpu_parts_skipped": False}
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    assert merge_gpu(tmp_path / "gpu.json", raw, md) == 0
    assert merge_gpu(tmp_path / "gpu.json", raw, md) == 0  # a second merge replaces, never duplicates
    rows = json.loads(raw.read_text())["results"]
    mine = [r for r in rows if r["benchmark"] == "gpu: Test GPU 80GB"]
    assert len(mine) == sum(len(p["rows"]) for p in report["parts"])
    assert len(rows) - len(mine) == len(json.loads((REPO / "BENCHMARKS.json").read_text())["results"])  # CPU rows kept
    assert "| gpu: Test GPU 80GB | train cached fp32, batch 8 |" in md.read_text()
