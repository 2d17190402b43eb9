"""Exact resume: an interrupted run (clean stop, SIGUSR2, SIGKILL; one or two gloo ranks) ends bitwise equal
to an uninterrupted one."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher.submit import free_port
from lit import checkpoint, signals
from lit.checkpoint import CheckpointError
from lit.configlib import ConfigError
from lit.train.run import run
from tests.conftest import REPO, tiny_config

# 2 epochs x 8 steps; a checkpoint every 2 steps.
LONG = ["data.samples_per_epoch=160"]  # 2 x 20 steps: long enough to interrupt a subprocess mid-way


def final_state(run_dir: Path) -> dict:
    found = checkpoint.choose(run_dir)
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
    from lit.io import read_jsonl

    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["type"] == "train"]


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
    from lit.io import read_jsonl
    from tests.train.test_metrics import tensorboard_scalars

    run_dir = reference["short_dir"]
    losses = [(r["step"], r["loss"]) for r in read_jsonl(run_dir / "metrics.jsonl") if r["type"] == "train"]
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


def test_siglip_stop_and_resume_is_bitwise_identical(engine_data: dict, tmp_path: Path) -> None:
    """The sigmoid loss's logit bias is trained, checkpointed and resumed with the rest; a resume with the other loss is refused."""
    from lit.io import read_jsonl

    sig = ["train.loss=siglip"]
    assert run(tiny_config(tmp_path / "run", engine_data, ["train.stop_at_step=5", *sig])) == 0
    stopped = final_state(tmp_path / "run")
    assert stopped["step"] == 5 and float(stopped["model"]["logit_bias"]) != -10.0
    assert run(tiny_config(tmp_path / "run", engine_data, sig)) == 0
    assert run(tiny_config(tmp_path / "twin", engine_data, sig)) == 0
    assert_same_training(final_state(tmp_path / "run"), final_state(tmp_path / "twin"))
    assert stop_steps(tmp_path / "run") == list(range(1, 17))
    logged = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["type"] == "train"]
    assert logged[-1]["logit_bias"] == pytest.approx(float(final_state(tmp_path / "run")["model"]["logit_bias"]))
    with pytest.raises(CheckpointError, match=r"holds another model.*train\.loss"):
        run(tiny_config(tmp_path / "run", engine_data))  # the CLIP loss: a model without the bias


def test_changing_the_length_on_resume_is_refused(engine_data: dict, reference: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run(tiny_config(run_dir, engine_data, ["train.stop_at_step=3"])) == 0
    with pytest.raises(ConfigError, match=r"train.epochs: 2 → 3; total steps: 16 → 24.*allow_schedule_change"):
        run(tiny_config(run_dir, engine_data, ["train.epochs=3"]))
    assert run(tiny_config(run_dir, engine_data, ["train.epochs=3", "train.allow_schedule_change=true"])) == 0
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


# ---------------------------------------------------------------- one checkpoint for all ranks


def _agree(run_dir: Path, view: str, tmp_path: Path) -> list[dict]:
    import json

    import torch.multiprocessing as mp

    from tests.train._agree_rank import agree_rank

    out = tmp_path / f"out-{view}"
    out.mkdir()
    mp.spawn(agree_rank, args=(2, free_port(), str(run_dir), view, str(out)), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("view", ["same", "unreadable", "other-step"])
def test_all_ranks_resume_from_the_file_rank_0_chose(reference: dict, tmp_path: Path, view: str) -> None:
    results = _agree(reference["short_dir"], view, tmp_path)
    if view == "same":
        assert results == [{"ok": True, "file": "step-00000016.pt", "step": 16}] * 2
        return
    # every rank fails with the same explanation, none hangs and none continues alone
    assert [r["ok"] for r in results] == [False, False]
    assert results[0]["error"] == results[1]["error"]
    assert results[0]["type"] == "CheckpointError"
    seen = "rank 1: cannot read it" if view == "unreadable" else "rank 1: step 3"
    assert "rank 0 chose this checkpoint (step 16)" in results[0]["error"] and seen in results[0]["error"]


def test_a_checkpoint_rank_0_cannot_choose_fails_every_rank(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "step-00000004.pt").write_bytes(b"torn")
    results = _agree(tmp_path / "run", "same", tmp_path)
    assert [r["ok"] for r in results] == [False, False]
    assert all("none of the 1 checkpoint(s) can be read" in r["error"] for r in results)


# ---------------------------------------------------------------- schedule changes


def test_schedule_changes_are_refused_with_the_list(engine_data: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run(tiny_config(run_dir, engine_data, ["train.stop_at_step=3"])) == 0
    changed = ["train.warmup_steps=5", "train.lr=2e-3", "data.batch_size=4", "train.seed=1"]
    with pytest.raises(ConfigError) as err:
        run(tiny_config(run_dir, engine_data, changed))
    text = str(err.value)
    for line in ("train.lr: 0.001 → 0.002", "train.warmup_steps: 3 → 5", "train.seed: 0 → 1", "data.batch_size: 8 → 4",
                 "total steps: 16 → 32", "train.allow_schedule_change=true"):
        assert line in text, text
    assert final_state(run_dir)["step"] == 3  # nothing was trained or written


def test_a_schedule_change_made_on_purpose_is_recorded(engine_data: dict, tmp_path: Path) -> None:
    from lit.io import read_jsonl

    run_dir = tmp_path / "run"
    assert run(tiny_config(run_dir, engine_data, ["train.stop_at_step=3"])) == 0
    assert run(tiny_config(run_dir, engine_data, ["train.warmup_steps=5", "train.allow_schedule_change=true"])) == 0
    starts = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["type"] == "start"]
    assert [s["schedule_changes"] for s in starts] == [[], ["train.warmup_steps: 3 → 5"]]


def test_another_frozen_tower_or_model_is_refused(engine_data: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run(tiny_config(run_dir, engine_data, ["train.stop_at_step=2"])) == 0
    with pytest.raises(CheckpointError, match=r"trained on another frozen image tower.*new run_dir"):
        run(tiny_config(run_dir, engine_data, ["model.name=lit-effnet-lite0-minilm", "model.image_weights=pkg:efficientnet-lite0"]))


def test_the_sigmoid_models_bias_starts_at_the_share_of_positives_unless_set(engine_data: dict, tmp_path: Path) -> None:
    """Null: -log(pairs in a step's batch) (batch 8, one rank: -log 8); train.siglip_bias sets it (open_clip's -10)."""
    for name, extra, start in (("auto", [], -math.log(8)), ("set", ["train.siglip_bias=-10"], -10.0)):
        assert run(tiny_config(tmp_path / name, engine_data, ["train.loss=siglip", "train.stop_at_step=1", *extra])) == 0
        bias = float(final_state(tmp_path / name)["model"]["logit_bias"])
        assert bias == pytest.approx(start, abs=0.01) and bias != start  # one step of training moved it a little
    with pytest.raises(ConfigError, match=r"train\.siglip_bias.*train\.loss=siglip"):
        tiny_config(tmp_path / "clip", engine_data, ["train.siglip_bias=-3"])
