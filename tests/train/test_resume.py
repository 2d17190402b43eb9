"""Exact resume: an interrupted run (clean stop, SIGUSR2, SIGKILL; one or two gloo ranks) ends bitwise equal
to an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher.submit import free_port
from lit.configlib import ConfigError
from lit.train import checkpoint, signals
from lit.train.run import run
from tests.conftest import REPO, tiny_config

# 2 epochs x 8 steps; a checkpoint every 2 steps.
LONG = ["data.samples_per_epoch=160"]  # 2 x 20 steps: long enough to interrupt a subprocess mid-way


def final_state(run_dir: Path) -> dict:
    found = checkpoint.load_latest(run_dir)
    assert found is not None
    return found[1]


def assert_same_training(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["samples_seen"] == b["samples_seen"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def stop_steps(run_dir: Path) -> list[int]:
    from lit.train.metrics import read_metrics

    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "train"]


@pytest.fixture(scope="module")
def reference(engine_data: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Uninterrupted runs, the yardstick for every interrupted one."""
    base = tmp_path_factory.mktemp("reference")
    short = tiny_config(base / "short", engine_data)
    assert run(short) == 0
    long = tiny_config(base / "long", engine_data, LONG)
    assert run(long) == 0
    return {"short": final_state(short.run_dir), "long": final_state(long.run_dir), "short_dir": Path(short.run_dir)}


def test_a_run_mirrors_its_losses_to_tensorboard(reference: dict) -> None:
    from lit.train.metrics import read_metrics
    from tests.train.test_metrics import tensorboard_scalars

    run_dir = reference["short_dir"]
    losses = [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "train"]
    mirrored = tensorboard_scalars(run_dir)["train/loss"]
    assert [s for s, _ in mirrored] == [s for s, _ in losses] == list(range(1, 17))
    assert all(abs(a - b) <= 1e-6 * abs(b) for (_, a), (_, b) in zip(mirrored, losses))


@pytest.mark.parametrize("accum", [1, 2])
def test_stop_mid_epoch_and_resume_is_bitwise_identical(engine_data: dict, reference: dict, tmp_path: Path, accum: int) -> None:
    extra = [f"train.accum_steps={accum}", f"data.batch_size={8 // accum}"]
    stopped = tiny_config(tmp_path / "run", engine_data, ["train.stop_at_step=5", *extra])
    assert run(stopped) == 0
    assert final_state(stopped.run_dir)["step"] == 5
    assert run(tiny_config(tmp_path / "run", engine_data, extra)) == 0
    if accum == 1:
        assert_same_training(final_state(tmp_path / "run"), reference["short"])
    else:  # 5 x 2 micro-batches skipped on resume: compare with its own uninterrupted twin
        assert run(tiny_config(tmp_path / "twin", engine_data, extra)) == 0
        assert_same_training(final_state(tmp_path / "run"), final_state(tmp_path / "twin"))
    steps = stop_steps(tmp_path / "run")
    assert steps == sorted(set(steps)) == list(range(1, 17))  # no step trained twice, none skipped


def test_changing_the_length_on_resume_is_refused(engine_data: dict, reference: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run(tiny_config(run_dir, engine_data, ["train.stop_at_step=3"])) == 0
    with pytest.raises(ConfigError, match="allow_length_change"):
        run(tiny_config(run_dir, engine_data, ["train.epochs=3"]))
    assert run(tiny_config(run_dir, engine_data, ["train.epochs=3", "train.allow_length_change=true"])) == 0
    assert final_state(run_dir)["step"] == 24


def _train_subprocess(run_dir: Path, data: dict, extra: list[str]) -> subprocess.Popen:
    cfg = tiny_config(run_dir, data, [*LONG, *extra])
    from lit.config import save_config

    save_config(cfg, run_dir.parent / f"{run_dir.name}.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "lit", "train", str(run_dir.parent / f"{run_dir.name}.yaml")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {path.name}: {proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGUSR2"])
def test_killed_or_signalled_run_resumes_exactly(engine_data: dict, reference: dict, tmp_path: Path, how: str) -> None:
    run_dir = tmp_path / "run"
    proc = _train_subprocess(run_dir, engine_data, [])
    _wait_for(checkpoint.path_for(run_dir, 4), proc)
    proc.send_signal(getattr(signal, how))
    out, _ = proc.communicate(timeout=120)
    interrupted_at = final_state(run_dir)["step"]
    if how == "SIGUSR2":
        assert proc.returncode == signals.EXIT_PREEMPTED, out
        assert "stopped at step" in out
    else:
        assert proc.returncode == -signal.SIGKILL
    assert 4 <= interrupted_at < 40
    assert run(tiny_config(run_dir, engine_data, LONG)) == 0
    assert_same_training(final_state(run_dir), reference["long"])


def run_ranks(run_dir: Path, data: dict, extra: list[str], world: int = 2) -> list[int]:
    """Start `world` ranks of `lit train` as separate processes with torchrun's variables, as a launcher would."""
    from lit.config import save_config

    config = run_dir.parent / f"{run_dir.name}.yaml"
    save_config(tiny_config(run_dir, data, extra), config)
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "PYTHONPATH": str(REPO), "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-m", "lit", "train", str(config)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    if any(codes):
        print("\n".join(outputs))  # shown with the callers' failing assert
    return codes


def test_two_gloo_ranks_resume_exactly(engine_data: dict, tmp_path: Path) -> None:
    two = ["data.batch_size=4", "data.workers=1", "train.gather_with_grad=true"]
    assert run_ranks(tmp_path / "whole", engine_data, two) == [0, 0]
    assert run_ranks(tmp_path / "parts", engine_data, [*two, "train.stop_at_step=7"]) == [0, 0]
    assert final_state(tmp_path / "parts")["step"] == 7
    assert len(final_state(tmp_path / "parts")["rng"]) == 2  # every rank's RNG state is saved
    assert run_ranks(tmp_path / "parts", engine_data, two) == [0, 0]
    assert_same_training(final_state(tmp_path / "parts"), final_state(tmp_path / "whole"))
