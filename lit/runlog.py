"""The run log: metrics.jsonl and attempts.jsonl as typed records, written and read here only.

- metrics.jsonl (the training writes it through `lit.train.metrics_log`; a pipeline stage's task writes
  its own `start`, `stop` and `done`): `start`, `train`, `eval`, `epoch`, `stop`, `diverged`, `done`.
- attempts.jsonl (the launcher): `start` (untyped in older folders), `failure`, `retry`.

The files keep their format: one JSON object a line with its `type`; a record keeps the line as it was
written (`data`), so older folders read as they are. `MetricsLog.outcome()` is what "finished" means,
for every reader: the training, the launcher's status, resume and report, and the pipeline planner.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from lit.io import append_jsonl, read_jsonl

METRICS = "metrics.jsonl"
ATTEMPTS = "attempts.jsonl"
Outcome = Literal["finished", "diverged", ""]
"""How a run ended: its latest attempt wrote `done` (finished) or `diverged` (a result too); '' while it has no result."""
STOP_REASONS = {
    "SIGUSR2": "SIGUSR2: time limit or preemption warning, checkpoint saved",
    "SIGTERM": "SIGTERM: preemption or cancel, checkpoint saved",
}


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Record:
    """One line of a run log: typed accessors over `data`, the line as written."""

    TYPE: ClassVar[str] = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.data.get("type", self.TYPE))

    @property
    def time(self) -> float:
        return float(self.data.get("time") or 0.0)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def values(self) -> dict[str, Any]:
        """Every key of the line but its type."""
        return {k: v for k, v in self.data.items() if k != "type"}


# ---------------------------------------------------------------- metrics.jsonl


@dataclass(frozen=True)
class Metric(Record):
    """A line of metrics.jsonl (of a type this version does not know, when not a subclass)."""

    @property
    def step(self) -> int:
        return int(self.data.get("step") or 0)


class Start(Metric):
    TYPE = "start"

    @property
    def total_steps(self) -> int | None:
        return _int(self.data.get("total_steps"))

    @property
    def steps_per_epoch(self) -> int | None:
        return _int(self.data.get("steps_per_epoch"))

    @property
    def world_size(self) -> int:
        return int(self.data.get("world_size") or 1)

    @property
    def resumed_from(self) -> str:
        return str(self.data.get("resumed_from") or "")


class Train(Metric):
    TYPE = "train"

    @property
    def epoch(self) -> int:
        return int(self.data.get("epoch") or 0)

    @property
    def loss(self) -> float | None:
        return _float(self.data.get("loss"))

    @property
    def lr(self) -> float | None:
        return _float(self.data.get("lr"))


class Eval(Metric):
    TYPE = "eval"

    @property
    def top1(self) -> float | None:
        return _float(self.data.get("top1"))

    @property
    def top5(self) -> float | None:
        return _float(self.data.get("top5"))

    @property
    def final(self) -> bool:
        return bool(self.data.get("final"))


class Epoch(Metric):
    TYPE = "epoch"


class Stop(Metric):
    """The attempt stopped with a checkpoint (a signal, or train.stop_at_step); a resume goes on."""

    TYPE = "stop"

    @property
    def reason(self) -> str:
        return str(self.data.get("reason") or "")


class Diverged(Metric):
    """The run diverged (lit.train.divergence): a result, never resumed by itself."""

    TYPE = "diverged"

    @property
    def reason(self) -> str:
        return str(self.data.get("reason") or "")


class Done(Metric):
    TYPE = "done"


Ending = Stop | Diverged | Done
METRIC_TYPES: dict[str, type[Metric]] = {c.TYPE: c for c in (Start, Train, Eval, Epoch, Stop, Diverged, Done)}
M = TypeVar("M", bound=Metric)


def metrics_line(kind: str, step: int, **values: Any) -> dict[str, Any]:
    """The JSON object of a metrics.jsonl line (non-finite floats become null); refuses unknown types."""
    if kind not in METRIC_TYPES:
        raise ValueError(f"{kind!r} is not a metrics record; choose from {', '.join(METRIC_TYPES)}")
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
    return {"type": kind, "step": int(step), "time": round(time.time(), 3), **clean}


def append_metric(folder: str | PathLike[str], kind: str, step: int, **values: Any) -> Metric:
    """Append one line to `folder`/metrics.jsonl (fsynced: a stage's few lines, not the training's many)."""
    line = metrics_line(kind, step, **values)
    append_jsonl(Path(folder) / METRICS, line)
    return METRIC_TYPES[kind](line)


def describe(ending: Ending | None) -> str:
    """An attempt's ending in words: 'finished', 'diverged at step N: why', a stop's reason; '' for none."""
    if isinstance(ending, Done):
        return "finished"
    if isinstance(ending, Diverged):
        return f"diverged at step {ending.step}: {ending.reason}"
    if isinstance(ending, Stop):
        return STOP_REASONS.get(ending.reason, ending.reason)
    return ""


class MetricsLog:
    """The records of a metrics.jsonl, oldest first: attempts (from one `start` to the next), endings, the outcome."""

    def __init__(self, records: Iterable[Metric] = ()) -> None:
        self.records: tuple[Metric, ...] = tuple(records)

    @classmethod
    def parse(cls, lines: Iterable[Mapping[str, Any]]) -> MetricsLog:
        return cls(METRIC_TYPES.get(str(line.get("type")), Metric)(line) for line in lines)

    @classmethod
    def read(cls, folder: str | PathLike[str]) -> MetricsLog:
        """`folder`/metrics.jsonl (empty when there is none)."""
        return cls.parse(read_jsonl(Path(folder) / METRICS))

    def __iter__(self) -> Iterator[Metric]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def of(self, kind: type[M]) -> list[M]:
        return [r for r in self.records if isinstance(r, kind)]

    def last(self, kind: type[M]) -> M | None:
        found = self.of(kind)
        return found[-1] if found else None

    def latest(self) -> MetricsLog | None:
        """The records after the newest `start`; None when no attempt wrote one."""
        starts = [i for i, r in enumerate(self.records) if isinstance(r, Start)]
        return MetricsLog(self.records[starts[-1] + 1:]) if starts else None

    def attempt_at(self, since: float) -> MetricsLog | None:
        """The records of the attempt whose `start` is the first at or after `since`, up to the next `start`.

        None when there is no such start (that attempt ended while loading or setting up).
        """
        for i, r in enumerate(self.records):
            if isinstance(r, Start) and r.time >= since:
                rest = self.records[i + 1:]
                following = next((k for k, q in enumerate(rest) if isinstance(q, Start)), len(rest))
                return MetricsLog(rest[:following])
        return None

    def ending(self) -> Ending | None:
        """The last `stop`, `diverged` or `done` of these records."""
        found = [r for r in self.records if isinstance(r, (Stop, Diverged, Done))]
        return found[-1] if found else None

    def outcome(self) -> Outcome:
        """'diverged' or 'finished' when the latest attempt wrote that record, else '' (no result yet)."""
        latest = self.latest()
        if latest is None:
            return ""
        if latest.of(Diverged):
            return "diverged"
        return "finished" if latest.of(Done) else ""

    def has_result(self) -> bool:
        """The run ended with its result (finished or diverged): never requeued, retried or resumed unasked."""
        return self.outcome() != ""

    def diverged(self) -> Diverged | None:
        """The `diverged` record of the latest attempt, or None."""
        latest = self.latest()
        return latest.last(Diverged) if latest is not None else None

    def result_text(self) -> str:
        """The outcome in words: 'finished', 'diverged at step N: why', or '' without a result."""
        outcome = self.outcome()
        return describe(self.diverged()) if outcome == "diverged" else outcome


# ---------------------------------------------------------------- attempts.jsonl


class AttemptStart(Record):
    """A start of a job's task (global rank 0 writes it): attempt number, job, requeue, start step, the last stop."""

    TYPE = "start"

    @property
    def attempt(self) -> int:
        return int(self.data.get("attempt") or 0)

    @property
    def job_id(self) -> str:
        return str(self.data.get("job_id", ""))

    @property
    def requeue(self) -> int:
        return int(self.data.get("requeue") or 0)

    @property
    def start_step(self) -> int:
        return int(self.data.get("start_step") or 0)

    @property
    def last_stop(self) -> str:
        return str(self.data.get("last_stop") or "")

    @property
    def pid(self) -> int | None:
        return _int(self.data.get("pid"))

    @property
    def schedule_changes(self) -> list[str]:
        return list(self.data.get("schedule_changes") or [])


