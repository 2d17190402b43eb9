"""The kinds of cluster a job runs on (`cluster: slurm | local | debug`) behind one small interface.

What differs between them lives here and nowhere else: the executor that submits a job (none for
debug), where a task's ranks meet, how a job's state is read and how it is cancelled, the checks
before submitting, the tasks' layout, and how a task behaves on its node. Everything else asks
`of(cfg)` (or `named(name)` for a recorded job or submitit's job environment).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from launcher.spec import PORT_RANGE, local_parameters, python_command, slurm_parameters, submitit_folder, uses_gpus, world_size
from launcher.submitit_api import LocalExecutor, SlurmExecutor
from lit.checklist import Check
from lit.config import Config
from lit.configlib import ConfigError
from lit.doctor import job_checks, run_checks

ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
    "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
})
"""States of a job that is still queued or running (`resume` and `submit` refuse then); a local job's is RUNNING."""


def is_active(state: str) -> bool:
    return state in ACTIVE_STATES


@dataclass(frozen=True)
class TaskLine:
    """One task of the job as `--dry-run` shows it."""

    rank: int
    node: int
    local_rank: int
    device: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def slurm_state(job_id: str) -> str:
    """SLURM's state of a job: squeue while it is known there, else sacct; UNKNOWN without SLURM."""
    live = _run(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if live and live.strip():
        return live.split()[0]
    done = _run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"])
    lines = [line.strip() for line in (done or "").splitlines() if line.strip()]
    return lines[-1].split()[0] if lines else "UNKNOWN"


def pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def local_controller_running(pid: int) -> bool:
    """True while submitit's local controller `pid` runs (not some later process that reused the pid)."""
    if not pid_running(pid):
        return False
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid


class Cluster:
    """A kind of cluster: what the rest of the launcher may ask of it."""

    name: ClassVar[str] = ""
    scheduled: ClassVar[bool] = False
    """A batch scheduler (SLURM) queues and runs the jobs: afterok chains, job arrays, sbatch scripts, its own requeues."""
    follows: ClassVar[bool] = False
    """The launcher submits to this machine and follows the job to its end (`--preempt-at-step` works)."""
    in_process: ClassVar[bool] = False
    """Trains in the launcher's own process: no submitit, no job."""

    def executor(self, cfg: Config, home: str | Path | None = None, after: str | None = None, array: bool = False) -> Any:
        """submitit's executor for a job of `cfg` whose bookkeeping lives in `home` (default: the run folder)."""
        raise ConfigError("", "cluster", f"{self.name!r} runs in this process and has no executor")

    def address(self) -> tuple[str | None, int | None]:
        """MASTER_ADDR and MASTER_PORT a submitted task is given (None: it derives them on its node)."""
        return None, None

    def state(self, job_id: str) -> str:
        """The job's state (see ACTIVE_STATES); ENDED once nothing runs it any more."""
        return "ENDED"

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Stop the jobs; their tasks get SIGTERM first (a step boundary reached in time still saves)."""
        raise ConfigError("", "cluster", f"a {self.name} run has no job to cancel")

    def check(self, cfg: Config) -> None:
        """What this machine must have to submit `cfg` (raises ConfigError with the fix)."""
        if cfg.container.image and shutil.which(cfg.container.runtime) is None:
            raise ConfigError("", "container.runtime", f"{cfg.container.runtime} is not on PATH here; install it or "
                              "set container.image= to run without the container")

    def doctor_checks(self, cfg: Config) -> list[Check]:
        """`lit doctor`'s checks before submitting (a job in a container checks itself on its nodes)."""
        return run_checks(cfg)

    def doctor_in_task(self, cfg: Config) -> bool:
        """Whether the first task of each node runs `lit doctor` before training."""
        return bool(cfg.container.image)

    def layout(self, cfg: Config) -> list[TaskLine]:
        """Every task of the job: rank, node, local rank, device."""
        per_node, nodes = world_size(cfg), 1
        return _layout(cfg, nodes, per_node)

    def rendezvous_notes(self, cfg: Config) -> dict[str, str]:
        """How the ranks meet, in words (for `--dry-run`)."""
        return {"MASTER_ADDR": "none: one process", "ranks": "rank 0 of 1", **_common_notes(cfg)}


def _layout(cfg: Config, nodes: int, per_node: int) -> list[TaskLine]:
    gpu = uses_gpus(cfg)
    return [TaskLine(n * per_node + k, n, k, f"cuda:{k}" if gpu else "cpu") for n in range(nodes) for k in range(per_node)]


def _common_notes(cfg: Config) -> dict[str, str]:
    return {"backend": "nccl" if uses_gpus(cfg) else "gloo", "world size": str(world_size(cfg))}


class Slurm(Cluster):
    """sbatch through submitit's SlurmExecutor; squeue/sacct and scancel."""

    name = "slurm"
    scheduled = True

    def executor(self, cfg: Config, home: str | Path | None = None, after: str | None = None, array: bool = False) -> Any:
        """`max_num_timeout` is `slurm.max_requeues`: submitit's countdown of time-outs agrees with the launcher's cap."""
        executor = SlurmExecutor(submitit_folder(cfg, home), max_num_timeout=cfg.slurm.max_requeues, python=python_command(cfg))
        executor.update_parameters(**slurm_parameters(cfg, home, after, array))
        return executor

    def state(self, job_id: str) -> str:
        return slurm_state(job_id)

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        out = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"scancel {' '.join(job_ids)} failed: {out.stderr.strip()}")

    def check(self, cfg: Config) -> None:
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise ConfigError("", "cluster", f"cluster is 'slurm' but {', '.join(missing)} is not on PATH: submit from a "
                              "login node of the cluster, or set cluster=local to run on this machine")

    def doctor_checks(self, cfg: Config) -> list[Check]:
        """The job's own checks (paths, settings); the GPU checks run on the nodes (`doctor_in_task`)."""
        return job_checks(cfg)

    def doctor_in_task(self, cfg: Config) -> bool:
        return True

    def layout(self, cfg: Config) -> list[TaskLine]:
        return _layout(cfg, cfg.slurm.nodes, cfg.slurm.ntasks_per_node)

    def rendezvous_notes(self, cfg: Config) -> dict[str, str]:
        return {
            "MASTER_ADDR": "first host of the allocation (SLURM_JOB_NODELIST)",
            "MASTER_PORT": f"derived from the job id, in {PORT_RANGE[0]}-{PORT_RANGE[1]} (the same after a requeue)",
            "ranks": "SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID", **_common_notes(cfg),
        }


