"""Metrics as JSON lines (one object per line, made by `lit.runlog`), mirrored to TensorBoard scalars when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit.runlog import METRICS, metrics_line


class MetricsWriter:
    """Appends records to `metrics.jsonl` (and `{type}/{key}` scalars to RUN/tensorboard); a no-op on ranks other than 0.

    A resumed run appends to both: TensorBoard shows the steps redone after the last
    checkpoint twice, as metrics.jsonl lists them twice.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = metrics_line(kind, step, **values)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k in values:
                v = record[k]
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
