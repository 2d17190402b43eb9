"""The distributed resolver and the learning-rate schedule (pure functions)."""

from __future__ import annotations

import pytest
import torch

from lit.config import ModelConfig, TrainConfig
from lit.dist import DistEnvError, resolve
from lit.model import build_model
from lit.train.optim import lr_at, param_groups

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}


def test_single_process_when_nothing_is_set() -> None:
    info = resolve({})
    assert (info.rank, info.world_size, info.source) == (0, 1, "single")


def test_torchrun_variables() -> None:
    info = resolve(TORCHRUN)
    assert (info.rank, info.world_size, info.local_rank, info.source) == (1, 4, 1, "torchrun")
    assert (info.master_addr, info.master_port) == ("10.0.0.1", 29400)


def test_half_set_torchrun_lists_what_is_missing() -> None:
    with pytest.raises(DistEnvError) as err:
        resolve({"RANK": "0", "WORLD_SIZE": "2"})
    assert "LOCAL_RANK" in str(err.value) and "MASTER_ADDR" in str(err.value) and "MASTER_PORT" in str(err.value)


def test_slurm_wins_over_torchrun() -> None:
    env = {**TORCHRUN, "SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5", "MASTER_ADDR": "node1", "MASTER_PORT": "12345"}
    info = resolve(env)
    assert (info.rank, info.world_size, info.local_rank, info.source, info.master_addr) == (5, 16, 5, "slurm", "node1")


def test_half_set_slurm_lists_what_is_missing() -> None:
    with pytest.raises(DistEnvError) as err:
        resolve({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert "SLURM_LOCALID" in str(err.value) and "MASTER_ADDR" in str(err.value)
    # One SLURM task needs no rendezvous.
    assert resolve({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}).world_size == 1


def test_warmup_then_cosine_to_the_floor() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, schedule="cosine")
    lrs = [lr_at(s, 110, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:10]))  # linear warm-up rises
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))  # then never rises
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3) and lr_at(500, 110, cfg) == pytest.approx(0.1)


def test_const_and_const_cooldown() -> None:
    const = TrainConfig(lr=0.5, warmup_steps=2, schedule="const")
    assert [lr_at(s, 10, const) for s in (2, 5, 9)] == [0.5, 0.5, 0.5]
    cool = TrainConfig(lr=1.0, min_lr=0.0, warmup_steps=0, schedule="const-cooldown", cooldown_steps=4)
    assert [round(lr_at(s, 10, cool), 3) for s in range(10)] == [1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0.0]


def test_no_weight_decay_on_biases_norms_and_logit_scale() -> None:
    model = build_model(ModelConfig(name="lit-tiny", image_weights="")).model
    decay, keep = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    keep_names = {names[id(p)] for p in keep["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "logit_scale" in keep_names
    assert any(n.endswith(".bias") for n in keep_names) and any("ln" in n for n in keep_names)
    assert all(p.ndim >= 2 for p in decay["params"]) and decay_names
    assert not any(n.startswith("visual.") for n in keep_names | decay_names)  # the frozen tower is not optimized
    assert keep["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert torch.is_tensor(decay["params"][0])


def test_the_sigmoid_models_logit_bias_is_trained_without_weight_decay() -> None:
    model = build_model(ModelConfig(name="lit-tiny", image_weights=""), loss="siglip").model
    decay, keep = param_groups(model, 0.1)
    assert any(p is model.logit_bias for p in keep["params"]) and not any(p is model.logit_bias for p in decay["params"])
