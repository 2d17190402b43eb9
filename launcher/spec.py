"""Job spec → submitit executor: parameters, the Python command (container), pre-submit checks, `--dry-run`.

The job spec is the `slurm` and `container` sections of the one config tree (`lit.config`).
Everything submitit writes (sbatch script, pickles, per-task logs) goes to `RUN_DIR/slurm`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lit.config import Config
from lit.configlib import ConfigError
from lit.doctor import Check, job_checks, ok, run_checks

SUBMITIT_DIR = "slurm"
"""Sub-folder of the run directory that submitit owns."""
KILL_ON_BAD_EXIT = "--kill-on-bad-exit=1"
"""srun option: when one rank dies the others are stopped instead of hanging in a collective."""
PORT_RANGE = (20000, 60000)


class PreflightFailed(RuntimeError):
    """`lit doctor` found a failing check before submission; `checks` holds the report."""

    def __init__(self, checks: list[Check]) -> None:
        failed = [c for c in checks if c.status == "fail"]
        super().__init__("; ".join(f"{c.name}: {c.detail}" for c in failed))
        self.checks = checks


def prepare(cfg: Config) -> Config:
    """The config a job runs: run_dir made absolute, so the launcher and every task agree on it."""
    return replace(cfg, run_dir=str(Path(cfg.run_dir).expanduser().resolve()))


def submitit_folder(cfg: Config, home: str | Path | None = None) -> Path:
    """submitit's folder of a job: under its home (the run directory, or a pipeline stage's folder in it)."""
    return Path(home or cfg.run_dir) / SUBMITIT_DIR


def world_size(cfg: Config) -> int:
    return cfg.slurm.nodes * cfg.slurm.ntasks_per_node


def uses_gpus(cfg: Config) -> bool:
    return cfg.slurm.gpus_per_node > 0 and cfg.train.device != "cpu"


def container_binds(cfg: Config) -> list[str]:
    """The job's binds, plus the run directory at its own path when no bind covers it.

    Tasks read the submitit folder and write the run directory at the path the launcher sees.
    """
    binds = list(cfg.container.binds)
    run_dir = Path(cfg.run_dir)
    for bind in binds:
        parts = bind.split(":")
        source, dest = parts[0], (parts[1] if len(parts) > 1 else parts[0])
        if source == dest and (run_dir == Path(source) or Path(source) in run_dir.parents):
            return binds
    return [*binds, str(run_dir)]


def python_command(cfg: Config, boot: bool = True) -> str:
    """The shell command that starts Python in each task: submitit's `python` option.

    `PYTHON -u -m launcher.boot`, which records a USR2 that comes before submitit's handlers and
    then runs submitit's entry point (`boot=False`: plain `PYTHON`). With a container image,
    PYTHON is `singularity exec --nv --bind A --bind B IMAGE python`.
    """
    boot_args = ["-u", "-m", "launcher.boot"] if boot else []
    image = cfg.container.image
    if not image:
        return " ".join(shlex.quote(p) for p in [sys.executable, *boot_args])
    parts = [cfg.container.runtime, "exec"]
    if cfg.container.nv:
        parts.append("--nv")
    for bind in container_binds(cfg):
        parts += ["--bind", bind]
    parts += [str(Path(image).expanduser()), "python", *boot_args]
    return " ".join(shlex.quote(p) for p in parts)


def teardown_lines(cfg: Config, home: str | Path | None = None, array: bool = False) -> list[str]:
    """The sbatch lines after srun: keep srun's exit code, let `launcher.retry` decide, end with the code it prints.

    srun's own code when launcher.retry prints none (it failed): the job never ends better than srun did by accident.
    In a sweep's array, `home` is the sweep folder and the job id `ARRAY_TASK` (launcher.retry finds the member).
    """
    where = shlex.quote(str(home or cfg.run_dir))
    job_id = '"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' if array else '"$SLURM_JOB_ID"'
    return [
        "srun_exit=$?",
        f"job_exit=$({python_command(cfg, boot=False)} -m launcher.retry {where} {job_id} \"$srun_exit\" | tail -n 1)",
        'case "$job_exit" in (""|*[!0-9]*) job_exit=$srun_exit;; esac',
        "exit $job_exit",
    ]


def slurm_parameters(cfg: Config, home: str | Path | None = None, after: str | None = None, array: bool = False) -> dict[str, Any]:
    """Keyword arguments of `SlurmExecutor.update_parameters` (submitit's sbatch names).

    `after`: the job id(s, `a:b`) this one waits for (`afterok`); SLURM cancels it when one fails.
    `array`: the job array of a sweep (`home` is the sweep folder; slurm.array_parallelism members at once).
    """
    s = cfg.slurm
    chain = {"dependency": f"afterok:{after}", "kill-on-invalid-dep": "yes"} if after else {}
    params: dict[str, Any] = {
        "job_name": cfg.name,
        "nodes": s.nodes,
        "ntasks_per_node": s.ntasks_per_node,
        "cpus_per_task": s.cpus_per_task,
        "mem": f"{s.mem_gb}GB",
        "time": s.time_min,
        "signal_delay_s": s.signal_delay_s,
        "srun_args": [KILL_ON_BAD_EXIT],
        # after srun, in the batch shell (alive whichever rank died): retry a transient failure (launcher.retry)
        "teardown": teardown_lines(cfg, home, array),
        # requeue-able even where the cluster's JobRequeue=0: preemption then requeues instead of cancelling
        "additional_parameters": {"requeue": True, **chain, **s.extra},
    }
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if array and s.array_parallelism:
        params["array_parallelism"] = s.array_parallelism
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[key] = getattr(s, key)
    if s.exclusive:
        params["exclusive"] = True
    return params


def local_parameters(cfg: Config) -> dict[str, Any]:
    """Keyword arguments of `LocalExecutor.update_parameters`: every rank on this machine."""
    return {
        "tasks_per_node": world_size(cfg),
        "gpus_per_node": cfg.slurm.nodes * cfg.slurm.gpus_per_node,
        "timeout_min": cfg.slurm.time_min,
        "signal_delay_s": cfg.slurm.signal_delay_s,
    }


def make_executor(cfg: Config, home: str | Path | None = None, after: str | None = None, array: bool = False) -> Any:
    """submitit's SlurmExecutor or LocalExecutor, configured from the job spec.

    `max_num_timeout` is `slurm.max_requeues`: submitit's own countdown of time-outs agrees with
    the launcher's cap on requeues (which also counts preemptions, see `launcher.task`).
    """
    from launcher.submitit_api import LocalExecutor, SlurmExecutor

    folder = submitit_folder(cfg, home)
    if cfg.cluster == "slurm":
        executor = SlurmExecutor(folder, max_num_timeout=cfg.slurm.max_requeues, python=python_command(cfg))
        executor.update_parameters(**slurm_parameters(cfg, home, after, array))
        return executor
    if cfg.cluster == "local":
        local = LocalExecutor(folder, max_num_timeout=cfg.slurm.max_requeues, python=python_command(cfg))
        local.update_parameters(**local_parameters(cfg))
        return local
    raise ConfigError("", "cluster", f"{cfg.cluster!r} runs in this process and has no executor")


def render_sbatch(cfg: Config, home: str | Path | None = None, after: str | None = None, array_size: int = 0) -> str:
    """The sbatch script submitit would submit for this job (needs no SLURM installation); `array_size`: a sweep's array."""
    from launcher.submitit_api import SlurmExecutor, sbatch_text

    class _Preview(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # no `srun` needed to render
            return 2

    executor = _Preview(submitit_folder(cfg, home), max_num_timeout=cfg.slurm.max_requeues, python=python_command(cfg))
    executor.update_parameters(**slurm_parameters(cfg, home, after, array=array_size > 0))
    if array_size:
        executor.parameters["map_count"] = array_size  # what submitit's batch() sets for an array
    return sbatch_text(executor)


def task_command(cfg: Config) -> str:
    """The command each task runs (the same for all; the rank comes from the environment)."""
    return f"{python_command(cfg)} -u -m submitit.core._submit {shlex.quote(str(submitit_folder(cfg)))}"


@dataclass(frozen=True)
class TaskLine:
    """One task of the job as `--dry-run` shows it."""

    rank: int
    node: int
    local_rank: int
    device: str


def task_layout(cfg: Config) -> list[TaskLine]:
    per_node = cfg.slurm.ntasks_per_node if cfg.cluster == "slurm" else world_size(cfg)
    nodes = cfg.slurm.nodes if cfg.cluster == "slurm" else 1
    gpu = uses_gpus(cfg)
    return [TaskLine(n * per_node + k, n, k, f"cuda:{k}" if gpu else "cpu") for n in range(nodes) for k in range(per_node)]


def rendezvous_notes(cfg: Config) -> dict[str, str]:
    """How the ranks meet, in words (for `--dry-run`)."""
    backend = "nccl" if uses_gpus(cfg) else "gloo"
    if cfg.cluster == "local":
        where = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "a free port chosen at submission"}
        ranks = "RANK/WORLD_SIZE/LOCAL_RANK from submitit's SUBMITIT_LOCAL_* variables"
    else:
        where = {
            "MASTER_ADDR": "first host of the allocation (SLURM_JOB_NODELIST)",
            "MASTER_PORT": f"derived from the job id, in {PORT_RANGE[0]}-{PORT_RANGE[1]} (the same after a requeue)",
        }
        ranks = "SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID"
    return {**where, "ranks": ranks, "backend": backend, "world size": str(world_size(cfg))}


# ---------------------------------------------------------------- pre-submit checks


def doctor_in_task(cfg: Config) -> bool:
    """Whether the first task of each node runs `lit doctor` before training (see `preflight`)."""
    return cfg.cluster == "slurm" or bool(cfg.container.image)


def check_container(cfg: Config) -> None:
    """A configured image must exist now: a job that cannot start its tasks fails before submission."""
    image = cfg.container.image
    if not image:
        return
    path = Path(image).expanduser()
    if not path.is_file():
        raise ConfigError(
            "", "container.image",
            f"{image} does not exist (resolved: {path.resolve()}): build it with "
            f"`{cfg.container.runtime} build {path.name} Singularity.def` (docs/container.md) or fix the path",
        )


def check_cluster(cfg: Config) -> None:
    if cfg.cluster == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise ConfigError("", "cluster", f"cluster is 'slurm' but {', '.join(missing)} is not on PATH: submit from a "
                              "login node of the cluster, or set cluster=local to run on this machine")
    if cfg.container.image and shutil.which(cfg.container.runtime) is None and cfg.cluster != "slurm":
        raise ConfigError("", "container.runtime", f"{cfg.container.runtime} is not on PATH here; install it or "
                          "set container.image= to run without the container")


def preflight(cfg: Config) -> list[Check]:
    """Checks run before submitting; raises ConfigError or PreflightFailed on a mistake.

    Local and debug runs train on this machine: every `lit doctor` check applies now. SLURM jobs
    without a container see the same file systems: the job's paths are checked now. Inside a
    container paths may differ; there (and for the GPU checks on the nodes) the tasks run
    `lit doctor` themselves before training (`doctor_in_task`).
    """
    check_container(cfg)
    check_cluster(cfg)
    preempt = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    if preempt != "USR2":
        raise ConfigError("environment", "SUBMITIT_PREEMPT_SIGNAL",
                          f"is {preempt!r}: the trainer saves on USR2 and TERM only; unset it")
    if cfg.container.image:
        checks: list[Check] = []
    elif cfg.cluster == "slurm":
        checks = job_checks(cfg)
    else:
        checks = run_checks(cfg)
    if not ok(checks):
        raise PreflightFailed(checks)
    return checks


__all__ = [
    "KILL_ON_BAD_EXIT", "PreflightFailed", "SUBMITIT_DIR", "TaskLine", "check_container", "container_binds", "doctor_in_task",
    "local_parameters", "make_executor", "preflight", "prepare", "python_command", "render_sbatch",
    "rendezvous_notes", "slurm_parameters", "submitit_folder", "task_command", "task_layout", "world_size",
]
