"""A sweep folder as one object: its spec and members, its submissions, and the run folder of each member.

- `sweep.json`: name, job, source, paper, common overrides, grid, and per member its overrides, run
  folder (`SWEEP_DIR/MEMBER`, an ordinary run folder), array index and job id;
- `submissions.jsonl`: each submission and resume (members → array task ids, the shared stages'
  jobs) and each cancel;
- `prep/GROUP`: the run folder of a shared stage (prior, shards or embed) made once for the members;
- `priors/KEY`: a location prior shared by the members made the same way (`launcher.sweep_spec.shared_prior`);
- `slurm/`: submitit's folder of the job array (every member's logs);
- `report.md`, `report.json`, `plots/` (`launcher.report`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.rundir import RunDir
from launcher.spec import SUBMITIT_DIR
from lit.configlib import ConfigError
from lit.io import append_jsonl, read_jsonl, write_json

SWEEP = "sweep.json"
SUBMISSIONS = "submissions.jsonl"
"""The sweep folder's record of each submission, resume and cancel (members → array task ids, shared stages)."""
PREP_DIR = "prep"


@dataclass(frozen=True, init=False)
class SweepDir:
    """A sweep folder: where its files are and what they say."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @staticmethod
    def is_sweep(path: str | Path) -> bool:
        return (Path(path) / SWEEP).is_file()

    @classmethod
    def of_member(cls, run_dir: str | Path) -> SweepDir | None:
        """The sweep a member's run folder belongs to, or None."""
        run = Path(run_dir).resolve()
        if not cls.is_sweep(run.parent):
            return None
        sweep = cls(run.parent)
        return sweep if run in [m.path.resolve() for m in sweep.members().values()] else None

    @property
    def submitit_folder(self) -> Path:
        return self.path / SUBMITIT_DIR

    def read(self) -> dict[str, Any]:
        """sweep.json: the spec and the members."""
        path = self.path / SWEEP
        if not path.is_file():
            raise ConfigError(str(self.path), "sweep_dir", f"not a sweep folder: it has no {SWEEP} "
                              "(start one with `python -m launcher sweep`)")
        return dict(json.loads(path.read_text()))

    def write(self, data: dict[str, Any]) -> None:
        write_json(self.path / SWEEP, data)

    def members(self) -> dict[str, RunDir]:
        """Each member's run folder, in the sweep's order."""
        return {m["name"]: RunDir(m["run_dir"]) for m in self.read()["members"]}

    def record_members(self, ids: dict[str, str], array_index: dict[str, int]) -> None:
        """Write the job id and array index of the members just submitted into sweep.json."""
        data = self.read()
        for m in data["members"]:
            if m["name"] in ids:
                m["job_id"], m["array_index"] = ids[m["name"]], array_index[m["name"]]
        self.write(data)

    def prep(self, group: str) -> RunDir:
        """The run folder of a shared stage's group (`prior0`, `shards0`, `embed1`, ...)."""
        return RunDir(self.path / PREP_DIR / group)

    def submissions(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / SUBMISSIONS)

    def record_submission(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path / SUBMISSIONS, record)

    def record_cancel(self, job_ids: list[str]) -> None:
        append_jsonl(self.path / SUBMISSIONS, {"type": "cancel", "time": round(time.time(), 3), "job_ids": job_ids})

    def member_of(self, job_id: str) -> RunDir:
        """The run folder of array task `job_id` (`ARRAY_TASK`)."""
        for s in self.submissions():
            for name, jid in s.get("members", {}).items():
                if jid == str(job_id):
                    return self.members()[name]
        raise ConfigError(str(self.path), "job_id", f"array task {job_id} is not a member of this sweep")


def task_home(path: str | Path, job_id: str) -> RunDir:
    """The run folder a job's task writes to: a sweep's member for an array task (`ARRAY_TASK`), else `path` itself."""
    if SweepDir.is_sweep(path) and "_" in str(job_id):
        return SweepDir(path).member_of(job_id)
    return RunDir(path)


__all__ = ["PREP_DIR", "SUBMISSIONS", "SWEEP", "SweepDir", "task_home"]
