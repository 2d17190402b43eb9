"""`python -m launcher report SWEEP_DIR`: the members of a sweep side by side (also written when the last member ends).

- `report.md` and `report.json`: per member its overrides, outcome (finished / diverged at step N /
  not finished), final and best zero-shot top-1/top-5 and the epoch of the best, wall time and
  GPU-hours; members that differ only in `train.seed` are summed up as mean ± std; beside them the
  linear probe (`lit probe`, SWEEP_DIR/probe) and whole-model baselines (`lit eval --open-clip`,
  SWEEP_DIR/baselines/NAME) when they were run, and the paper's published figures (`paper: warmup`);
  the settings over seeds, every one-axis difference with its 95 % intervals and in words, a grid
  of two axes (failed fraction, mean top-1) and the gap to the probe (`launcher.compare`); the
  machine the ablation recorded (SWEEP_DIR/machine.json).
- `--against OTHER_SWEEP_DIR`: the same members in another sweep (another thread count or CPU),
  member by member, written to SWEEP_DIR/against-OTHER.md.
- `plots/loss.png`, `plots/lr.png`, `plots/top1.png`: every member's loss per epoch, learning rate
  per step and zero-shot top-1 per epoch, overlaid (the paper's Figure 3 for every run).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markdown import Markdown

from launcher import clusters
from launcher.compare import across, analyse, markdown_across
from launcher.compare import markdown as analysis_markdown
from launcher.rundir import RunDir
from launcher.sweepdir import SweepDir
from lit.eval.paper import PAPER_WARMUP
from lit.io import atomic_write, write_json
from lit.runlog import Eval, MetricsLog, Start, Train
from lit.train.optim import lr_at

REPORT = "report.md"
MACHINE = "machine.json"
"""Where the members ran (CPU model, cores, torch threads), written by `python -m launcher ablation`."""


# ---------------------------------------------------------------- what each member did


def _attempt_seconds(log: MetricsLog) -> float:
    """Time spent training: each attempt from its `start` line to its last line."""
    total, start, last = 0.0, None, None
    for r in log:
        if isinstance(r, Start):
            if start is not None and last is not None:
                total += last - start
            start = last = r.time
        elif start is not None:
            last = r.time
    if start is not None and last is not None:
        total += last - start
    return total


def member_summary(name: str, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """One member's row: outcome, final/best accuracy, wall time, GPU-hours (plain data)."""
    run = RunDir(run_dir)
    log = run.metrics()
    cfg = run.config() if run.has_config() else None
    start = log.last(Start)
    per_epoch = (start.steps_per_epoch or 0) if start else 0
    evals = [r for r in log.of(Eval) if r.top1 is not None]
    outcome = log.outcome()
    diverged = log.diverged()
    final = next((r for r in reversed(evals) if r.final), None) if outcome == "finished" else None
    best = max(evals, key=lambda r: r.top1 or 0.0) if evals else None
    classes = next((r.data.get("num_classes") for r in reversed(evals) if r.data.get("num_classes")), None)
    world = start.world_size if start else 1
    gpus = bool(cfg and cfg.slurm.gpus_per_node and cfg.train.device != "cpu" and clusters.of(cfg).scheduled)
    seconds = _attempt_seconds(log)
    return {
        "member": name, "overrides": overrides, "run_dir": str(run_dir),
        "outcome": outcome or "not finished",
        "diverged_step": diverged.step if diverged else None, "diverged_reason": diverged.reason if diverged else None,
        "final_top1": final.top1 if final else None, "final_top5": final.top5 if final else None,
        "best_top1": best.top1 if best else None, "best_top5": best.top5 if best else None,
        "best_epoch": math.ceil(best.step / per_epoch) if best and per_epoch else None,
        "wall_s": round(seconds, 1), "gpu_hours": round(seconds * world / 3600, 3) if gpus else 0.0,
        "warmup_steps": cfg.train.warmup_steps if cfg else None, "seed": cfg.train.seed if cfg else None,
        "num_classes": classes,
    }


def _curves(run_dir: Path) -> dict[str, Any]:
    run = RunDir(run_dir)
    log = run.metrics()
    # a resumed run repeats the steps after its checkpoint: the latest line of a step wins
    train = {r.step: r for r in log.of(Train)}
    evals = {r.step: r for r in log.of(Eval) if r.top1 is not None}
    start = log.last(Start)
    per_epoch = (start.steps_per_epoch or 1) if start else 1
    losses: dict[int, list[float]] = defaultdict(list)
    for r in train.values():
        if r.loss is not None:
            losses[r.epoch + 1].append(r.loss)
    lrs = sorted((s, r.lr) for s, r in train.items() if r.lr is not None)
    total = (start.total_steps or 0) if start else 0
    if total and run.has_config():  # the schedule is a pure function of the step: draw every step
        schedule = run.config().train
        last = max(train) if train else total
        lrs = [(s + 1, lr_at(s, total, schedule)) for s in range(min(total, last))]
    return {
        "loss": sorted((e, sum(v) / len(v)) for e, v in losses.items()),
        "lr": lrs,
        "top1": sorted((math.ceil(s / per_epoch), float(r.top1 or 0.0)) for s, r in evals.items()),
    }


