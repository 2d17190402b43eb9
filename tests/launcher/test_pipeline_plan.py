"""The pipeline's plan without a cluster: which stages run, with what resources, and the sbatch scripts of --dry-run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launcher import clusters, pipeline, status
from launcher.rundir import RunDir
from lit import stages
from lit.config import STAGES, CaptionConfig, ShardConfig, load_config, replace
from lit.configlib import ConfigError
from lit.data.shards import build_shards
from lit.errors import UsageError
from lit.io import write_json

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


WITH_PRIOR = [*PAPERISH[:-3], "pipeline.stages=[prior,shards,embed,train,eval]", *PAPERISH[-2:]]
TINY_PRIOR = ["prior.epochs=2", "prior.width=32", "prior.depth=1", "prior.batch_size=64"]


def test_the_prior_runs_beside_shards_and_embed_and_only_eval_waits_for_it() -> None:
    assert set(stages.NEEDS) == set(STAGES)
    for stage, needs in stages.NEEDS.items():  # the order of pipeline.stages is an order every stage's inputs come before it in
        assert all(STAGES.index(n) < STAGES.index(stage) for n in needs), stage
    assert [s for s in STAGES if "prior" in stages.upstream(s)] == ["eval"]
    everything = ["prior", "shards", "embed", "train"]
    assert {s: pipeline.waits_for(s, everything[:STAGES.index(s)]) for s in STAGES} == {
        "prior": [], "shards": [], "embed": ["shards"], "train": ["embed"], "eval": ["prior", "train"]}
    assert pipeline.waits_for("train", ["prior"]) == [] and pipeline.waits_for("eval", ["prior", "shards"]) == ["prior", "shards"]
    with pytest.raises(ConfigError, match="in the order prior, shards, embed, train, eval"):
        load_config(None, ["pipeline.stages=[shards,prior,train]"])


def test_the_prior_stage_gets_one_cpu_process(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}", "prior.device=auto", *WITH_PRIOR])
    prior = pipeline.stage_config(cfg, "prior")
    assert (prior.slurm.nodes, prior.slurm.gpus_per_node, prior.slurm.ntasks_per_node, prior.slurm.constraint) == (1, 0, 1, "")
    assert prior.prior.device == "cpu" and prior.train.device == "cpu" and prior.name == f"{cfg.name}-prior"
    on_gpu = load_config(None, [f"run_dir={tmp_path}", "prior.device=auto", "pipeline.prior.gpus_per_node=1", *WITH_PRIOR])
    assert pipeline.stage_config(on_gpu, "prior").prior.device == "auto"
    with pytest.raises(ConfigError, match="pipeline.prior.nodes: the prior trains in one process"):
        load_config(None, ["pipeline.prior.nodes=2"])
    with pytest.raises(ConfigError, match="pipeline.prior.gpus_per_node: 0"):
        load_config(None, ["pipeline.prior.gpus_per_node=8"])


def finished_run(run_dir: Path) -> None:
    """A run folder whose training finished at step 20 and whose final evaluation is of that step."""
    lines = [{"type": "start", "step": 0, "time": 1.0}, {"type": "done", "step": 20, "time": 2.0}]
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-00000020.pt").write_bytes(b"x")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    write_json(run_dir / stages.EVAL_DIR / "results.json", {"checkpoint": {"step": 20}, "top1": 40.0, "top5": 80.0})


def test_a_new_prior_runs_eval_again_but_not_the_training(engine_data: dict, tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"data.root={engine_data['root']}", *TINY_PRIOR, *WITH_PRIOR])
    finished_run(tmp_path / "run")
    planned = dict(pipeline.plan(cfg, ["prior", "train", "eval"]))
    assert not planned["prior"].complete and planned["prior"].detail.endswith("prior.pt: not trained")
    assert planned["train"].complete and planned["train"].detail == "trained to step 20"  # training never reads the prior
    assert not planned["eval"].complete and planned["eval"].detail == "runs after prior, which runs (top-1 40.00%, top-5 80.00%)"
    assert stages.run_prior(cfg, lambda: False) == "done"
    planned = dict(pipeline.plan(cfg, ["prior", "train", "eval"]))
    assert all(s.complete for s in planned.values()) and planned["prior"].detail.startswith("trained on ")
    reseeded = dict(pipeline.plan(replace(cfg, prior=replace(cfg.prior, seed=1)), ["prior", "train", "eval"]))
    assert "other annotations or prior settings" in reseeded["prior"].detail and not reseeded["eval"].complete
    assert reseeded["train"].complete
    stopped = replace(cfg, prior=replace(cfg.prior, seed=2))
    assert stages.run_prior(stopped, lambda: True) == "stopped" and not stages.prior_state(stopped).complete
    assert status.progress(cfg, "prior", {}).startswith("trained on ")


def test_dry_run_shows_the_prior_beside_the_chain_and_eval_after_it(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}", *WITH_PRIOR])
    text = pipeline.dry_run_text(cfg)
    assert text.startswith(f"# pipeline of {cfg.name}: prior, shards → embed → train → eval\n")
    parts = {p.split(" ", 1)[0]: p for p in text.split("## stage ")[1:]}
    assert parts["prior"].startswith("prior (") and "after" not in parts["prior"].splitlines()[0]
    assert "--dependency" not in parts["prior"] and "--gpus-per-node" not in parts["prior"]
    assert f"launcher.retry {tmp_path}/stages/prior" in parts["prior"]
    assert "--dependency" not in parts["shards"]
    assert "#SBATCH --dependency='afterok:<job id of embed>'" in parts["train"]
    assert ", after prior and train succeed\n" in parts["eval"]
    assert "#SBATCH --dependency='afterok:<job id of prior>:<job id of train>'" in parts["eval"]
    assert text.count("#!/bin/bash") == 5 and text.count("--kill-on-invalid-dep=yes") == 3


class Recorded:
    """What submitit's SlurmExecutor is asked: each job's afterok dependency (no sbatch is run)."""

    def __init__(self, jobs: list[tuple[str, str | None]], name: str, after: str | None) -> None:
        self.jobs, self.name, self.after = jobs, name, after

    def submit(self, task: Any) -> SimpleNamespace:
        self.jobs.append((self.name, self.after))
        return SimpleNamespace(job_id=str(len(self.jobs)))


def test_each_job_waits_for_the_jobs_it_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path}", *WITH_PRIOR])
    jobs: list[tuple[str, str | None]] = []
    monkeypatch.setattr(clusters.Slurm, "executor", lambda self, sub, home, after=None, array=False:
                        Recorded(jobs, sub.name.rsplit("-", 1)[-1] if sub is not cfg else "train", after))
    todo = [(name, stages.StageState(False, "not yet")) for name in STAGES]
    chain = pipeline.submit_chain(cfg, todo)
    assert jobs == [("prior", None), ("shards", None), ("embed", "2"), ("train", "3"), ("eval", "1:4")]
    assert [(e["stage"], e["job_id"], e["after"]) for e in chain] == [
        ("prior", "1", []), ("shards", "2", []), ("embed", "3", ["shards"]), ("train", "4", ["embed"]), ("eval", "5", ["prior", "train"])]
    assert RunDir(tmp_path).stage("eval").current_job() is not None
    jobs.clear()  # shards, embed and training complete: the prior and eval run, eval after the prior alone
    pipeline.submit_chain(cfg, [(n, stages.StageState(n in ("shards", "embed", "train"), "")) for n in STAGES])
    assert jobs == [("prior", None), ("eval", "1")]


def test_the_preflight_checks_only_the_paths_the_submission_reads(engine_data: dict, tmp_path: Path) -> None:
    from launcher.preflight import PreflightFailed

    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", f"data.root={engine_data['root']}", "cluster=local", "train.device=cpu",
                             "data.image_source=raw", f"data.val_shards={engine_data['val']}", f"data.train_shards={tmp_path / 'none'}"])
    pipeline.checks(cfg, ["prior"])  # the prior reads the annotations alone: no shards, no embeddings
    pipeline.checks(cfg, ["shards", "train"])
    with pytest.raises(PreflightFailed, match="data.train_shards"):
        pipeline.checks(cfg, ["prior", "train"])
