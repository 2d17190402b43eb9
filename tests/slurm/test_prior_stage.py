"""The prior stage on the real 2-node cluster: `submit` with pipeline.stages [prior] runs `lit prior` as a 1-CPU job.

The toy dataset's training images carry latitude and longitude; the prior is tiny (2 epochs, width 32,
one residual block). Its job writes PRIOR_DIR/prior.pt, `status` shows the stage, and a second
submission of the same job skips it (complete, made from the same annotations and settings).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cluster import LocalSlurmCluster  # on sys.path via conftest.py

from launcher import status
from launcher.rundir import RunDir
from lit.config import load_config, save_config
from lit.prior.store import PRIOR_FILE, Prior
from tests.conftest import REPO

WAIT = 300.0
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}

pytestmark = pytest.mark.timeout(600)


def cli(cluster: LocalSlurmCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "launcher", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)


def test_the_prior_stage_trains_the_prior_as_a_job_and_a_resubmission_skips_it(slurm_cluster: LocalSlurmCluster,
                                                                                tmp_path: Path) -> None:
    from lit.data.toy import write_toy_inat

    root = write_toy_inat(tmp_path / "inat", seed=0, train_per_class=8, val_per_class=2, test_per_class=0, image_size=32)
    cfg = load_config(None, [
        "name=prior-stage", f"run_dir={tmp_path / 'run'}", "cluster=slurm", f"data.root={root}",
        "pipeline.stages=[prior]", "prior.epochs=2", "prior.width=32", "prior.depth=1", "prior.batch_size=64",
        "slurm.nodes=1", "slurm.tasks_per_node=1", "slurm.cpus_per_task=1", "slurm.mem_gb=2", "slurm.time_min=10",
        "slurm.signal_delay_s=30", "slurm.partition=high",
    ])
    job = tmp_path / "job.yaml"
    save_config(cfg, job)
    dry = cli(slurm_cluster, "submit", str(job), "--dry-run")
    assert "# pipeline of prior-stage: prior\n" in dry.stdout and "--gpus-per-node" not in dry.stdout, dry.stdout + dry.stderr

    first = cli(slurm_cluster, "submit", str(job))
    assert first.returncode == 0, first.stdout + first.stderr
    (entry,) = RunDir(cfg.run_dir).last_chain()
    assert entry["stage"] == "prior" and not entry["skipped"] and entry["after"] == []
    state = slurm_cluster.wait_job(entry["job_id"], ENDED, timeout=WAIT)
    home = RunDir(cfg.run_dir).stage("prior")
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(home.path.rglob("*_log.*")))
    assert state == "COMPLETED", logs
    prior = Prior.load(tmp_path / "run" / "prior" / PRIOR_FILE)
    assert len(prior.category_ids) == 32 and prior.info["observations"] > 0
    (row,) = status.status(cfg.run_dir)["stages"]
    assert (row["stage"], row["state"], row["outcome"]) == ("prior", "COMPLETED", "finished")
    assert row["progress"].startswith("trained on ")

    made = (tmp_path / "run" / "prior" / PRIOR_FILE).stat().st_mtime_ns
    again = cli(slurm_cluster, "submit", str(job))
    assert again.returncode == 0, again.stdout + again.stderr
    (entry,) = RunDir(cfg.run_dir).last_chain()
    assert entry["skipped"] and entry["job_id"] is None and entry["detail"].startswith("trained on "), entry
    assert "prior: skipped (trained on " in again.stdout
    assert (tmp_path / "run" / "prior" / PRIOR_FILE).stat().st_mtime_ns == made

