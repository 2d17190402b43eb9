"""The pipeline's plan without a cluster: which stages run, with what resources, and the sbatch scripts of --dry-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import pipeline
from launcher.rundir import RunDir
from lit.config import CaptionConfig, ShardConfig, load_config
from lit.configlib import ConfigError
from lit.data.shards import build_shards
from lit.errors import UsageError

PAPERISH = ["cluster=slurm", "slurm.nodes=2", "slurm.gpus_per_node=8", "slurm.cpus_per_task=5", "slurm.mem_gb=160",
            "slurm.constraint=v100", "slurm.exclusive=true", "pipeline.stages=[shards,embed,train,eval]",
            "pipeline.shards.cpus_per_task=32", "pipeline.shards.time_min=240"]


def test_each_stage_gets_its_resources_and_inherits_the_rest(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}", *PAPERISH])
    shards, embed, ev = (pipeline.stage_config(cfg, s).slurm for s in ("shards", "embed", "eval"))
    assert (shards.nodes, shards.gpus_per_node, shards.ntasks_per_node, shards.cpus_per_task, shards.time_min) == (1, 0, 1, 32, 240)
    assert (shards.constraint, shards.exclusive, shards.mem_gb) == ("", False, 160)  # a CPU job asks for no GPU feature
    assert pipeline.stage_config(cfg, "shards").train.device == "cpu"
    assert (embed.nodes, embed.gpus_per_node, embed.ntasks_per_node, embed.constraint) == (2, 8, 8, "v100")  # the training allocation
    assert (ev.nodes, ev.gpus_per_node, ev.ntasks_per_node) == (1, 8, 8)
    assert pipeline.stage_config(cfg, "train") is cfg
    run = RunDir(cfg.run_dir)
    assert run.stage("train") == run and run.stage("embed").path == tmp_path / "stages" / "embed"


def test_complete_stages_are_skipped_until_one_runs(engine_data: dict, tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"data.root={engine_data['root']}",
                             f"data.train_shards={tmp_path / 'train'}", f"data.val_shards={tmp_path / 'val'}",
                             "shards.samples_per_shard=32", *PAPERISH])
    states = pipeline.plan(cfg, ["shards", "embed", "train", "eval"])
    assert [s.complete for _, s in states] == [False, False, False, False]
    for split in ("train", "val"):
        build_shards(engine_data["root"], split, tmp_path / split, ShardConfig(samples_per_shard=32, workers=1), CaptionConfig(),
                     progress=False)
    states = dict(pipeline.plan(cfg, ["shards", "embed", "train", "eval"]))
    assert states["shards"].complete and not states["embed"].complete
    other = cfg.__class__(**{**cfg.__dict__, "shards": ShardConfig(samples_per_shard=16)})
    assert not dict(pipeline.plan(other, ["shards"]))["shards"].complete  # made with another shard size


def test_stage_choice_errors_name_the_fix(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}", "cluster=slurm", "data.image_source=raw", "data.augment=true"])
    assert pipeline.chosen_stages(cfg, None) == ["train"]
    assert pipeline.chosen_stages(cfg, "eval,shards") == ["shards", "eval"]
    with pytest.raises(UsageError, match="stages: 'fit' is not a stage"):
        pipeline.chosen_stages(cfg, "fit")
    with pytest.raises(UsageError, match="image_source=cached"):
        pipeline.chosen_stages(cfg, "embed")
    with pytest.raises(ConfigError, match="pipeline.stages: the embed stage makes cached embeddings"):
        load_config(None, ["data.image_source=raw", "data.augment=true", "pipeline.stages=[embed,train]"])


def test_dry_run_shows_every_script_and_the_chain(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}", *PAPERISH])
    text = pipeline.dry_run_text(cfg)
    assert text.startswith(f"# pipeline of {cfg.name}: shards → embed → train → eval")
    assert text.count("#!/bin/bash") == 4 and text.count("--kill-on-invalid-dep=yes") == 3
    assert "#SBATCH --dependency='afterok:<job id of shards>'" in text
    assert f"launcher.retry {tmp_path}/stages/embed" in text and f"launcher.retry {tmp_path} " in text
    assert "#SBATCH --cpus-per-task=32" in text and "#SBATCH --gpus-per-node=8" in text
