"""Everything the launcher takes from submitit, in one place: its public names and the few private ones.

The private members (the job environment's preemption signal, the sbatch text of an executor, the
tasks of a multi-task job, a local job's controller process) change between submitit releases, so
they are reached only through the functions here, and importing this module checks that the
installed submitit is a version these were read in and tested with.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import submitit
from submitit import LocalExecutor, SlurmExecutor
from submitit.core.job_environment import JobEnvironment, SignalHandler
from submitit.core.utils import FailedSubmissionError, UncompletedJobError, pickle_load
from submitit.helpers import Checkpointable, DelayedSubmission

TESTED_VERSIONS = ("1.5.4",)
"""submitit releases whose private members below were read and tested (pyproject pins the first)."""


class SubmititVersionError(RuntimeError):
    """The installed submitit is not one the launcher was tested with."""


def check_version(version: str | None = None) -> str:
    """The installed version; raises SubmititVersionError with the fix when it is not a tested one."""
    version = version or submitit.__version__
    if version not in TESTED_VERSIONS:
        raise SubmititVersionError(
            f"submitit {version} is installed, but the launcher was tested with submitit {', '.join(TESTED_VERSIONS)} "
            f"(it uses members that change between releases: launcher/submitit_api.py). Install a tested one: "
            f"`pip install submitit=={TESTED_VERSIONS[0]}` (the container pins it too)"
        )
    return version


check_version()


def preempt_signal(env: JobEnvironment) -> signal.Signals:
    """The signal submitit treats as 'checkpoint and requeue' (USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)."""
    return env._usr_sig()


def submitit_handler_installed(sig: signal.Signals) -> Any:
    """submitit's own handler for `sig` when it is the installed one, else None."""
    handler = signal.getsignal(sig)
    return handler if isinstance(getattr(handler, "__self__", None), SignalHandler) else None


def sbatch_text(executor: SlurmExecutor, uid: str = "dry-run") -> str:
    """The sbatch script `executor` would submit (needs no SLURM installation)."""
    return executor._make_submission_file_text(executor._submitit_command_str, uid)


def tasks_of(job: Any) -> list[Any]:
    """The per-task jobs of a multi-task job (the job itself for one task)."""
    return list(job._sub_jobs or [job])


def task_error(job: Any) -> str:
    """The first error a task of the job reported in its result pickle, else ''."""
    for sub in tasks_of(job):
        path: Path = sub.paths.result_pickle
        if path.exists():
            try:
                outcome, value = pickle_load(path)
            except Exception:  # being written, or torn: look again later
                continue
            if outcome == "error":
                return str(value)
    return ""


def local_process(job: Any) -> subprocess.Popen[Any] | None:
    """The controller process of a LocalExecutor job (None for other jobs)."""
    return getattr(job, "_process", None)


__all__ = [
    "Checkpointable", "DelayedSubmission", "FailedSubmissionError", "JobEnvironment", "LocalExecutor", "SignalHandler",
    "SlurmExecutor", "SubmititVersionError", "TESTED_VERSIONS", "UncompletedJobError", "check_version", "local_process",
    "preempt_signal", "sbatch_text", "submitit_handler_installed", "task_error", "tasks_of",
]
