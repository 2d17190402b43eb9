"""The serve benchmark's measuring functions at a tiny shape: the rows it reports, never its speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import _common as common
from bench import serve


@pytest.mark.slow
def test_serve_bench_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "settle", lambda **_: 0.0)  # nothing here is timed
    m = serve.measure(tmp_path, repeats=1, max_wait=0.0, requests=24, images={1: 2, 32: 32}, model_name="lit-tiny",
                      image_weights="", per_class=1, size=(64, 48))
    assert m["verification"]["ok"] and all(r["answered"] == 24 for r in m["load"])
    rows = serve.rows(m)
    units = {r["metric"]: r["unit"] for r in rows}
    assert all(len(r["values"]) == 1 and r["values"][0] >= 0 for r in rows)
    for b in (1, 32):
        assert units[f"image encoder, onnxruntime, batch {b}, 1 core"] == "images/s" == units[f"image encoder, torch eager, batch {b}, 1 core"]
        assert units[f"image encoder, onnxruntime / torch, batch {b}"] == "ratio"
    assert [units[f"lit serve (ONNX) POST /predict latency {q}, 8 concurrent"] for q in ("p50", "p90", "p99")] == ["ms"] * 3
    p50, p90, p99 = (next(r["values"][0] for r in rows if r["metric"].endswith(f"latency {q}, 8 concurrent")) for q in ("p50", "p90", "p99"))
    assert 0 < p50 <= p90 <= p99
    assert "onnxruntime" in serve.section(rows)