class Failure(Record):
    """A rank raised: its error, and whether a new attempt can get past it (transient)."""

    TYPE = "failure"

    @property
    def job_id(self) -> str:
        return str(self.data.get("job_id", ""))

    @property
    def restart(self) -> int:
        return int(self.data.get("restart") or 0)

    @property
    def rank(self) -> int:
        return int(self.data.get("rank") or 0)

    @property
    def error(self) -> str:
        return str(self.data.get("error", ""))

    @property
    def transient(self) -> bool:
        return bool(self.data.get("transient"))


Decision = Literal["retried", "not retried", "gave up", "none"]


class Retry(Record):
    """What was decided after srun ended (launcher.retry): retried, not retried, gave up, or none (it did not fail)."""

    TYPE = "retry"

    @property
    def job_id(self) -> str:
        return str(self.data.get("job_id", ""))

    @property
    def restart(self) -> int:
        return int(self.data.get("restart") or 0)

    @property
    def srun(self) -> str:
        return str(self.data.get("srun", ""))

    @property
    def decision(self) -> str:
        return str(self.data.get("decision", ""))

    @property
    def cause(self) -> str:
        return str(self.data.get("cause", ""))

    @property
    def retry(self) -> int | None:
        return _int(self.data.get("retry"))


ATTEMPT_TYPES: dict[str, type[Record]] = {"start": AttemptStart, "failure": Failure, "retry": Retry}


