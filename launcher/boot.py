"""The first code every task runs: `python -u -m launcher.boot -u -m submitit.core._submit FOLDER`.

submitit installs its signal handlers only after it has loaded the pickled task, which imports
torch, open_clip and the rest: seconds in which USR2's default action would kill the task (a
preemption or time-limit warning that arrives then would end the job instead of requeuing it).
This module records such an early USR2 from the interpreter's first instructions, then runs
submitit's entry point unchanged; `launcher.task.Task` requeues at once when one was recorded.
It is part of the Python command given to submitit (`launcher.spec.python_command`).
"""

from __future__ import annotations

import runpy
import signal
import sys
from types import FrameType

EARLY: list[int] = []
"""Signals received before submitit's handlers were installed."""


def _record(signum: int, frame: FrameType | None) -> None:
    EARLY.append(signum)


def install() -> None:
    """Record USR2 instead of dying on it (submitit replaces this handler with its own)."""
    signal.signal(signal.SIGUSR2, _record)


def main(argv: list[str]) -> None:
    """Run `[-u] -m MODULE ARGS...` (submitit's command after the Python executable) as `python` would."""
    install()
    args = list(argv)
    if args[:1] == ["-u"]:  # the interpreter already runs unbuffered (-u before -m launcher.boot)
        args = args[1:]
    if len(args) < 2 or args[0] != "-m":
        raise SystemExit(f"usage: python -u -m launcher.boot -u -m MODULE [ARGS...], got {argv}")
    sys.argv = [args[1], *args[2:]]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    from launcher import boot  # the imported module holds EARLY for launcher.task, not this __main__ copy

    boot.main(sys.argv[1:])
