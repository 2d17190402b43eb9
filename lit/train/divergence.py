"""When a run has diverged: a result to report, not a crash.

The rule (`train.diverge_on_stall` adds the second half):
- the loss of a step is not finite (nan or inf) on any rank; or
- an epoch other than the first that starts after the warm-up has a mean loss at or above the
  starting loss, the loss of the first step (computed with the initial weights, before any
  update): a contrastive loss no lower than at the start once the learning rate has peaked means
  the text tower collapsed and is not learning.

The watch's state rides in every checkpoint, so a resumed run judges exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

START_STEPS = 1
"""Steps whose mean loss is the starting loss: the first, whose loss the initial weights give."""


@dataclass
class DivergenceWatch:
    """Follows the loss of one rank and says why the run diverged (None while it has not)."""

    warmup_steps: int
    steps_per_epoch: int
    on_stall: bool = True
    start_sum: float = 0.0
    start_count: int = 0
    epoch_sum: float = 0.0
    epoch_count: int = 0

    @property
    def start_loss(self) -> float | None:
        return self.start_sum / self.start_count if self.start_count >= START_STEPS else None

    def after_step(self, step: int, loss: float) -> str | None:
        """Record the loss of optimizer step `step` (1-based); a reason when it is not finite."""
        if not math.isfinite(loss):
            return f"loss is {loss} at step {step}"
        if self.start_count < START_STEPS:
            self.start_sum += loss
            self.start_count += 1
        self.epoch_sum += loss
        self.epoch_count += 1
        return None

    def end_epoch(self, step: int, epoch: int) -> str | None:
        """At the end of epoch `epoch` (0-based; `step` is its last step): a reason when the loss stalled."""
        mean = self.epoch_sum / self.epoch_count if self.epoch_count else None
        self.epoch_sum, self.epoch_count = 0.0, 0
        start = self.start_loss
        first_step = step - self.steps_per_epoch  # steps done before this epoch
        if not self.on_stall or mean is None or start is None or epoch == 0 or first_step < self.warmup_steps:
            return None
        if mean >= start:
            return (f"the mean loss of epoch {epoch + 1} ({mean:.4g}) is not below the starting loss ({start:.4g}) "
                    f"after the {self.warmup_steps} warm-up steps")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"start_sum": self.start_sum, "start_count": self.start_count, "epoch_sum": self.epoch_sum,
                "epoch_count": self.epoch_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start_sum = float(state.get("start_sum", 0.0))
        self.start_count = int(state.get("start_count", 0))
        self.epoch_sum = float(state.get("epoch_sum", 0.0))
        self.epoch_count = int(state.get("epoch_count", 0))


__all__ = ["START_STEPS", "DivergenceWatch"]
