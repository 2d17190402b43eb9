"""The augmented-views benchmark on a tiny input: every variant trains and reports; no timing is asserted."""

from __future__ import annotations

from pathlib import Path


def test_views_benchmark_rows(tmp_path: Path) -> None:
    from bench import views

    rows = views.measure(tmp_path / "work", seeds=(0,), views=(1, 2), per_class=(2, 1), model=("model.name=lit-tiny", "model.image_weights="))
    metrics = [r["metric"] for r in rows]
    assert metrics == [
        "embed the training set, 1 view(s)", "embed the training set, 2 view(s)",
        "zero-shot top-1, cached, 1 view(s)", "training + final eval, cached, 1 view(s)",
        "zero-shot top-1, cached, 2 view(s)", "training + final eval, cached, 2 view(s)",
        "zero-shot top-1, raw, augmented (random resized crop)", "training + final eval, raw, augmented (random resized crop)",
    ]
    for r in rows:
        assert len(r["values"]) == 1 and r["unit"] in ("s", "%")
        assert (0 <= r["values"][0] <= 100) if r["unit"] == "%" else r["values"][0] > 0
