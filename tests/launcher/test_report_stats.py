"""The report's statistics: intervals over seeds, differences told from noise, the grid, the gap to the probe.

Synthetic member results with known effects go through the real report code (`launcher.report`,
`launcher.compare`, `launcher.stats`): a large effect is called, a null one is not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from launcher.compare import across, analyse, axes, markdown, markdown_across, settings
from launcher.report import write_report
from launcher.stats import difference, mean_interval, ratio_interval, t_quantile
from lit.io import write_json


def row(member: str, overrides: list[str], top1: float | None, outcome: str = "finished", classes: int = 96) -> dict[str, Any]:
    return {"member": member, "overrides": overrides, "outcome": outcome, "final_top1": top1, "num_classes": classes}


# ---------------------------------------------------------------- the numbers


@pytest.mark.parametrize(("df", "t"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423), (200, 1.9719)])
def test_t_quantiles_match_the_tables(df: float, t: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)


def test_welch_degrees_of_freedom_need_fractional_quantiles() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2.5, 3.7, 7.25):
        assert t_quantile(0.975, df) == pytest.approx(float(stats.t.ppf(0.975, df)), rel=1e-9)


def test_the_intervals_are_seeded_and_paired_by_seed() -> None:
    a, b = [40.0, 35.0, 44.0, 38.0, 41.0], [37.0, 32.5, 41.0, 35.5, 38.0]  # seed effects far larger than the difference
    paired, unpaired = difference(a, b, True), difference(a, b, False)
    assert paired == difference(a, b, True)  # the same resamples every time
    assert paired.estimate == pytest.approx(2.8) and paired.paired and paired.excludes_zero
    assert not unpaired.excludes_zero and unpaired.boot is not None and unpaired.boot[0] < 0 < unpaired.boot[1]
    assert paired.t == pytest.approx((2.8 - 2.7764 * 0.2739 / 5 ** 0.5, 2.8 + 2.7764 * 0.2739 / 5 ** 0.5), abs=1e-3)
    assert mean_interval([5.0]).boot is None and difference([1.0, 2.0], [3.0], False).boot is None


def test_a_large_effect_is_called_and_a_null_one_is_not_at_the_stated_rate() -> None:
    rng = np.random.default_rng(1)
    calls = {"null": 0, "null, bootstrap alone": 0, "large": 0}
    trials = 300
    for _ in range(trials):
        seed_effect = rng.normal(0, 3, 5)  # each seed's own luck, shared by both settings
        base = 35 + seed_effect + rng.normal(0, 1, 5)
        null = difference(35 + seed_effect + rng.normal(0, 1, 5), base, True)
        calls["null"] += null.excludes_zero
        calls["null, bootstrap alone"] += null.boot is not None and not null.boot[0] <= 0 <= null.boot[1]
        calls["large"] += difference(39 + seed_effect + rng.normal(0, 1, 5), base, True).excludes_zero
    assert calls["null"] / trials <= 0.08  # 5 % expected: the t-interval keeps the narrow bootstrap honest
    assert calls["null, bootstrap alone"] / trials > 0.10  # why the verdict asks both intervals
    assert calls["large"] / trials >= 0.95


def test_the_share_of_the_gap_closed() -> None:
    share, ci = ratio_interval([40.0, 41.0, 39.0], [30.0, 31.0, 29.0], 50.0)
    assert share == pytest.approx(0.5) and ci is not None and ci[0] <= 0.5 <= ci[1]


# ---------------------------------------------------------------- the warm-up ablation, through the report


def write_sweep(sweep_dir: Path, tops: dict[str, list[float]], probe: float | None = None) -> None:
    """A finished local sweep: one run folder per member with a metrics.jsonl (no config, no checkpoints)."""
    members = []
    for setting, values in tops.items():
        for seed, top1 in enumerate(values):
            name, run_dir = f"{setting}_seed-{seed}", sweep_dir / f"{setting}_seed-{seed}"
            run_dir.mkdir(parents=True)
            lines = [{"type": "start", "step": 0, "time": 0.0, "world_size": 1, "steps_per_epoch": 48, "total_steps": 96},
                     {"type": "train", "step": 48, "time": 20.0, "epoch": 0, "loss": 2.0, "lr": 1e-3},
                     {"type": "eval", "step": 96, "time": 40.0, "final": True, "top1": top1, "top5": 80.0, "num_classes": 96},
                     {"type": "done", "step": 96, "time": 41.0}]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
            members.append({"name": name, "overrides": [f"train.warmup_steps={setting[6:]}", f"train.seed={seed}"],
                            "run_dir": str(run_dir)})
    write_json(sweep_dir / "sweep.json", {"name": sweep_dir.name, "job": "demo.yaml", "overrides": [], "members": members})
    if probe is not None:
        write_json(sweep_dir / "probe" / "results.json", {"top1": probe, "top5": 90.0})


def test_the_report_calls_a_large_warmup_effect_and_not_a_null_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    luck = rng.normal(0, 2.5, 5)  # a seed's data order and init help every warm-up alike
    tops = {"warmup1": list(31 + luck + rng.normal(0, 0.7, 5)), "warmup16": list(37 + luck + rng.normal(0, 0.7, 5)),
            "warmup64": list(37 + luck + rng.normal(0, 0.7, 5))}
    write_sweep(tmp_path / "sw", tops, probe=45.2)
    text = write_report(tmp_path / "sw").read_text()
    data = json.loads((tmp_path / "sw" / "report.json").read_text())["analysis"]
    verdicts = {(d["higher"], d["lower"]): d for d in data["differences"]}
    assert len(verdicts) == 3 and all(d["paired"] and d["n"] == 5 for d in verdicts.values())
    big = verdicts[("warm-up 16", "warm-up 1")]
    assert big["told_apart"] and 4 < big["estimate"] < 8 and big["ci95_bootstrap"][0] > 0 and big["ci95_t"][0] > 0
    assert big["text"].startswith(f"warm-up 16 beats warm-up 1 by {big['estimate']:.2f} points (95 % CI")
    null = next(d for k, d in verdicts.items() if set(k) == {"warm-up 16", "warm-up 64"})
    assert not null["told_apart"] and "cannot be told apart" in null["text"] and "includes 0" in null["text"]
    assert f"- {big['text']}" in text and f"- {null['text']}" in text
    assert [s["setting"] for s in data["settings"]] == ["warm-up 1", "warm-up 16", "warm-up 64"]
    assert data["settings"][0]["failed_fraction"] == 0 and data["settings"][0]["top1"]["n"] == 5
    assert data["probe"]["baseline"] == "warm-up 1" and data["probe"]["best"] in ("warm-up 16", "warm-up 64")
    assert "closes most of the gap to the probe (45.20)" in text and data["grid"] is None


# ---------------------------------------------------------------- the divergence grid


def grid_rows() -> list[dict[str, Any]]:
    """lr x warm-up x 3 seeds: at 5e-3 everything fails, at 4e-3 only warm-up 1 (in 2 of 3 seeds)."""
    rows = []
    for lr in ("2e-3", "3e-3", "4e-3", "5e-3"):
        for warmup in (1, 16, 64):
            for seed in range(3):
                over = [f"train.lr={lr}", f"train.warmup_steps={warmup}", f"train.seed={seed}"]
                name = f"lr-{lr}_warmup_steps-{warmup}_seed-{seed}"
                if lr == "5e-3":
                    rows.append(row(name, over, None, "diverged") if seed == 0 else row(name, over, 1.04))  # nan, or at chance
                elif lr == "4e-3" and warmup == 1 and seed < 2:
                    rows.append(row(name, over, 1.5))  # finished below 2 x chance (2.08 % of 96 classes)
                else:
                    rows.append(row(name, over, 30.0 + seed))
    return rows


def test_the_grid_gives_the_failed_fraction_and_mean_top1_per_cell() -> None:
    data = analyse(grid_rows())
    g = data["grid"]
    assert (g["rows"], g["cols"]) == ("train.lr", "train.warmup_steps") and g["col_values"] == ["1", "16", "64"]
    cells = {(c["row"], c["col"]): c for c in g["cells"]}
    assert cells[("5e-3", "1")]["failed"] == 3 and cells[("5e-3", "1")]["diverged"] == 1 and cells[("5e-3", "1")]["failed_fraction"] == 1
    assert cells[("4e-3", "1")]["failed_fraction"] == pytest.approx(0.667) and cells[("4e-3", "16")]["failed_fraction"] == 0
    assert cells[("2e-3", "64")]["mean_top1"] == 31.0 and cells[("5e-3", "16")]["mean_top1"] == pytest.approx(1.04)
    lines = markdown(data)
    assert "| | warm-up 1 | warm-up 16 | warm-up 64 |" in lines
    assert "| lr 5e-3 | 3/3 · 1.04 | 3/3 · 1.04 | 3/3 · 1.04 |" in lines and "| lr 4e-3 | 2/3 · 11.67 | 0/3 · 31.00 | 0/3 · 31.00 |" in lines
    contexts = {d["context"] for d in data["differences"]}
    assert {"lr 2e-3", "warm-up 16"} <= contexts and len(data["differences"]) == 4 * 3 + 3 * 6


# ---------------------------------------------------------------- the recipe sweep beside the probe


def recipe_rows(shift: dict[tuple[str, str], float]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    luck = rng.normal(0, 1.5, 5)
    rows = []
    for recipe in ("paper", "mixed"):
        data = [] if recipe == "paper" else ["data.train_shards=data/shards-hard-mixed/train", "data.train_embeddings=x/train"]
        for loss in ("clip", "siglip"):
            for seed in range(5):
                over = [f"captions.recipe={recipe}", *data, f"train.loss={loss}", f"train.seed={seed}"]
                rows.append(row(f"{recipe}_loss-{loss}_seed-{seed}", over, 30 + shift[(recipe, loss)] + luck[seed] + rng.normal(0, 0.3)))
    return rows


def test_the_recipe_sweep_says_which_setting_closes_most_of_the_gap_to_the_probe() -> None:
    rows = recipe_rows({("paper", "clip"): 0, ("paper", "siglip"): 3, ("mixed", "clip"): 1, ("mixed", "siglip"): 10})
    found = settings(rows)
    assert axes(found) == [["captions.recipe", "data.train_shards", "data.train_embeddings"], ["train.loss"]]
    data = analyse(rows, probe_top1=45.2)
    p = data["probe"]
    assert p["baseline"] == "paper captions, clip loss" and p["best"] == "mixed captions, siglip loss"
    best = next(r for r in p["rows"] if r["setting"] == p["best"])
    assert 0.55 < best["share_closed"] < 0.75 and best["share_closed_ci95"][0] < best["share_closed"] < best["share_closed_ci95"][1]
    assert p["text"].startswith("mixed captions, siglip loss closes most of the gap to the probe (45.20)")
    assert "of the gap of paper captions, clip loss closed (95 % CI" in p["text"]
    assert p["versus"][0].startswith("mixed captions, siglip loss beats paper captions, siglip loss by")
    assert len(data["differences"]) == 4 and "Beside the linear probe (45.20 top-1, the same frozen features):" in markdown(data)


def test_an_unpaired_comparison_when_the_seeds_differ() -> None:
    rows = [row(f"a{s}", ["train.lr=1e-3", f"train.seed={s}"], 40.0 + s) for s in range(4)]
    rows += [row(f"b{s}", ["train.lr=2e-3", f"train.seed={s}"], 30.0 + s) for s in range(3)]
    rows.append(row("b3", ["train.lr=2e-3", "train.seed=3"], None, "diverged"))
    (d,) = analyse(rows)["differences"]
    assert not d["paired"] and "unpaired, 4 and 3 seeds" in d["text"] and d["told_apart"]


# ---------------------------------------------------------------- the same sweep on two thread counts


def test_two_sweeps_member_by_member() -> None:
    one = [row(f"w{w}_seed-{s}", [f"train.warmup_steps={w}", f"train.seed={s}"], 30.0 + w + s) for w in (1, 16) for s in range(3)]
    two = [dict(r, final_top1=r["final_top1"] + (0.0 if r["member"].endswith("0") else 0.5)) for r in one]
    data = across(one, two, "threads1", "threads2")
    assert data["identical"] == 2 and data["largest"] == 0.5 and len(data["members"]) == 6
    assert data["verdicts"] and all(v["same"] for v in data["verdicts"])
    text = markdown_across(data)
    assert text.startswith("# threads1 against threads2") and "6 members with a final top-1 in both: 2 identical" in text


def test_report_against_writes_the_comparison_of_two_sweep_folders(tmp_path: Path) -> None:
    from launcher.report import write_against

    tops = {"warmup1": [30.0, 31.0, 29.0], "warmup16": [36.0, 37.5, 35.0]}
    write_sweep(tmp_path / "threads1", tops)
    write_sweep(tmp_path / "threads2", {k: [v[0], v[1] + 0.25, v[2]] for k, v in tops.items()})
    text = write_against(tmp_path / "threads1", tmp_path / "threads2").read_text()
    assert (tmp_path / "threads1" / "against-threads2.md").is_file()
    assert "6 members with a final top-1 in both: 4 identical, largest difference 0.25 points." in text
    assert "| warmup1_seed-1 | 31.00 | 31.25 | -0.25 |" in text and "| yes |" in text