# ---------------------------------------------------------------- beside the members


def _group_key(overrides: list[str]) -> tuple[str, ...]:
    return tuple(o for o in overrides if not o.startswith("train.seed="))


def seed_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Members that differ only in train.seed: mean ± std of their final top-1/top-5 and how many diverged."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[_group_key(r["overrides"])].append(r)
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        entry: dict[str, Any] = {"overrides": list(key), "members": [m["member"] for m in members],
                                 "diverged": sum(m["outcome"] == "diverged" for m in members)}
        for metric in ("final_top1", "final_top5"):
            values = [float(m[metric]) for m in members if m[metric] is not None]
            entry[metric] = round(statistics.fmean(values), 2) if values else None
            entry[f"{metric}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
        out.append(entry)
    return out


def extras(sweep_dir: Path) -> dict[str, Any]:
    """The linear probe and the baselines found in the sweep folder (results.json files), and machine.json."""
    found: dict[str, Any] = {"probe": None, "baselines": {}, "machine": None}
    for key, path in (("probe", sweep_dir / "probe" / "results.json"), ("machine", sweep_dir / MACHINE)):
        if path.is_file():
            found[key] = json.loads(path.read_text())
    for path in sorted((sweep_dir / "baselines").glob("*/results.json")):
        found["baselines"][path.parent.name] = json.loads(path.read_text())
    return found


def paper_rows(rows: list[dict[str, Any]], paper: str) -> dict[str, Any]:
    """The paper's published result of each member's setting (`paper: warmup`: by train.warmup_steps)."""
    if paper != "warmup":
        return {}
    out = {}
    for r in rows:
        if r["warmup_steps"] in PAPER_WARMUP:
            figure = PAPER_WARMUP[r["warmup_steps"]]
            out[r["member"]] = {"warmup_steps": r["warmup_steps"], "diverged": figure is None,
                                "top1": figure[0] if figure else None, "top5": figure[1] if figure else None}
    return out


# ---------------------------------------------------------------- writing


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _outcome(r: dict[str, Any]) -> str:
    if r["outcome"] == "diverged":
        return f"diverged at step {r['diverged_step']}"
    return str(r["outcome"])


def _machine(m: dict[str, Any]) -> str:
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('torch_threads', '?')} torch thread(s) per member"


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# Sweep {data['name']}", "", f"{len(data['members'])} members of `{data['job']}`"
             + (f", common overrides: `{' '.join(data['overrides'])}`" if data["overrides"] else "") + "."
             + (f" Ran on {_machine(data['extras']['machine'])}." if data["extras"].get("machine") else ""), "",
             "| member | overrides | outcome | final top-1 | final top-5 | best top-1 (epoch) | wall time | GPU-hours |"
             + (" paper top-1 / top-5 |" if data["paper"] else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if data["paper"] else "")]
    for r in data["members"]:
        paper = data["paper"].get(r["member"])
        cell = "" if not data["paper"] else (" diverged |" if paper and paper["diverged"] else
                                             f" {_pct(paper['top1'])} / {_pct(paper['top5'])} |" if paper else " - |")
        best = f"{_pct(r['best_top1'])} ({r['best_epoch']})" if r["best_top1"] is not None else "-"
        lines.append(f"| {r['member']} | `{' '.join(r['overrides']) or '-'}` | {_outcome(r)} | {_pct(r['final_top1'])} | "
                     f"{_pct(r['final_top5'])} | {best} | {_duration(r['wall_s'])} | {r['gpu_hours']:.2f} |{cell}")
    diverged = [r for r in data["members"] if r["outcome"] == "diverged"]
    if diverged:
        lines += ["", "Diverged:"] + [f"- {r['member']}: step {r['diverged_step']}, {r['diverged_reason']}" for r in diverged]
    if data["seed_groups"]:
        lines += ["", "Over seeds (final top-1 / top-5, mean ± std):", "",
                  "| overrides | members | diverged | top-1 | top-5 |", "|---|---|---|---|---|"]
        for g in data["seed_groups"]:
            lines.append(f"| `{' '.join(g['overrides']) or '-'}` | {len(g['members'])} | {g['diverged']} | "
                         f"{_pct(g['final_top1'])} ± {_pct(g['final_top1_std'])} | {_pct(g['final_top5'])} ± {_pct(g['final_top5_std'])} |")
    lines += analysis_markdown(data["analysis"])
    probe, baselines = data["extras"]["probe"], data["extras"]["baselines"]
    if probe or baselines:
        lines += ["", "Beside zero-shot (same validation set):", "", "| model | top-1 | top-5 |", "|---|---|---|"]
        if probe:
            lines.append(f"| linear probe on the frozen features (supervised ceiling) | {_pct(probe.get('top1'))} | {_pct(probe.get('top5'))} |")
        for name, res in baselines.items():
            lines.append(f"| {name} (whole pretrained model, zero-shot) | {_pct(res.get('top1'))} | {_pct(res.get('top5'))} |")
    lines += ["", "Plots: `plots/loss.png` (loss per epoch), `plots/lr.png` (learning rate per step), `plots/top1.png` "
              "(zero-shot top-1 per epoch)" + (", the paper's final top-1 as dashed lines." if data["paper"] else "."), ""]
    return "\n".join(lines)


