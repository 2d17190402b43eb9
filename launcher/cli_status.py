"""`python -m launcher status RUN_DIR|SWEEP_DIR`, drawn: the tables of a run, a pipeline's stages, a sweep's members,
and every failed attempt with its cause and what was decided (`--json`: the data of `launcher.status`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from launcher import status
from launcher.sweepdir import SweepDir

out = Console(soft_wrap=True)


def show(path: str | Path, as_json: bool = False) -> int:
    """Print the status of a run, a pipeline or a sweep folder."""
    path = Path(path).resolve()
    if SweepDir.is_sweep(path):
        return show_sweep(path, as_json)
    data = status.status(path)
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    if data.get("stages"):
        out.print(stages_table(data["stages"]))
    out.print(status_table(data))
    if data["attempts"]:
        out.print(attempts_table(data["attempts"]))
    if data["failed_attempts"]:
        out.print(failures_table(data["failed_attempts"]))
    return 0


def show_sweep(sweep_dir: Path, as_json: bool) -> int:
    """One row per member, then every failed attempt of the members and shared stages."""
    data = status.sweep_status(sweep_dir)
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    table = Table(title=f"sweep {data['name']}")
    for column in ("member", "job", "state", "outcome", "step", "top-1", "last stop"):
        table.add_column(column, overflow="fold")
    for r in data["members"]:
        step = f"{r['step']}" + (f" / {r['total_steps']}" if r.get("total_steps") else "")
        table.add_row(r["member"], str(r["job_id"] or "-"), r["state"], r["outcome"] or "-", step,
                      "-" if r["top1"] is None else f"{r['top1']:.2f}", escape(str(r["last_stop"] or "-")))
    out.print(table)
    if data["failed_attempts"]:
        out.print(failures_table(data["failed_attempts"]))
    out.print(f"one member: python -m launcher status {escape(str(sweep_dir))}/MEMBER; "
              f"report: python -m launcher report {escape(str(sweep_dir))}", soft_wrap=True)
    return 0


def stages_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="pipeline stages")
    for column in ("stage", "job", "state", "attempts", "outcome", "progress", "why"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["stage"], str(r["job_id"] or "-"), r["state"], str(r["attempts"]), r["outcome"] or "-", escape(r["progress"]),
                      escape(r["why"]))
    return table


def _fmt(values: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = values.get(k)
        if v is not None:
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts) or "-"


def status_table(data: dict[str, Any]) -> Table:
    table = Table(title=f"run {data['name']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    total = data["total_steps"]
    rows = [
        ("run_dir", data["run_dir"]),
        ("job", f"{data['job_id']} ({data['cluster']})"),
        ("state", data["state"]),
        ("attempt", f"{data['attempt']} (requeues of this job: {data['requeues']} of max {data['max_requeues']}; "
                    f"retries after failures: {data['retries']} of max {data['max_failures']})"),
        ("step", f"{data['step']}" + (f" / {total}" if total else "") + f" (newest checkpoint: {data['checkpoint_step']})"),
        ("finished", {"finished": "yes", "diverged": f"yes: {data.get('result') or 'diverged'}"}.get(data.get("outcome", ""), "no")),
        ("last train", _fmt(data["last_train"], ("epoch", "loss", "lr", "logit_scale", "samples_per_s"))),
        ("last eval", _fmt(data["last_eval"], ("top1", "top5", "final"))),
        ("last stop", data["last_stop"] or "-"),
    ]
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    return table


def attempts_table(attempts: list[dict[str, Any]]) -> Table:
    table = Table(title="attempts")
    for column in ("attempt", "job", "requeue", "start step", "host", "previous stop"):
        table.add_column(column, overflow="fold")
    for a in attempts:
        table.add_row(str(a.get("attempt")), str(a.get("job_id")), str(a.get("requeue")), str(a.get("start_step")),
                      escape(str(a.get("host"))), escape(str(a.get("last_stop")) + (
                          f"; schedule changed: {'; '.join(a['schedule_changes'])}" if a.get("schedule_changes") else "")))
    return table


def failures_table(rows: list[dict[str, Any]]) -> Table:
    """One row per failed attempt (of every stage or member): how srun ended, what was decided and why."""
    table = Table(title="failed attempts")
    where = any("where" in r for r in rows)
    for column in (("where",) if where else ()) + ("job", "restart", "srun", "decision", "cause"):
        table.add_column(column, overflow="fold")
    for r in rows:
        cells = [str(r.get("job_id")), str(r.get("restart")), escape(str(r.get("srun"))), str(r.get("decision")), escape(str(r.get("cause")))]
        table.add_row(*([escape(str(r.get("where", "")))] if where else []), *cells)
    return table


__all__ = ["attempts_table", "failures_table", "show", "show_sweep", "stages_table", "status_table"]
