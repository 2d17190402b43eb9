"""Stop requests: SIGUSR2 (SLURM's warning before the time limit, or preemption) and SIGTERM set a flag.

The training loop reads the flag at each step boundary, agrees with the other ranks, saves a
checkpoint and exits with EXIT_PREEMPTED so the launcher knows to requeue.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from lit.log import logger

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"; the run saved a checkpoint and wants a requeue
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

_requested = threading.Event()
_received: list[str] = []


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signal.Signals(signum).name)
    _requested.set()


def install(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> dict[int, Callable | int | None]:
    """Route stop signals to the flag; returns the previous handlers. Main thread only."""
    previous: dict[int, Callable | int | None] = {}
    for sig in signals:
        previous[sig] = signal.signal(sig, _handler)
    return previous


def restore(previous: dict[int, Callable | int | None]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def request(reason: str = "requested") -> None:
    """Ask the loop to stop at the next step boundary (for launchers and tests)."""
    _received.append(reason)
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def reason() -> str:
    return ",".join(_received) or "none"


def clear() -> None:
    _requested.clear()
    _received.clear()
    logger.debug("stop flag cleared")
