"""The whole job as one submission on the real 2-node cluster: shards → embed → train → eval as afterok-chained jobs.

Four pipelines run at once (each stage a 1-CPU job on the `high` partition); the first uses the embedded
default model (EfficientNet-Lite0 + MiniLM, so that embedding takes long enough to be interrupted), the
others the tiny random model:
- USR2 to the embed job once it has written a shard: it finishes the shards in flight, requeues, goes on;
  the final weights equal a by-hand run of the same stages in this process;
- `scontrol requeue` of the shards job while it runs: the chain waits for it and completes, with shards
  byte-identical to a by-hand build;
- a dataset made invalid: the shards stage fails for good, and SLURM cancels the stages after it;
- `cancel` once the shards are written, then `resume`: it submits again from the first unfinished stage;
- a sweep (at the same time, as a fifth submission): three members of the tiny model as one job array
  after one shards and one embed job; member `preempted` gets USR2 while it trains and only its array
  task requeues, ending with weights equal to an uninterrupted run of it; member `diverged` (lr 1e6)
  ends as `diverged` with its step and reason while its job ends COMPLETED; the report, written by
  the last member to end, says all of that.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from cluster import LocalSlurmCluster, wait_for  # on sys.path via conftest.py

from launcher import clusters, pipeline, status
from launcher.rundir import RunDir
from launcher.sweepdir import SUBMISSIONS
from lit import checkpoint
from lit.config import Config, load_config, replace, save_config
from lit.io import read_jsonl
from lit.runlog import Stop, Train
from tests.conftest import REPO

WAIT = 600.0
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lit.data.toy import write_toy_inat

    return write_toy_inat(tmp_path_factory.mktemp("pipeline-toy") / "inat", seed=0, train_per_class=24, val_per_class=4,
                          image_size=64)


def job(base: Path, root: Path, *extra: str) -> Config:
    return load_config(None, [
        f"name=pipe-{base.name}", f"run_dir={base / 'run'}", "cluster=slurm", f"data.root={root}",
        f"data.train_shards={base / 'shards/train'}", f"data.val_shards={base / 'shards/val'}",
        f"data.train_embeddings={base / 'emb/train'}", f"data.val_embeddings={base / 'emb/val'}",
        "data.image_source=cached", "data.batch_size=8", "data.workers=0", "data.samples_per_epoch=64",
        "shards.samples_per_shard=32", "shards.workers=1", "pipeline.embed_batch_size=16", "pipeline.stages=[shards,embed,train,eval]",
        "train.epochs=2", "train.warmup_steps=2", "train.device=cpu", "train.log_every=1", "checkpoint.every_steps=4",
        "eval.every_epochs=0", "eval.final=false",
        "slurm.nodes=1", "slurm.tasks_per_node=1", "slurm.cpus_per_task=1", "slurm.mem_gb=2", "slurm.time_min=10",
        "slurm.signal_delay_s=30", "slurm.partition=high", *extra,
    ])


def cli(cluster: LocalSlurmCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "launcher", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)


def submit(cluster: LocalSlurmCluster, cfg: Config) -> dict[str, str]:
    path = Path(cfg.run_dir).parent / "job.yaml"
    save_config(cfg, path)
    done = cli(cluster, "submit", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    chain = RunDir(cfg.run_dir).last_chain()
    return {e["stage"]: e["job_id"] for e in chain}


def job_state(cluster: LocalSlurmCluster, job_id: str) -> str:
    return cluster.wait_job(job_id, ENDED, timeout=WAIT)


def logs(run_dir: Path) -> str:
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(run_dir.rglob("*_log.*")))


TINY = ("model.name=lit-tiny", "model.image_weights=")


def drive_cancel_resume(cluster: LocalSlurmCluster, base: Path, root: Path) -> dict[str, Any]:
    cfg = job(base, root, *TINY)
    first = submit(cluster, cfg)
    job_state(cluster, first["shards"])
    cancelled = cli(cluster, "cancel", cfg.run_dir)
    states = {stage: job_state(cluster, jid) for stage, jid in first.items()}
    wait_for(lambda: not any(clusters.is_active(clusters.slurm_state(j)) for j in first.values()), WAIT, "the cancelled jobs to end")
    after_cancel = status.status(cfg.run_dir)["stages"]
    resumed = cli(cluster, "resume", cfg.run_dir)
    second = {e["stage"]: e for e in RunDir(cfg.run_dir).last_chain()}
    final = {s: job_state(cluster, e["job_id"]) for s, e in second.items() if e["job_id"]}
    return {"cfg": cfg, "first": first, "states": states, "cancelled": cancelled, "after_cancel": after_cancel,
            "resumed": resumed, "second": second, "final": final}


def drive_usr2_embed(cluster: LocalSlurmCluster, base: Path, root: Path) -> dict[str, Any]:
    cfg = job(base, root)
    jobs = submit(cluster, cfg)
    wait_for(lambda: list((base / "emb/train").glob(".emb-*.json")), WAIT, "the first embedded shard")
    cluster.run("scancel", "--signal=USR2", jobs["embed"])
    states = {stage: job_state(cluster, jid) for stage, jid in jobs.items()}
    return {"cfg": cfg, "jobs": jobs, "states": states, "status": cli(cluster, "status", cfg.run_dir, "--json"),
            "table": cli(cluster, "status", cfg.run_dir), "logs": cli(cluster, "logs", cfg.run_dir, "--stage", "embed")}


def drive_requeue_shards(cluster: LocalSlurmCluster, base: Path, root: Path) -> dict[str, Any]:
    cfg = job(base, root, *TINY)
    jobs = submit(cluster, cfg)
    wait_for(lambda: clusters.slurm_state(jobs["shards"]) == "RUNNING", WAIT, "the shards job to run")
    cluster.run("scontrol", "requeue", jobs["shards"])
    states = {stage: job_state(cluster, jid) for stage, jid in jobs.items()}
    return {"cfg": cfg, "jobs": jobs, "states": states, "info": cluster.job_info(jobs["shards"])}


def drive_failing(cluster: LocalSlurmCluster, base: Path, root: Path) -> dict[str, Any]:
    broken = base / "inat"
    shutil.copytree(root, broken, ignore=shutil.ignore_patterns("train", "val"))  # the JSON files are enough to fail
    (broken / "train.json").write_text('{"images": [')
    cfg = job(base, broken, *TINY)
    jobs = submit(cluster, cfg)
    states = {stage: job_state(cluster, jid) for stage, jid in jobs.items()}
    return {"cfg": cfg, "jobs": jobs, "states": states, "table": cli(cluster, "status", cfg.run_dir),
            "rows": status.status(cfg.run_dir)["stages"]}


def sweep_yaml(base: Path, root: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, [
        "name=sweep", f"run_dir={base / 'unused'}", "cluster=slurm", f"data.root={root}",
        f"data.train_shards={base / 'shards/train'}", f"data.val_shards={base / 'shards/val'}",
        f"data.train_embeddings={base / 'emb/train'}", f"data.val_embeddings={base / 'emb/val'}",
        "data.image_source=cached", "data.batch_size=8", "data.workers=0", "data.samples_per_epoch=64",
        "model.name=lit-tiny", "model.image_weights=",
        "shards.samples_per_shard=32", "shards.workers=1", "pipeline.embed_batch_size=16", "pipeline.stages=[shards,embed,train]",
        "train.epochs=3", "train.warmup_steps=2", "train.device=cpu", "train.log_every=1", "checkpoint.every_steps=4",
        "eval.every_epochs=1", "eval.final=true", "train.diverge_on_stall=false",  # the tiny random model learns slowly
        "slurm.nodes=1", "slurm.tasks_per_node=1", "slurm.cpus_per_task=1", "slurm.mem_gb=2", "slurm.time_min=10",
        "slurm.signal_delay_s=30", "slurm.partition=high", "slurm.array_parallelism=3",
    ])
    path = base / "job.yaml"
    save_config(cfg, path)
    sweep_file = base / "sweep.yaml"
    sweep_file.write_text(
        "job: job.yaml\nname: sw\nsweep_dir: " + str(base / "sw") + "\npaper: warmup\nmembers:\n"
        "  - {name: plain, overrides: [train.warmup_steps=1000]}\n"
        "  - {name: preempted, overrides: [train.epochs=6, train.warmup_steps=4]}\n"
        "  - {name: diverged, overrides: [train.lr=1000000.0, train.warmup_steps=500]}\n")
    return sweep_file


def drive_sweep(slurm_cluster: LocalSlurmCluster, base: Path, toy: Path) -> dict[str, Any]:
    sweep_file = sweep_yaml(base, toy)
    dry = cli(slurm_cluster, "sweep", str(sweep_file), "--dry-run")
    done = cli(slurm_cluster, "sweep", str(sweep_file))
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_dir = base / "sw"
    record = read_jsonl(sweep_dir / SUBMISSIONS)[-1]
    preempted = sweep_dir / "preempted"
    wait_for(lambda: any(r.step >= 3 for r in RunDir(preempted).metrics().of(Train)), WAIT,
             "the preempted member to train 3 steps")
    slurm_cluster.run("scancel", "--signal=USR2", record["members"]["preempted"])
    states = {name: slurm_cluster.wait_job(jid, ENDED, timeout=WAIT) for name, jid in record["members"].items()}
    prep = {e["stage"]: slurm_cluster.wait_job(e["job_id"], ENDED, timeout=WAIT) for e in record["prep"]}
    wait_for(lambda: (sweep_dir / "report.json").is_file(), 60, "the report of the last member")
    return {"base": base, "dir": sweep_dir, "dry": dry, "record": record, "states": states, "prep": prep,
            "status": cli(slurm_cluster, "status", str(sweep_dir), "--json"), "table": cli(slurm_cluster, "status", str(sweep_dir)),
            "report": cli(slurm_cluster, "report", str(sweep_dir))}


@pytest.fixture(scope="module")
def pipelines(slurm_cluster: LocalSlurmCluster, toy_root: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[dict[str, Any]]]]:
    base = tmp_path_factory.mktemp("pipelines")
    drivers = {"usr2-embed": drive_usr2_embed, "requeue-shards": drive_requeue_shards, "failing": drive_failing,
               "cancel-resume": drive_cancel_resume, "sweep": drive_sweep}
    with ThreadPoolExecutor(max_workers=len(drivers)) as pool:
        yield {name: pool.submit(drive, slurm_cluster, base / name, toy_root) for name, drive in drivers.items()}


def by_hand(cfg: Config, base: Path) -> Config:
    """The same stages in this process, one after the other, into `base`."""
    from lit.stages import run_embed, run_shards
    from lit.train.run import run

    cfg = replace(cfg, run_dir=str(base / "run"), cluster="debug",
                  data=replace(cfg.data, train_shards=str(base / "shards/train"), val_shards=str(base / "shards/val"),
                               train_embeddings=str(base / "emb/train"), val_embeddings=str(base / "emb/val")))
    assert run_shards(cfg, lambda: False) == "done" and run_embed(cfg, lambda: False) == "done"
    assert run(cfg) == 0
    return cfg


def final_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    found = checkpoint.choose(run_dir)
    assert found is not None
    return found[1]["model"]


def test_one_command_runs_every_stage_and_an_interrupted_embed_goes_on(pipelines: dict, tmp_path: Path) -> None:
    out = pipelines["usr2-embed"].result(timeout=3 * WAIT)
    cfg, run_dir = out["cfg"], Path(out["cfg"].run_dir)
    assert out["states"] == dict.fromkeys(("shards", "embed", "train", "eval"), "COMPLETED"), logs(run_dir)
    embed_home = RunDir(cfg.run_dir).stage("embed")
    assert len(embed_home.attempts().starts) == 2  # stopped on USR2, requeued, went on
    stops = embed_home.metrics().of(Stop)
    assert len(stops) == 1 and "SIGUSR2" in stops[0].reason
    result = json.loads((run_dir / "eval/final/results.json").read_text())
    assert result["num_classes"] == 32 and result["num_samples"] == 128 and 0 <= result["top1"] <= 100
    said = json.loads(out["status"].stdout)
    assert [(s["stage"], s["state"]) for s in said["stages"]] == [
        ("shards", "COMPLETED"), ("embed", "COMPLETED"), ("train", "COMPLETED"), ("eval", "COMPLETED")]
    assert "top-1" in said["stages"][3]["progress"] and "pipeline stages" in out["table"].stdout
    assert [s["outcome"] for s in said["stages"]] == ["finished"] * 4 and said["failed_attempts"] == []
    assert out["logs"].returncode == 0 and "stop requested: finishing" in out["logs"].stdout
    hand = by_hand(cfg, tmp_path)
    ours, theirs = final_weights(run_dir), final_weights(hand.run_dir)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    again = pipeline.plan(cfg, ["shards", "embed", "train", "eval"])  # a second submission would skip every stage
    assert [s.complete for _, s in again] == [True, True, True, True]


def test_a_requeued_shards_stage_holds_the_chain_and_its_shards_are_identical(pipelines: dict, tmp_path: Path) -> None:
    out = pipelines["requeue-shards"].result(timeout=3 * WAIT)
    cfg, run_dir = out["cfg"], Path(out["cfg"].run_dir)
    assert out["states"] == dict.fromkeys(("shards", "embed", "train", "eval"), "COMPLETED"), logs(run_dir)
    assert int(out["info"]["Restarts"]) >= 1
    from lit.stages import run_shards

    hand = replace(cfg, data=replace(cfg.data, train_shards=str(tmp_path / "train"), val_shards=str(tmp_path / "val")))
    assert run_shards(hand, lambda: False) == "done"
    for split in ("train", "val"):
        mine = {p.name: p.read_bytes() for p in sorted(Path(getattr(cfg.data, f"{split}_shards")).glob("*.tar"))}
        theirs = {p.name: p.read_bytes() for p in sorted((tmp_path / split).glob("*.tar"))}
        assert mine == theirs and mine


def test_a_failed_stage_cancels_the_stages_after_it(pipelines: dict) -> None:
    out = pipelines["failing"].result(timeout=3 * WAIT)
    assert out["states"]["shards"] == "FAILED"
    assert [out["states"][s] for s in ("embed", "train", "eval")] == ["CANCELLED"] * 3
    rows = {r["stage"]: r for r in out["rows"]}
    assert rows["shards"]["why"].startswith("not retried: deterministic") and "train.json" in rows["shards"]["why"]
    for stage in ("embed", "train", "eval"):
        assert "the shards stage before it failed" in rows[stage]["why"]
    assert "DatasetError" in out["table"].stdout or "deterministic" in out["table"].stdout


def test_cancel_stops_the_chain_and_resume_goes_on_from_the_first_unfinished_stage(pipelines: dict) -> None:
    out = pipelines["cancel-resume"].result(timeout=3 * WAIT)
    run_dir = Path(out["cfg"].run_dir)
    assert out["cancelled"].returncode == 0 and "cancelled jobs" in out["cancelled"].stdout, out["cancelled"].stderr
    assert out["states"]["shards"] == "COMPLETED"
    assert "CANCELLED" in {out["states"][s] for s in ("embed", "train", "eval")}, logs(run_dir)
    assert out["resumed"].returncode == 0, out["resumed"].stdout + out["resumed"].stderr
    assert out["second"]["shards"]["skipped"] and "complete" in out["second"]["shards"]["detail"]
    assert out["final"] == {"embed": "COMPLETED", "train": "COMPLETED", "eval": "COMPLETED"} or (
        out["second"]["embed"]["skipped"] and out["final"] == {"train": "COMPLETED", "eval": "COMPLETED"}), logs(run_dir)
    assert [r["type"] for r in RunDir(run_dir).chains()] == ["submit", "cancel", "resume"]
    assert (run_dir / "eval/final/results.json").is_file()


def test_sweep_dry_run_shows_the_array_and_each_member(pipelines: dict) -> None:
    swept = pipelines["sweep"].result(timeout=3 * WAIT)
    dry = swept["dry"]
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH --array=0-2%3" in dry.stdout and "launcher.retry" in dry.stdout
    assert "[1] preempted: train.epochs=6 train.warmup_steps=4" in dry.stdout
    assert "## shared stage shards (shards0)" in dry.stdout and "## shared stage embed (embed0)" in dry.stdout


def test_members_share_one_shards_and_one_embed_job_and_run_as_one_array(pipelines: dict) -> None:
    swept = pipelines["sweep"].result(timeout=3 * WAIT)
    record, states = swept["record"], swept["states"]
    assert swept["prep"] == {"shards": "COMPLETED", "embed": "COMPLETED"}, logs(swept["dir"])
    assert states == {"plain": "COMPLETED", "preempted": "COMPLETED", "diverged": "COMPLETED"}, logs(swept["dir"])
    arrays = {jid.split("_")[0] for jid in record["members"].values()}
    assert len(arrays) == 1 and sorted(jid.split("_")[1] for jid in record["members"].values()) == ["0", "1", "2"]
    assert record["after"] == ":".join(e["job_id"] for e in record["prep"])


def test_sweep_the_preempted_member_alone_requeues_and_ends_as_an_uninterrupted_run(pipelines: dict, tmp_path: Path) -> None:
    swept = pipelines["sweep"].result(timeout=3 * WAIT)
    from lit.train.run import run

    member = swept["dir"] / "preempted"
    tries = RunDir(member).attempts().starts
    assert len(tries) == 2 and tries[1].requeue == 1 and "SIGUSR2" in tries[1].last_stop, logs(swept["dir"])
    assert len(RunDir(swept["dir"] / "plain").attempts().starts) == 1 == len(RunDir(swept["dir"] / "diverged").attempts().starts)
    cfg = RunDir(member).config()
    hand = replace(cfg, run_dir=str(tmp_path / "run"), cluster="debug")
    assert run(hand) == 0
    ours, theirs = checkpoint.choose(member), checkpoint.choose(hand.run_dir)
    assert ours is not None and theirs is not None and ours[1]["step"] == theirs[1]["step"] == 48
    assert all(torch.equal(ours[1]["model"][k], theirs[1]["model"][k]) for k in theirs[1]["model"])


def test_sweep_the_diverged_member_is_a_result_and_the_report_says_so(pipelines: dict) -> None:
    swept = pipelines["sweep"].result(timeout=3 * WAIT)
    status = json.loads(swept["status"].stdout)
    rows = {r["member"]: r for r in status["members"]}
    assert {n: r["outcome"] for n, r in rows.items()} == {"plain": "finished", "preempted": "finished", "diverged": "diverged"}
    assert rows["diverged"]["last_stop"].startswith("diverged at step") and "loss is nan" in rows["diverged"]["last_stop"]
    report = json.loads((swept["dir"] / "report.json").read_text())
    members = {m["member"]: m for m in report["members"]}
    assert members["diverged"]["outcome"] == "diverged" and members["diverged"]["diverged_step"] >= 1
    assert members["diverged"]["final_top1"] is None
    for name in ("plain", "preempted"):
        results = json.loads((swept["dir"] / name / "results.json").read_text())
        assert members[name]["final_top1"] == results["top1"] and members[name]["final_top5"] == results["top5"]
        assert members[name]["best_epoch"] is not None and members[name]["wall_s"] > 0
    assert report["paper"]["plain"] == {"warmup_steps": 1000, "diverged": False, "top1": 63.28, "top5": 87.48}
    assert report["paper"]["diverged"]["diverged"] is True and "preempted" not in report["paper"]
    for png in ("loss", "lr", "top1"):
        assert (swept["dir"] / "plots" / f"{png}.png").stat().st_size > 1000
    assert swept["report"].returncode == 0 and "diverged at step" in swept["report"].stdout
    assert swept["table"].returncode == 0 and "sweep sw" in swept["table"].stdout
