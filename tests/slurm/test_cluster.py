"""Tests of the real-SLURM harness itself: jobs, accounting, preemption, teardown."""

from __future__ import annotations

import os
import re
import socket
import stat
from pathlib import Path

import cluster as cluster_module  # on sys.path via conftest.py
import pytest
from cluster import ClusterError, ClusterUnavailable, LocalSlurmCluster, wait_for

HOSTNAME_SCRIPT = """#!/bin/bash
#SBATCH --job-name=hostname
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
srun --label hostname
srun --label printenv SLURMD_NODENAME
"""

# Preemption sends the job's --signal (preempt_send_user_signal), then SIGTERM and a
# requeue after GraceTime.  A job that simply dies on the signal ends FAILED, not
# requeued, so this one traps both signals and lets SLURM requeue it.
LOW_SCRIPT = """#!/bin/bash
#SBATCH --job-name=low
#SBATCH --partition=low
#SBATCH --nodes=2
#SBATCH --exclusive
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@10
echo "start restart=${SLURM_RESTART_COUNT:-0}"
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then echo resumed; exit 0; fi
trap 'echo got USR1' USR1
trap 'echo got TERM' TERM
for _ in $(seq 1500); do sleep 0.2; done
"""

HIGH_SCRIPT = """#!/bin/bash
#SBATCH --job-name=high
#SBATCH --partition=high
#SBATCH --nodes=2
#SBATCH --exclusive
srun --label hostname
"""


@pytest.fixture(scope="module")
def hostname_job(slurm_cluster: LocalSlurmCluster) -> str:
    """A completed 2-node ``srun hostname`` job."""
    job_id = slurm_cluster.sbatch(HOSTNAME_SCRIPT)
    state = slurm_cluster.wait_job(job_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=60)
    assert state == "COMPLETED", slurm_cluster.job_info(job_id)
    return job_id


def test_environment_and_config(slurm_cluster: LocalSlurmCluster) -> None:
    conf = slurm_cluster.conf_dir / "slurm.conf"
    assert slurm_cluster.env["SLURM_CONF"] == str(conf)
    assert os.environ["SLURM_CONF"] == str(conf)
    assert conf.is_file() and slurm_cluster.scratch in conf.parents
    dbd_conf = slurm_cluster.conf_dir / "slurmdbd.conf"
    assert stat.S_IMODE(dbd_conf.stat().st_mode) == 0o600
    assert socket.gethostbyname("node1") == socket.gethostbyname("node2") == "127.0.0.1"
    partitions = slurm_cluster.run("sinfo", "-h", "-o", "%P").stdout.split()
    assert partitions == ["debug*", "low", "high"]


def test_two_node_srun_hostname(slurm_cluster: LocalSlurmCluster, hostname_job: str) -> None:
    text = slurm_cluster.job_output(hostname_job).read_text()
    # Only the labelled task lines: srun may add notes such as "step creation
    # temporarily disabled, retrying (Requested nodes are busy)" under load.
    labelled = re.findall(r"^(\d+): (\S+)$", text, flags=re.MULTILINE)
    host = socket.gethostname()
    expected = [("0", host), ("1", host), ("0", "node1"), ("1", "node2")]
    assert sorted(labelled) == sorted(expected), text


def test_sacct_reports_completed(slurm_cluster: LocalSlurmCluster, hostname_job: str) -> None:
    wait_for(lambda: slurm_cluster.sacct_state(hostname_job) == "COMPLETED", 30,
             f"sacct to report job {hostname_job} COMPLETED")
    assert slurm_cluster.sacct_state("999999") is None


@pytest.mark.slow  # about 40 s: GraceTime 20 s, KillWait 5 s, then the requeue delay
def test_low_job_is_preempted_by_high_job(slurm_cluster: LocalSlurmCluster) -> None:
    low = slurm_cluster.sbatch(LOW_SCRIPT)
    slurm_cluster.wait_job(low, {"RUNNING"}, timeout=30)
    out = slurm_cluster.job_output(low)
    wait_for(lambda: out.exists() and "start restart=0" in out.read_text(), 15, "low to start")

    high = slurm_cluster.sbatch(HIGH_SCRIPT)
    assert {job["id"] for job in slurm_cluster.squeue()} >= {low, high}
    # high starts once low is gone: after GraceTime (20 s) plus KillWait (5 s).
    assert slurm_cluster.wait_job(high, {"COMPLETED", "FAILED"}, timeout=60) == "COMPLETED"
    assert slurm_cluster.wait_job(low, {"COMPLETED", "FAILED"}, timeout=60) == "COMPLETED"

    assert int(slurm_cluster.job_info(low)["Restarts"]) >= 1
    text = out.read_text()
    assert "start restart=0" in text and "resumed" in text
    assert "got USR1" in text  # preempt_send_user_signal: the job's --signal came first
    assert "got TERM" not in text or text.index("got USR1") < text.index("got TERM")

    def history() -> list[str]:
        cmd = ("sacct", "-j", low, "-X", "--duplicates", "-n", "-P", "-o", "State")
        return slurm_cluster.run(*cmd).stdout.split()

    wait_for(lambda: history() == ["PREEMPTED", "COMPLETED"], 30,
             f"sacct history PREEMPTED, COMPLETED of job {low}")


def test_failed_start_and_stop_are_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    before_conf = os.environ.get("SLURM_CONF")
    before_hosts = Path("/etc/hosts").read_text()
    monkeypatch.setattr(cluster_module, "REQUIRED_BINARIES",
                        (*cluster_module.REQUIRED_BINARIES, "no-such-slurm-binary"))
    extra = LocalSlurmCluster()
    with pytest.raises(ClusterUnavailable) as info:
        extra.start()
    assert "no-such-slurm-binary" in info.value.reason or os.geteuid() != 0
    extra.stop()
    extra.stop()
    assert os.environ.get("SLURM_CONF") == before_conf
    assert Path("/etc/hosts").read_text() == before_hosts
    assert extra.leftover_pids() == []


def test_second_cluster_waits_for_the_first(slurm_cluster: LocalSlurmCluster) -> None:
    before_hosts = Path("/etc/hosts").read_text()
    second = LocalSlurmCluster(lock_timeout=0.5)
    with pytest.raises(ClusterError, match="another local slurm cluster"):
        second.start()
    assert os.environ["SLURM_CONF"] == slurm_cluster.env["SLURM_CONF"]
    assert Path("/etc/hosts").read_text() == before_hosts
    assert slurm_cluster.run("sinfo", "-h", "-o", "%P=%a").stdout.split() == [
        "debug*=up", "low=up", "high=up"]


def test_stop_is_idempotent_on_unstarted_cluster() -> None:
    unstarted = LocalSlurmCluster()
    unstarted.stop()
    unstarted.stop()
    assert unstarted.daemon_pids == {}
