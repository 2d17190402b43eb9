"""A sweep on the real 2-node cluster: three members of the tiny model as one job array after shared stages.

- the shards and the cached embeddings are made once, by one shards and one embed job, and the
  array waits for them (afterok);
- member `preempted` gets USR2 while it trains: only its array task requeues, and it finishes with
  weights equal to an uninterrupted run of the same member in this process;
- member `diverged` (a learning rate of 1e6) ends as `diverged` with its step and reason; its job
  ends COMPLETED and the others go on;
- the report, written by the last member to end, says all of that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cluster import LocalSlurmCluster, wait_for  # on sys.path via conftest.py

from launcher import runs, sweep
from lit import checkpoint
from lit.config import load_config, replace, save_config
from lit.io import read_jsonl
from tests.conftest import REPO

WAIT = 600.0
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def cli(cluster: LocalSlurmCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "launcher", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)


def job_yaml(base: Path, root: Path) -> Path:
    cfg = load_config(None, [
        "name=sweep", f"run_dir={base / 'unused'}", "cluster=slurm", f"data.root={root}",
        f"data.train_shards={base / 'shards/train'}", f"data.val_shards={base / 'shards/val'}",
        f"data.train_embeddings={base / 'emb/train'}", f"data.val_embeddings={base / 'emb/val'}",
        "data.image_source=cached", "data.batch_size=8", "data.workers=0", "data.samples_per_epoch=64",
        "model.name=lit-tiny", "model.image_weights=",
        "shards.samples_per_shard=32", "shards.workers=1", "pipeline.embed_batch_size=16", "pipeline.stages=[shards,embed,train]",
        "train.epochs=3", "train.warmup_steps=2", "train.device=cpu", "train.log_every=1", "checkpoint.every_steps=4",
        "eval.every_epochs=1", "eval.final=true",
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


@pytest.fixture(scope="module")
def swept(slurm_cluster: LocalSlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from lit.data.toy import write_toy_inat

    base = tmp_path_factory.mktemp("sweep")
    root = write_toy_inat(base / "inat", seed=0, train_per_class=12, val_per_class=4, image_size=64)
    sweep_file = job_yaml(base, root)
    dry = cli(slurm_cluster, "sweep", str(sweep_file), "--dry-run")
    done = cli(slurm_cluster, "sweep", str(sweep_file))
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_dir = base / "sw"
    record = read_jsonl(sweep_dir / sweep.SUBMISSIONS)[-1]
    preempted = sweep_dir / "preempted"
    wait_for(lambda: any(r["type"] == "train" and r["step"] >= 3 for r in runs.metrics(preempted)), WAIT,
             "the preempted member to train 3 steps")
    slurm_cluster.run("scancel", "--signal=USR2", record["members"]["preempted"])
    states = {name: slurm_cluster.wait_job(jid, ENDED, timeout=WAIT) for name, jid in record["members"].items()}
    prep = {e["stage"]: slurm_cluster.wait_job(e["job_id"], ENDED, timeout=WAIT) for e in record["prep"]}
    wait_for(lambda: (sweep_dir / "report.json").is_file(), 60, "the report of the last member")
    return {"base": base, "dir": sweep_dir, "dry": dry, "record": record, "states": states, "prep": prep,
            "status": cli(slurm_cluster, "status", str(sweep_dir), "--json"), "table": cli(slurm_cluster, "status", str(sweep_dir)),
            "report": cli(slurm_cluster, "report", str(sweep_dir))}


def logs(sweep_dir: Path) -> str:
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(sweep_dir.rglob("*_log.*")))


def test_dry_run_shows_the_array_and_each_member(swept: dict) -> None:
    dry = swept["dry"]
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH --array=0-2%3" in dry.stdout and "launcher.retry" in dry.stdout
    assert "[1] preempted: train.epochs=6 train.warmup_steps=4" in dry.stdout
    assert "## shared stage shards (shards0)" in dry.stdout and "## shared stage embed (embed0)" in dry.stdout


def test_members_share_one_shards_and_one_embed_job_and_run_as_one_array(swept: dict) -> None:
    record, states = swept["record"], swept["states"]
    assert swept["prep"] == {"shards": "COMPLETED", "embed": "COMPLETED"}, logs(swept["dir"])
    assert states == {"plain": "COMPLETED", "preempted": "COMPLETED", "diverged": "COMPLETED"}, logs(swept["dir"])
    arrays = {jid.split("_")[0] for jid in record["members"].values()}
    assert len(arrays) == 1 and sorted(jid.split("_")[1] for jid in record["members"].values()) == ["0", "1", "2"]
    assert record["after"] == ":".join(e["job_id"] for e in record["prep"])


def test_the_preempted_member_alone_requeues_and_ends_as_an_uninterrupted_run(swept: dict, tmp_path: Path) -> None:
    from lit.train.run import run

    member = swept["dir"] / "preempted"
    tries = runs.attempts(member)
    assert len(tries) == 2 and tries[1]["requeue"] == 1 and "SIGUSR2" in tries[1]["last_stop"], logs(swept["dir"])
    assert len(runs.attempts(swept["dir"] / "plain")) == 1 and len(runs.attempts(swept["dir"] / "diverged")) == 1
    cfg = runs.load_run_config(member)
    hand = replace(cfg, run_dir=str(tmp_path / "run"), cluster="debug")
    assert run(hand) == 0
    ours, theirs = checkpoint.choose(member), checkpoint.choose(hand.run_dir)
    assert ours is not None and theirs is not None and ours[1]["step"] == theirs[1]["step"] == 48
    assert all(torch.equal(ours[1]["model"][k], theirs[1]["model"][k]) for k in theirs[1]["model"])


def test_the_diverged_member_is_a_result_and_the_report_says_so(swept: dict) -> None:
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
