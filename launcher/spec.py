"""Job spec → submitit: executor parameters, the Python command (container), the sbatch script of `--dry-run`.

The job spec is the `slurm` and `container` sections of the one config tree (`lit.config`).
Everything submitit writes (sbatch script, pickles, per-task logs) goes to `RUN_DIR/slurm`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from launcher.submitit_api import SlurmExecutor, sbatch_text
from lit.config import Config

SUBMITIT_DIR = "slurm"
"""Sub-folder of the run directory that submitit owns."""
KILL_ON_BAD_EXIT = "--kill-on-bad-exit=1"
"""srun option: when one rank dies the others are stopped instead of hanging in a collective."""
PORT_RANGE = (20000, 60000)


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


def render_sbatch(cfg: Config, home: str | Path | None = None, after: str | None = None, array_size: int = 0) -> str:
    """The sbatch script submitit would submit for this job (needs no SLURM installation); `array_size`: a sweep's array."""
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


__all__ = [
    "KILL_ON_BAD_EXIT", "PORT_RANGE", "SUBMITIT_DIR", "container_binds", "local_parameters", "prepare", "python_command",
    "render_sbatch", "slurm_parameters", "submitit_folder", "task_command", "teardown_lines", "uses_gpus", "world_size",
]