class Local(Cluster):
    """submitit's LocalExecutor: every rank a process on this machine; its controller's pid is the job id."""

    name = "local"
    follows = True

    def executor(self, cfg: Config, home: str | Path | None = None, after: str | None = None, array: bool = False) -> Any:
        executor = LocalExecutor(submitit_folder(cfg, home), max_num_timeout=cfg.slurm.max_requeues, python=python_command(cfg))
        executor.update_parameters(**local_parameters(cfg))
        return executor

    def address(self) -> tuple[str | None, int | None]:
        return "127.0.0.1", free_port()

    def state(self, job_id: str) -> str:
        return "RUNNING" if job_id.isdigit() and local_controller_running(int(job_id)) else "ENDED"

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            os.kill(int(job_id), signal.SIGTERM)  # submitit's local controller forwards it to the tasks

    def rendezvous_notes(self, cfg: Config) -> dict[str, str]:
        return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "a free port chosen at submission",
                "ranks": "RANK/WORLD_SIZE/LOCAL_RANK from submitit's SUBMITIT_LOCAL_* variables", **_common_notes(cfg)}


class Debug(Cluster):
    """One rank in the launcher's process (`launcher.submit.run_debug`)."""

    name = "debug"
    in_process = True


KINDS: dict[str, Cluster] = {kind.name: kind for kind in (Slurm(), Local(), Debug())}


def named(name: str) -> Cluster:
    """The kind called `name` (a config's `cluster`, a jobs.jsonl record's, submitit's `JobEnvironment.cluster`)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError("", "cluster", f"{name!r} is not a cluster kind; choose from {', '.join(KINDS)}") from None


def of(cfg: Config) -> Cluster:
    return named(cfg.cluster)


__all__ = ["ACTIVE_STATES", "Cluster", "Debug", "KINDS", "Local", "Slurm", "TaskLine", "free_port", "is_active",
           "local_controller_running", "named", "of", "pid_running", "slurm_state"]
