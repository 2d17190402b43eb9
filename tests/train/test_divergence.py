"""Divergence as a result: the rule (lit.train.divergence) and a training run that ends `diverged`."""

from __future__ import annotations

from pathlib import Path

from launcher.status import run_status
from lit import checkpoint
from lit.runlog import MetricsLog
from lit.train.divergence import DivergenceWatch
from lit.train.run import EXIT_DIVERGED, run
from tests.conftest import tiny_config


def test_a_non_finite_loss_is_divergence_at_once() -> None:
    watch = DivergenceWatch(warmup_steps=100, steps_per_epoch=10)
    assert watch.after_step(1, 2.0) is None
    assert watch.after_step(2, float("nan")) == "loss is nan at step 2"
    assert watch.after_step(3, float("inf")) == "loss is inf at step 3"


def test_a_stalled_loss_counts_only_after_the_warm_up_and_the_first_epoch() -> None:
    def epoch(watch: DivergenceWatch, index: int, loss: float) -> str | None:
        for s in range(index * 10 + 1, index * 10 + 11):
            assert watch.after_step(s, loss) is None
        return watch.end_epoch(index * 10 + 10, index)

    watch = DivergenceWatch(warmup_steps=15, steps_per_epoch=10)
    assert epoch(watch, 0, 3.0) is None  # the first epoch is never judged
    assert epoch(watch, 1, 3.5) is None  # starts at step 10, inside the warm-up
    reason = epoch(watch, 2, 3.0)  # starts at step 20, after it: no lower than the first step's 3.0
    assert reason is not None and "epoch 3" in reason and "3" in reason and "15 warm-up steps" in reason
    learning = DivergenceWatch(warmup_steps=0, steps_per_epoch=10)
    assert epoch(learning, 0, 3.0) is None and epoch(learning, 1, 2.9) is None
    off = DivergenceWatch(warmup_steps=0, steps_per_epoch=10, on_stall=False)
    assert epoch(off, 0, 3.0) is None and epoch(off, 1, 4.0) is None


def test_the_watch_resumes_exactly_from_its_state() -> None:
    a = DivergenceWatch(warmup_steps=0, steps_per_epoch=10)
    for s in range(1, 16):
        a.after_step(s, 3.0 + 0.01 * s)
    b = DivergenceWatch(warmup_steps=0, steps_per_epoch=10)
    b.load_state_dict(a.state_dict())
    for s in range(16, 21):
        a.after_step(s, 4.0)
        b.after_step(s, 4.0)
    assert a.end_epoch(20, 1) == b.end_epoch(20, 1) is not None


def test_a_diverging_run_ends_with_its_step_and_reason_and_no_checkpoint_of_the_diverged_weights(
        engine_data: dict, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", engine_data, ["train.lr=1000000.0", "train.warmup_steps=500", "data.workers=0",
                                                      "checkpoint.every_steps=100"])
    assert run(cfg) == EXIT_DIVERGED
    log = MetricsLog.read(cfg.run_dir)
    diverged = log.diverged()
    assert diverged is not None and diverged.data["reason"] == f"loss is nan at step {diverged.data['step']}"
    assert log.outcome() == "diverged" and log.has_result()
    assert not checkpoint.list_checkpoints(cfg.run_dir)  # every_steps=100: nothing was saved before, nothing after
    assert "diverged at step" in run_status(cfg.run_dir)["last_stop"]
    assert (Path(cfg.run_dir) / "plots/training.png").is_file()
