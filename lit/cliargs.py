"""Arguments the commands share, so that a name means one thing in `lit` and `python -m launcher` alike.

- A job file is always the first positional, `JOB.yaml`, followed by `section.key=value` overrides
  (`add_job`, read back with `job_and_overrides`).
- A trained model is always the positional `RUN` (a run folder: its newest checkpoint; or a
  checkpoint file; where an ONNX export also serves, `RUN_OR_EXPORT`).
- `--no-progress` turns off progress bars; `--top` is how many guesses; `--subset` restricts the
  candidate classes.
- Flags renamed for that are still accepted for one release with a warning (`add_renamed`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit.log import logger

JOB_HELP = "job YAML (default: the embedded demo job), then section.key=value overrides"
OVERRIDES_HELP = "config overrides section.key=value (in any order with the options)"
RUN_HELP = "a run folder (its newest checkpoint) or a checkpoint file"
PROGRESS_HELP = "no progress bar (batch jobs, logs)"


def add_job(parser: argparse.ArgumentParser, *, required: bool = False, help: str = JOB_HELP) -> None:
    """`JOB.yaml [section.key=value ...]` as the command's first positionals; `--config JOB.yaml` still read (renamed)."""
    parser.add_argument("job", nargs=None if required else "?", metavar="JOB.yaml", help=help)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help=OVERRIDES_HELP)
    if not required:
        add_renamed(parser, "--config", "the job file as the first positional (JOB.yaml)", dest="config_flag")


def job_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The job file and overrides of `add_job`: an override given where no job was (`lit doctor a.b=1`) stays an override."""
    job: str | None = getattr(args, "job", None)
    overrides = list(getattr(args, "overrides", []) or [])
    if job is not None and "=" in job and not Path(job).is_file():
        job, overrides = None, [job, *overrides]
    flag = getattr(args, "config_flag", None)
    if flag is not None:
        if job is not None:
            overrides = [job, *overrides] if "=" in job else overrides
        job = flag
    return job, overrides


def add_run(parser: argparse.ArgumentParser, *, nargs: str | None = None, metavar: str = "RUN", help: str = RUN_HELP) -> None:
    """The trained model as the positional `RUN` (or `RUN_OR_EXPORT`)."""
    parser.add_argument("run", nargs=nargs, metavar=metavar, help=help)


def add_progress(parser: argparse.ArgumentParser, *, renamed_quiet: bool = False) -> None:
    """`--no-progress`; `renamed_quiet`: the command's older `--quiet` meant the same and is still read."""
    parser.add_argument("--no-progress", action="store_true", help=PROGRESS_HELP)
    if renamed_quiet:
        add_renamed(parser, "--quiet", "--no-progress", dest="no_progress", nargs=0, const=True)


class _Renamed(argparse.Action):
    """A flag under its old name: stores like the new one and warns once per use."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", const: Any = None, nargs: Any = None,
                 **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        logger.warning("%s %s is renamed: use %s (the old name goes away in the next release)",
                       parser.prog, option_string, self.new)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_renamed(parser: argparse.ArgumentParser, old: str, new: str, *, dest: str, nargs: Any = None, const: Any = None,
                type: Any = None) -> None:
    """Accept `old` for one release, stored in `dest` (the new flag's), with a warning naming `new`; hidden from --help."""
    parser.add_argument(old, action=_Renamed, dest=dest, new=new, nargs=nargs, const=const, type=type, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


__all__ = ["JOB_HELP", "OVERRIDES_HELP", "PROGRESS_HELP", "RUN_HELP", "add_job", "add_progress", "add_renamed", "add_run",
           "job_and_overrides"]
