"""The rank-0 progress display: step, samples/s, loss, learning rate, logit scale, ETA."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lit.log import console


class TrainProgress:
    """A rich progress bar that is silent on other ranks and when stderr is not a terminal."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, disable=not enabled, transient=False, refresh_per_second=2,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, stats="")
        self._plain = enabled and not console.is_terminal
        self._last_plain = start_step

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.__exit__(et, ev, tb)

    def update(self, step: int, out: dict[str, float], samples_per_s: float) -> None:
        if not self.enabled:
            return
        stats = f"loss {out['loss']:.4f}  lr {out['lr']:.2e}  scale {out['logit_scale']:.1f}  {samples_per_s:.0f} samples/s"
        self.progress.update(self.task, completed=step, stats=stats)
        total = self.progress.tasks[0].total or 1
        if self._plain and (step - self._last_plain >= max(1, int(total) // 20) or step == total):
            print(f"step {step}/{int(total)}  {stats}", file=sys.stderr, flush=True)
            self._last_plain = step
