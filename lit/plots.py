"""Training curves as a picture (accuracy per rank and supercategory is drawn in lit.eval.report)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

from lit.runlog import MetricsLog, Train

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(records: MetricsLog | list[dict[str, Any]], out: str | Path, lrs: Sequence[float] = ()) -> Path:
    """Loss per epoch and learning rate per step (the paper's Figure 3), from metrics.jsonl's records.

    `lrs` is the schedule at every step (it is a pure function of the step); without it the
    logged steps' rates are drawn.
    """
    log = records if isinstance(records, MetricsLog) else MetricsLog.parse(records)
    steps = log.of(Train)
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for r in steps:
        if r.loss is not None:
            by_epoch[r.epoch].append(r.loss)
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = sorted(by_epoch)
    ax_loss.plot([e + 1 for e in epochs], [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs], marker="o")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean contrastive loss")
    ax_loss.set_title("Loss per epoch")
    if lrs:
        ax_lr.plot(range(1, len(lrs) + 1), lrs)
    else:
        ax_lr.plot([r.step for r in steps], [r.lr for r in steps])
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("Learning rate per step")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
    return save_figure(fig, out)


def save_figure(fig: plt.Figure, out: str | Path) -> Path:
    """Lay out, write as PNG (creating the folder) and free the figure."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
