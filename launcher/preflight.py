"""The checks before anything is submitted: the container image, the cluster's tools, `lit doctor`."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from launcher import clusters
from lit.checklist import Check, ok, report
from lit.config import Config
from lit.configlib import ConfigError
from lit.errors import UserError


class PreflightFailed(UserError):
    """`lit doctor` found a failing check before submission; `checks` holds the report (printed as the doctor's table)."""

    label = "lit doctor failed"
    exit_code = 1

    def __init__(self, checks: list[Check]) -> None:
        failed = [c for c in checks if c.status == "fail"]
        super().__init__("; ".join(f"{c.name}: {c.detail}" for c in failed))
        self.checks = checks

    def render(self, console: Console) -> None:
        console.print(report(self.checks))
        console.print("[red]lit doctor failed: nothing was submitted[/red]")


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


def preflight(cfg: Config) -> list[Check]:
    """Checks run before submitting; raises ConfigError or PreflightFailed on a mistake.

    Local and debug runs train on this machine: every `lit doctor` check applies now. SLURM jobs
    without a container see the same file systems: the job's paths are checked now. Inside a
    container paths may differ; there (and for the GPU checks on the nodes) the tasks run
    `lit doctor` themselves before training (`Cluster.doctor_in_task`).
    """
    kind = clusters.of(cfg)
    check_container(cfg)
    kind.check(cfg)
    preempt = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    if preempt != "USR2":
        raise ConfigError("environment", "SUBMITIT_PREEMPT_SIGNAL",
                          f"is {preempt!r}: the trainer saves on USR2 and TERM only; unset it")
    checks = [] if cfg.container.image else kind.doctor_checks(cfg)
    if not ok(checks):
        raise PreflightFailed(checks)
    return checks


__all__ = ["PreflightFailed", "check_container", "preflight"]
