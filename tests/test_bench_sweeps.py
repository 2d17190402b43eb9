"""`python -m bench.sweeps` renders measured sweep reports into BENCHMARKS.md with their machine, replacing its own section."""

from __future__ import annotations

import json
from pathlib import Path

from bench import sweeps


def _sweep(folder: Path, cpu: str, text: str) -> Path:
    folder.mkdir(parents=True)
    setting = {"setting": "warm-up 16", "members": 5, "results": 5, "diverged": 0, "at_chance": 0, "failed_fraction": 0.0,
               "top1": {"estimate": 34.14, "ci95_bootstrap": [33.41, 34.95], "ci95_t": [32.93, 35.35]}, "top1_std": 0.98}
    analysis = {"settings": [setting], "differences": [{"text": text}], "grid": None, "probe": None}
    (folder / "report.json").write_text(json.dumps({"job": "jobs/demo.yaml", "overrides": ["train.lr=2e-3"],
                                                    "members": [{"outcome": "finished"}, {"outcome": "diverged"}],
                                                    "analysis": analysis}))
    (folder / "machine.json").write_text(json.dumps({"cpu": cpu, "cores": 2, "torch_threads": 1, "torch": "2.14.1"}))
    return folder


def test_a_sweep_report_becomes_a_section_naming_its_machine_and_a_rerun_replaces_it(tmp_path: Path) -> None:
    raw, md = tmp_path / "B.json", tmp_path / "B.md"
    raw.write_text(json.dumps({"date": "2026-12-05 00:00 UTC", "machine": {"cpu": "X", "cores": 2, "memory_gb": 1, "platform": "p",
                                                                           "python": "3"}, "results": [], "sections": []}))
    folder = _sweep(tmp_path / "ablation-warmup", "Some CPU", "warm-up 64 beats warm-up 16 by 1.72 points")
    assert sweeps.merge([folder], raw, md) == 0
    text = md.read_text()
    assert "## Warm-up ablation in miniature (make ablation)" in text and "2 members (1 finished)" in text
    assert "on Some CPU (2 cores, 1 torch thread(s) per member" in text and "- warm-up 64 beats warm-up 16" in text
    assert "| warm-up 16 | 5 | 0 | 0 | 0/5 | 34.14 ± 0.98 | 33.41 to 34.95 | 32.93 to 35.35 |" in text
    (folder / "report.json").write_text((folder / "report.json").read_text().replace("1.72", "2.50"))
    assert sweeps.merge([folder], raw, md) == 0
    text = md.read_text()
    assert text.count("## Warm-up ablation in miniature") == 1 and "2.50 points" in text and "1.72" not in text
    assert sweeps.merge([tmp_path / "missing"], raw, md) == 1