def attempt_line(kind: str, **values: Any) -> dict[str, Any]:
    """The JSON object of an attempts.jsonl line (`time` added when not given); refuses unknown types."""
    if kind not in ATTEMPT_TYPES:
        raise ValueError(f"{kind!r} is not an attempts record; choose from {', '.join(ATTEMPT_TYPES)}")
    return {"type": kind, **values} if "time" in values else {"type": kind, **values, "time": round(time.time(), 3)}


def append_attempt(folder: str | PathLike[str], record: Record) -> None:
    """Append a record (made with `attempt_line`) to `folder`/attempts.jsonl."""
    append_jsonl(Path(folder) / ATTEMPTS, dict(record.data))


class AttemptsLog:
    """The records of an attempts.jsonl, oldest first: starts, failures and retry decisions."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self.records: tuple[Record, ...] = tuple(records)

    @classmethod
    def parse(cls, lines: Iterable[Mapping[str, Any]]) -> AttemptsLog:
        return cls(ATTEMPT_TYPES.get(str(line.get("type", "start")), Record)(line) for line in lines)

    @classmethod
    def read(cls, folder: str | PathLike[str]) -> AttemptsLog:
        return cls.parse(read_jsonl(Path(folder) / ATTEMPTS))

    @property
    def starts(self) -> list[AttemptStart]:
        return [r for r in self.records if isinstance(r, AttemptStart)]

    @property
    def failures(self) -> list[Failure]:
        return [r for r in self.records if isinstance(r, Failure)]

    @property
    def retries(self) -> list[Retry]:
        """Every decision after srun ended, `none` included."""
        return [r for r in self.records if isinstance(r, Retry)]

    def starts_of(self, job_id: str) -> list[AttemptStart]:
        return [a for a in self.starts if a.job_id == str(job_id)]

    def retries_of(self, job_id: str) -> int:
        """Automatic retries of this job after a transient failure (`launcher.retry`)."""
        return sum(r.job_id == str(job_id) and r.decision == "retried" for r in self.retries)

    def requeues_of(self, job_id: str) -> int:
        """Requeues (time limits, preemptions) of this job so far: its starts minus one, minus its retries."""
        return max(0, len(self.starts_of(job_id)) - 1 - self.retries_of(job_id))

    def failed(self) -> list[Retry]:
        """One decision per failed attempt (srun failed): its cause and what was decided."""
        return [r for r in self.retries if r.decision != "none"]

    def unjudged_failures(self) -> list[Failure]:
        """Failures no decision speaks for (a local job has no batch script to decide): each failed rank's error."""
        judged = {(r.job_id, r.restart) for r in self.retries}
        return [f for f in self.failures if (f.job_id, f.restart) not in judged]


__all__ = [
    "ATTEMPTS", "ATTEMPT_TYPES", "AttemptStart", "AttemptsLog", "Decision", "Diverged", "Done", "Ending", "Epoch", "Eval",
    "Failure", "METRICS", "METRIC_TYPES", "Metric", "MetricsLog", "Outcome", "Record", "Retry", "STOP_REASONS", "Start",
    "Stop", "Train", "append_attempt", "append_metric", "attempt_line", "describe", "metrics_line",
]