def plot(sweep_dir: Path, curves: dict[str, dict[str, Any]], paper: dict[str, Any]) -> list[Path]:
    import matplotlib  # only where a report is drawn: status and a sweep's tasks start without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = []
    titles = {"loss": ("epoch", "mean training loss"), "lr": ("step", "learning rate"), "top1": ("epoch", "zero-shot top-1 (%)")}
    for kind, (xlabel, ylabel) in titles.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for i, (name, c) in enumerate(curves.items()):
            if c[kind]:
                xs, ys = zip(*c[kind])
                ax.plot(xs, ys, marker="o" if kind != "lr" else None, markersize=3, label=name, color=f"C{i % 10}")
            if kind == "top1" and paper.get(name) and paper[name]["top1"] is not None:
                ax.axhline(paper[name]["top1"], linestyle="--", color=f"C{i % 10}", linewidth=1,
                           label=f"paper, warm-up {paper[name]['warmup_steps']}: {paper[name]['top1']}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = sweep_dir / "plots" / f"{kind}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        out.append(path)
    return out


def build(sweep_dir: str | Path) -> dict[str, Any]:
    """Everything the report shows, as plain data."""
    sweep_dir = Path(sweep_dir)
    spec = SweepDir(sweep_dir).read()
    rows = [member_summary(m["name"], m["overrides"], Path(m["run_dir"])) for m in spec["members"]]
    found = extras(sweep_dir)
    probe = (found["probe"] or {}).get("top1")
    return {"name": spec["name"], "job": spec["job"], "overrides": spec["overrides"], "members": rows,
            "seed_groups": seed_groups(rows), "paper": paper_rows(rows, spec.get("paper", "")), "extras": found,
            "analysis": analyse(rows, probe)}


def write_report(sweep_dir: str | Path) -> Path:
    """Write report.md, report.json and the plots; returns report.md's path."""
    sweep_dir = Path(sweep_dir)
    data = build(sweep_dir)
    curves = {m["name"]: _curves(Path(m["run_dir"])) for m in SweepDir(sweep_dir).read()["members"]}
    plot(sweep_dir, curves, data["paper"])
    write_json(sweep_dir / "report.json", data)
    atomic_write(sweep_dir / REPORT, markdown(data))
    return sweep_dir / REPORT


def member_ended(run_dir: str | Path) -> Path | None:
    """After a member ends: when every member of its sweep has its result, write the report; its path."""
    sweep = SweepDir.of_member(run_dir)
    if sweep is None or any(run.outcome() == "" for run in sweep.members().values()):
        return None
    return write_report(sweep.path)


# ---------------------------------------------------------------- command


def write_against(sweep_dir: str | Path, other: str | Path) -> Path:
    """SWEEP_DIR/against-OTHER.md: the members of both sweeps side by side; its path."""
    a, b = build(sweep_dir), build(other)
    path = Path(sweep_dir) / f"against-{Path(other).resolve().name}.md"
    atomic_write(path, markdown_across(across(a["members"], b["members"], Path(sweep_dir).resolve().name, Path(other).resolve().name)))
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR")
    parser.add_argument("--against", default=None, metavar="OTHER_SWEEP_DIR",
                        help="also compare member by member with the same sweep run elsewhere (another thread count or CPU)")


def run(args: argparse.Namespace) -> int:
    report = write_report(Path(args.sweep_dir).resolve())
    path = write_against(report.parent, Path(args.against).resolve()) if args.against else report
    out = Console(soft_wrap=True)
    if out.is_terminal:
        out.print(Markdown(path.read_text()))
    else:  # piped: the Markdown itself, never wrapped
        print(path.read_text(), flush=True)
    out.print(f"written: {report}, {report.with_name('report.json')}, {report.parent / 'plots'}/{{loss,lr,top1}}.png"
              + (f", {path}" if path != report else ""))
    return 0


__all__ = ["MACHINE", "REPORT", "build", "member_ended", "member_summary", "seed_groups", "write_against", "write_report"]
