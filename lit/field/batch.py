"""Prediction over many files with either engine (checkpoint or ONNX export): batches, a progress bar, skips counted.

An engine yields, batch by batch, the indices of the images it could read, their logits, and
the (index, reason) of those it could not. Rows come out in input order within each batch.
`where` gives each readable file's place (lit.field.exif.place_finder: flags over its EXIF),
read in this process from the file's headers, which weighs its answer by the location prior.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lit.data.inat import Category
from lit.field.exif import PlaceUsed
from lit.field.images import Skipped
from lit.field.scoring import Prediction, Scorer

LogitBatch = tuple[list[int], np.ndarray, list[tuple[int, str]]]


class Engine(Protocol):
    """What batch prediction needs of a model."""

    @property
    def categories(self) -> list[Category]: ...

    def batches(self, paths: Sequence[Path], batch_size: int, workers: int) -> Iterator[LogitBatch]: ...


def predict_files(engine: Engine, paths: Sequence[Path], scorer: Scorer, *, batch_size: int = 32, workers: int = 0,
                  on_rows: Callable[[list[Prediction]], None] | None = None, console: Console | None = None,
                  progress: bool = True, where: Callable[[Path], PlaceUsed | None] | None = None, keep: bool = True,
                  ) -> tuple[list[Prediction], list[Skipped]]:
    """Predictions of every readable file (also passed to `on_rows` batch by batch) and the files skipped;
    `where(path)` is a file's place (None: image-only answers). keep=False returns no prediction: `on_rows` has them all
    and memory stays that of a batch, however many files there are."""
    predictions: list[Prediction] = []
    skipped: list[Skipped] = []
    bar = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[bad]} skipped"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not progress, transient=False)
    with bar:
        task = bar.add_task("images", total=len(paths), bad=0)
        for indices, logits, bad in engine.batches(paths, batch_size, workers):
            places = [where(paths[i]) for i in indices] if where is not None else None
            rows = scorer.score([str(paths[i]) for i in indices], logits, places) if indices else []
            skipped += [Skipped(str(paths[i]), reason) for i, reason in bad]
            if keep:
                predictions += rows
            if on_rows is not None and rows:
                on_rows(rows)
            bar.update(task, advance=len(indices) + len(bad), bad=len(skipped))
    return predictions, skipped


__all__ = ["Engine", "LogitBatch", "predict_files"]
