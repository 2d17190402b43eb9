"""The bench's reporting: goals on the median, raw numbers beside BENCHMARKS.md, partial reruns keep the rest.

Speed itself is never asserted here (that is what `make bench` is for); these tests feed the
report made-up figures and check what it writes.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import bench.__main__ as bench_main


@pytest.fixture()
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(bench_main, "REPO", tmp_path)
    monkeypatch.setattr(bench_main, "OUT", tmp_path / "out")
    monkeypatch.setattr(bench_main, "RAW", tmp_path / "BENCHMARKS.json")
    monkeypatch.setattr(bench_main, "discover", lambda: ["fast", "slow"])
    for name in ("fast", "slow"):  # restored (removed) by monkeypatch after the test
        monkeypatch.setitem(sys.modules, f"bench.{name}", types.ModuleType(f"bench.{name}"))
    return tmp_path


def _fake(name: str, rows: list[dict[str, Any]]) -> None:
    sys.modules[f"bench.{name}"].run = lambda: [dict(r) for r in rows]  # type: ignore[attr-defined]


def test_goal_applies_to_the_median_and_sets_the_exit_code(report: Path) -> None:
    _fake("fast", [{"metric": "speedup", "unit": "ratio", "values": [0.1, 2.0, 3.0], "goal": 1.5}])
    _fake("slow", [{"metric": "speedup", "unit": "ratio", "values": [1.0, 1.2, 9.0], "goal": 1.5},
                   {"section": "Projection", "markdown": "18 epochs: 2.8 h"}])
    assert bench_main.main([]) == 1  # slow's median 1.2 misses although its max is 9
    raw = json.loads((report / "BENCHMARKS.json").read_text())
    rows = {r["benchmark"]: r for r in raw["results"]}
    assert rows["fast"]["median"] == 2.0 and rows["fast"]["meets_goal"] and rows["fast"]["values"] == [0.1, 2.0, 3.0]
    assert rows["slow"]["median"] == 1.2 and not rows["slow"]["meets_goal"]
    text = (report / "BENCHMARKS.md").read_text()
    assert "| fast | speedup | ratio | 0.10 | 2.00 | 3.00 | 3 | meets goal >= 1.50 |" in text
    assert "MISSES goal >= 1.50" in text and "## Projection" in text and "18 epochs: 2.8 h" in text
    assert len(list((report / "out" / "runs").glob("*.json"))) == 1


def test_a_partial_rerun_keeps_the_other_benchmarks_with_their_dates(report: Path) -> None:
    _fake("fast", [{"metric": "speedup", "unit": "ratio", "values": [2.0], "goal": 1.5},
                   {"section": "Projection", "markdown": "fast's projection"}])
    _fake("slow", [{"metric": "speedup", "unit": "ratio", "values": [1.0], "goal": 1.5},
                   {"section": "Slow notes", "markdown": "slow's first notes"}])
    assert bench_main.main([]) == 1
    first = {r["benchmark"]: r for r in json.loads((report / "BENCHMARKS.json").read_text())["results"]}
    first["fast"].update(date="2026-01-01 00:00 UTC", machine="Another CPU")  # as if it had run earlier, elsewhere
    raw = json.loads((report / "BENCHMARKS.json").read_text())
    raw["results"] = list(first.values())
    (report / "BENCHMARKS.json").write_text(json.dumps(raw))
    _fake("slow", [{"metric": "speedup", "unit": "ratio", "values": [4.0], "goal": 1.5}])
    assert bench_main.main(["slow"]) == 0
    rows = {r["benchmark"]: r for r in json.loads((report / "BENCHMARKS.json").read_text())["results"]}
    assert rows["slow"]["values"] == [4.0] and rows["fast"]["values"] == [2.0]
    text = (report / "BENCHMARKS.md").read_text()
    assert "Kept from an earlier run: fast (2026-01-01 00:00 UTC, on Another CPU)" in text and "fast's projection" in text
    assert rows["slow"]["machine"] == bench_main.machine()["cpu"] and "Machine of this run:" in text
    assert "slow's first notes" not in text  # a rerun benchmark replaces its own sections
    runs = sorted((report / "out" / "runs").glob("*.json"))
    assert [json.loads(p.read_text())["benchmarks"] for p in runs] == [["fast", "slow"], ["slow"]]
