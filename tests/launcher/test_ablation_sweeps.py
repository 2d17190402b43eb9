"""The ablation's sweep files (warm-up, divergence grid, recipe) and `python -m launcher ablation`'s flags; nothing trains."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import pytest

from launcher import ablation
from launcher.sweep import check_shared, prep_groups
from launcher.sweep_spec import Member, load_spec, resolve
from lit.config import TrainConfig
from lit.errors import UsageError
from lit.io import write_json

HAS_LOSS = "loss" in {f.name for f in dataclasses.fields(TrainConfig)}


def members_of(grid: str) -> list[Member]:
    spec, path = load_spec(ablation.GRIDS[grid])
    if not HAS_LOSS:  # train.loss comes with the sigmoid loss: until then the recipe sweep resolves without its loss axis
        spec = dataclasses.replace(spec, grid={k: v for k, v in spec.grid.items() if k != "train.loss"})
    return resolve(spec, str(path))[1]


def steps(m: Member) -> int:
    return m.cfg.data.samples_per_epoch // m.cfg.data.batch_size * m.cfg.train.epochs


def test_the_warmup_ablation_runs_five_seeds_of_three_warmups_in_96_steps() -> None:
    members = members_of("warmup")
    assert len(members) == 15 and {m.cfg.train.seed for m in members} == set(range(5))
    assert sorted({m.cfg.train.warmup_steps for m in members}) == [1, 16, 64]
    assert {steps(m) for m in members} == {96} and {m.cfg.train.epochs for m in members} == {2}
    assert {m.cfg.train.lr for m in members} == {2e-3} and {m.cfg.eval.every_epochs for m in members} == {1}


def test_the_divergence_grid_crosses_lr_and_warmup_on_the_ablations_members_and_cache() -> None:
    members, warm = members_of("divergence"), members_of("warmup")
    assert len(members) == 4 * 3 * 3
    assert sorted({m.cfg.train.lr for m in members}) == [2e-3, 3e-3, 4e-3, 5e-3]
    assert sorted({m.cfg.train.warmup_steps for m in members}) == [1, 16, 64] and {m.cfg.train.seed for m in members} == {0, 1, 2}
    assert {steps(m) for m in members} == {96}
    assert {(m.cfg.data.train_embeddings, m.cfg.data.val_embeddings) for m in members} == {
        (m.cfg.data.train_embeddings, m.cfg.data.val_embeddings) for m in warm}  # the shared cache


def test_the_recipe_sweep_crosses_loss_and_captions_with_their_own_shards() -> None:
    members = members_of("recipe")
    assert len(members) == (20 if HAS_LOSS else 10) and {m.cfg.train.seed for m in members} == set(range(5))
    if HAS_LOSS:
        assert {m.cfg.train.loss for m in members} == {"clip", "siglip"}
    by_recipe = {m.cfg.captions.recipe: m.cfg.data for m in members}
    assert set(by_recipe) == {"paper", "mixed"} and by_recipe["paper"].train_embeddings == "data/embeddings-hard/train"
    paper, mixed = by_recipe["paper"], by_recipe["mixed"]
    assert len({paper.train_shards, paper.val_shards, mixed.train_shards, mixed.val_shards}) == 4
    assert mixed.train_embeddings != paper.train_embeddings and mixed.val_embeddings != paper.val_embeddings
    assert {steps(m) for m in members} == {96} and {m.cfg.train.warmup_steps for m in members} == {16}
    assert members[0].cfg.captions.recipe == "paper" and (not HAS_LOSS or members[0].cfg.train.loss == "clip")
    groups = prep_groups(members)  # the paper captions' shards and cache, and the mixed ones': made once each
    assert len(groups["shards"]) == 2 and len(groups["embed"]) == 2
    check_shared(members)


def test_threads_give_the_sweep_its_own_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    spec, _ = load_spec(ablation.GRIDS["warmup"])
    assert ablation.with_threads(spec, 0) == spec
    one = ablation.with_threads(spec, 1)
    assert (one.name, one.sweep_dir) == ("ablation-warmup-threads1", "runs/sweeps/ablation-warmup-threads1")
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    monkeypatch.setenv("MKL_NUM_THREADS", "")
    try:
        ablation.use_threads(1)
        assert os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1
        assert ablation.machine()["torch_threads"] == 1 and ablation.machine()["cores"] >= 1
    finally:
        torch.set_num_threads(threads)


def test_a_sweep_folder_of_an_older_sweep_file_is_not_continued(tmp_path: Path) -> None:
    spec, path = load_spec(ablation.GRIDS["warmup"])
    members = resolve(spec, str(path))[1]
    stored = [{"name": m.name, "overrides": list(m.overrides)} for m in members]
    write_json(tmp_path / "sweep.json", {"overrides": list(spec.overrides), "members": stored})
    ablation.check_same(tmp_path, spec, members, "--grid")  # the same sweep: continued
    write_json(tmp_path / "sweep.json", {"overrides": list(spec.overrides), "members": stored[:6]})
    with pytest.raises(UsageError, match="holds another sweep"):
        ablation.check_same(tmp_path, spec, members, "--grid")


def test_the_grid_flag_picks_the_sweep_file() -> None:
    parser = argparse.ArgumentParser()
    ablation.add_arguments(parser)
    args = parser.parse_args(["--grid", "divergence", "--threads", "2", "train.epochs=1"])
    assert (args.grid, args.threads, args.overrides, args.sweep_file) == ("divergence", 2, ["train.epochs=1"], None)
    assert all(p.is_file() for p in ablation.GRIDS.values())
