"""How results are shown: rich tables with the paper's Table 1 beside ours, and a PNG of accuracy per rank and supercategory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lit.eval.paper import PAPER_TABLE, PaperRow
from lit.eval.templates import label
from lit.eval.with_prior import prior_table
from lit.plots import plt, save_figure


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def comparison_table(result: dict[str, Any], rows: Sequence[PaperRow] = PAPER_TABLE) -> Table:
    """Top-1 / top-5 of this evaluation (bold, first) and the paper's Table 1 rows."""
    n = result.get("num_samples", 0)
    table = Table(title=f"Zero-shot on {n:,} validation images, {result.get('num_classes', 0):,} classes (percent)")
    for name, justify in (("method", "left"), ("backbone", "left"), ("top-1", "right"), ("top-5", "right"), ("source", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    setup = result.get("setup", {})
    step = (result.get("checkpoint") or {}).get("step")
    ours = f"ours ({'+'.join(result.get('templates', []))} templates{f', step {step}' if step is not None else ''})"
    table.add_row(ours, str(setup.get("model", "")), _pct(result["top1"]), _pct(result["top5"]), "this run", style="bold green")
    for row in rows:
        table.add_row(row.method, row.backbone, _pct(row.top1), _pct(row.top5), "paper, Table 1")
    return table


def breakdown_table(result: dict[str, Any]) -> Table:
    """Top-1 at each taxonomic rank and per supercategory, plus mean per-class accuracy."""
    table = Table(title="Top-1 by taxonomic rank and supercategory (percent)")
    table.add_column("group")
    table.add_column("top-1", justify="right")
    for rank, acc in result["per_rank"].items():
        table.add_row(f"rank: {rank}", _pct(acc))
    table.add_row("mean per class", _pct(result["mean_per_class"]), end_section=True)
    for name, acc in sorted(result["per_supercategory"].items(), key=lambda kv: -kv[1]):
        table.add_row(name, _pct(acc))
    return table


def hardest_table(result: dict[str, Any], limit: int = 20) -> Table:
    """The hardest classes (lowest top-1, those below 100%) and the most confused pairs, in two sections."""
    table = Table(title="Hardest classes and most confused pairs")
    for name, justify in (("class / true → predicted", "left"), ("top-1", "right"), ("top-5", "right"), ("n", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    hardest = [h for h in result.get("hardest", []) if h["accuracy"] < 100.0][:limit]
    for i, h in enumerate(hardest):
        table.add_row(label(h.get("common_name") or "", h["name"]), _pct(h["accuracy"]), _pct(h.get("top5")), str(h["n"]),
                      end_section=i == len(hardest) - 1)
    for c in result.get("confused", [])[:limit]:
        table.add_row(f"{c.get('true_name', c['true'])} → {c.get('pred_name', c['pred'])}", "", "", str(c["count"]))
    return table


def print_report(result: dict[str, Any], console: Console, hardest: int = 20) -> None:
    """All tables of an evaluation."""
    console.print(comparison_table(result))
    console.print(breakdown_table(result))
    table = prior_table(result)
    if table is not None:
        console.print(table)
    if hardest > 0:
        console.print(hardest_table(result, hardest))


def accuracy_plot(result: dict[str, Any], out: str | Path) -> Path:
    """Bars of top-1 per taxonomic rank (kingdom → species) and per supercategory."""
    ranks = list(result["per_rank"].items())
    supers = sorted(result["per_supercategory"].items(), key=lambda kv: -kv[1])
    fig, (ax_rank, ax_super) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, max(1.0, len(supers) / 7)]})
    for ax, items, color, title in ((ax_rank, ranks, "tab:blue", "Top-1 at each taxonomic rank"),
                                    (ax_super, supers, "tab:green", "Top-1 per supercategory")):
        names, values = [k for k, _ in items], [v for _, v in items]
        bars = ax.bar(range(len(values)), values, color=color)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2)
        ax.set_xticks(range(len(values)), names, rotation=35, ha="right")
        ax.set_ylim(0, 105)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Zero-shot on {result.get('num_samples', 0):,} images, {result.get('num_classes', 0):,} classes: "
                 f"top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}%")
    return save_figure(fig, out)


__all__ = ["accuracy_plot", "breakdown_table", "comparison_table", "hardest_table", "print_report"]
