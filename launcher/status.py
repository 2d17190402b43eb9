"""`python -m launcher status`: what a run, a pipeline or a sweep is doing, as plain data (the command line draws it).

- a run: its job and state, attempts, requeues and retries, step, outcome, last metrics, why it last
  stopped, and every failed attempt with its cause and what was decided;
- a pipeline: that, one row per stage of the newest submission (job, state, attempts, progress, why),
  and the failed attempts of every stage;
- a sweep: one row per member, and the failed attempts of every member and shared stage.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

from launcher import clusters
from launcher.rundir import Job, RunDir
from launcher.sweepdir import SweepDir
from lit import stages
from lit.config import Config
from lit.io import read_jsonl
from lit.runlog import AttemptsLog, AttemptStart, Eval, MetricsLog, Start, Train, describe

FAILED_STATES = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
"""SLURM states of a stage whose failure cancels the stages after it (afterok never satisfied)."""


def job_state(job: Job | None) -> str:
    """State of a jobs.jsonl record: its cluster's (SLURM's, or RUNNING/ENDED for a local controller); NONE without one."""
    return "NONE" if job is None else clusters.named(job.cluster).state(job.job_id)


def last_stop(log: MetricsLog, tries: list[AttemptStart], state: str) -> str:
    """Why the newest attempt stopped; while it runs, why the one before it stopped."""
    tail = log.attempt_at(tries[-1].time) if tries else log.latest()
    ending = describe(tail.ending() if tail is not None else None)
    if ending:
        return ending
    if tries and not clusters.is_active(state) and state not in ("NONE", "UNKNOWN"):
        return f"{state}: ended without a stop record (see `python -m launcher logs`)"
    return tries[-1].last_stop if tries else ""


def failed_attempts(attempts: AttemptsLog, **where: str) -> list[dict[str, Any]]:
    """One row per failed attempt (`where` names its stage or member): job, restart, how srun ended, decision, cause.

    Failures no decision speaks for (a local job, or one whose batch script has not decided yet) are
    summed up per attempt with the errors the ranks reported.
    """
    rows = [{**where, "job_id": d.job_id, "restart": d.restart, "srun": d.srun, "decision": d.decision, "cause": d.cause}
            for d in attempts.failed()]
    pending: dict[tuple[str, int], list[str]] = {}
    for f in attempts.unjudged_failures():
        pending.setdefault((f.job_id, f.restart), []).append(f"rank {f.rank}: {f.error}")
    rows += [{**where, "job_id": job_id, "restart": restart, "srun": "-", "decision": "none recorded", "cause": "; ".join(errors)}
             for (job_id, restart), errors in pending.items()]
    return rows


def run_status(run_dir: str | PathLike[str]) -> dict[str, Any]:
    """Everything `status` shows of one run folder, as plain data."""
    run = RunDir(run_dir)
    cfg = run.config()
    job = run.current_job()
    log = run.metrics()
    attempts = run.attempts()
    tries = attempts.starts
    start, train, last_eval = log.last(Start), log.last(Train), log.last(Eval)
    state = job_state(job)
    saved = run.checkpoint_step()
    outcome = log.outcome()
    return {
        "name": cfg.name,
        "run_dir": str(run),
        "cluster": job.cluster if job else cfg.cluster,
        "job_id": job.job_id if job else None,
        "state": state,
        "attempt": len(tries),
        "requeues": attempts.requeues_of(job.job_id) if job else 0,
        "max_requeues": cfg.slurm.max_requeues,
        "retries": attempts.retries_of(job.job_id) if job else 0,
        "max_failures": cfg.slurm.max_failures,
        "failures": [dict(f.data) for f in attempts.failures],
        "retry_decisions": [dict(d.data) for d in attempts.retries],
        "failed_attempts": failed_attempts(attempts),
        "step": max([saved] + [r.step for r in (train, start) if r is not None]),
        "total_steps": start.total_steps if start else None,
        "checkpoint_step": saved,
        "finished": outcome != "",
        "outcome": outcome,
        "result": log.result_text(),
        "last_train": train.values() if train else {},
        "last_eval": last_eval.values() if last_eval else {},
        "last_stop": last_stop(log, tries, state),
        "attempts": [dict(a.data) for a in tries],
    }


def progress(cfg: Config, stage: str, train: dict[str, Any]) -> str:
    """A stage's progress in words, from the files it writes (`train`: the run's status)."""
    if stage == "shards":
        done = [f for _, f, _ in stages.splits(cfg) if (Path(f) / "manifest.json").is_file()]
        partial = sum(len(list((Path(f) / ".progress").glob("*.json"))) for _, f, _ in stages.splits(cfg))
        return f"{len(done)} of 2 splits complete" + (f", {partial} shards of the next written" if partial else "")
    if stage == "embed":
        parts = []
        for split, shards, emb in stages.splits(cfg):
            manifest = Path(shards) / "manifest.json"
            total = len(json.loads(manifest.read_text())["shards"]) if manifest.is_file() else 0
            parts.append(f"{split} {len(list(Path(emb).glob('.emb-*.json')))}/{total or '?'} shards")
        return ", ".join(parts)
    if stage == "prior":
        return prior_progress(cfg)
    if stage == "train":
        last, steps = train.get("last_train") or {}, train.get("total_steps")
        return (f"step {train.get('step', 0)}" + (f" / {steps}" if steps else "")
                + (f", loss {last['loss']:.4g}" if last.get("loss") else "")
                + (f"; {train['result']}" if train.get("outcome") == "diverged" else ""))
    return stages.eval_state(cfg).detail


def prior_progress(cfg: Config) -> str:
    """The prior's state, or the epochs its metrics.jsonl has so far."""
    from lit.prior.store import prior_dir

    state = stages.prior_state(cfg)
    if state.complete:
        return state.detail
    epochs = [r.get("epoch", 0) for r in read_jsonl(prior_dir(cfg) / "metrics.jsonl")]
    return f"epoch {epochs[-1]} of {cfg.prior.epochs} done" if epochs else state.detail


def stage_rows(run: RunDir, cfg: Config, train: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage of the newest submission: job, state, attempts, outcome, progress, why it failed or was cancelled."""
    kind = clusters.of(cfg)
    rows = []
    failed: list[str] = []  # stages whose job failed: SLURM cancels the stages that wait for them
    for entry in run.last_chain():
        name, job_id = entry["stage"], entry["job_id"]
        home = run.stage(name)
        row: dict[str, Any] = {"stage": name, "job_id": job_id, "progress": progress(cfg, name, train), "why": "",
                               "outcome": home.outcome()}
        if entry["skipped"]:
            row.update(state="SKIPPED", attempts=0, why=entry["detail"])
            rows.append(row)
            continue
        state = kind.state(job_id)
        attempts = home.attempts()
        tries = [d for d in attempts.failed() if d.job_id == job_id]
        row.update(state=state, attempts=len(attempts.starts_of(job_id)))
        waited = [s for s in failed if s in stages.upstream(name)]
        if tries and tries[-1].decision != "retried":
            row["why"] = f"{tries[-1].decision}: {tries[-1].cause}"
        elif tries:
            row["why"] = f"{len(tries)} failed attempt{'s' * (len(tries) > 1)}, retried: {tries[-1].cause}"
        elif state == "CANCELLED" and waited:
            row["why"] = f"cancelled by SLURM: the {waited[0]} stage before it failed (afterok never satisfied)"
        if state in FAILED_STATES or (state == "CANCELLED" and waited):
            failed.append(name)
        rows.append(row)
    return rows


def status(run_dir: str | PathLike[str]) -> dict[str, Any]:
    """A run's status; a pipeline's has its stages too, and the failed attempts of every stage."""
    run = RunDir(run_dir)
    data = run_status(run)
    if run.is_pipeline():
        cfg = run.config()
        data["stages"] = stage_rows(run, cfg, data)
        names = [e["stage"] for e in run.last_chain()]
        data["failed_attempts"] = [row for name in names for row in failed_attempts(run.stage(name).attempts(), where=name)]
    return data


def sweep_status(sweep_dir: str | Path) -> dict[str, Any]:
    """One row per member (job, state, outcome, step, last zero-shot top-1, why it stopped) and every failed attempt."""
    sweep = SweepDir(sweep_dir)
    rows, failed = [], []
    for entry in [e for sub in sweep.submissions() for e in sub.get("prep", []) if e.get("job_id")]:
        home = sweep.prep(entry["group"]).stage(entry["stage"])
        failed += failed_attempts(home.attempts(), where=f"shared {entry['stage']} ({entry['group']})")
    for name, run in sweep.members().items():
        row: dict[str, Any] = {"member": name, "run_dir": str(run)}
        if not run.has_config():
            row.update(job_id=None, state="NOT SUBMITTED", outcome="", step=0, total_steps=None, top1=None, last_stop="")
        else:
            s = run_status(run)
            row.update(job_id=s["job_id"], state=s["state"], outcome=s["outcome"], step=s["step"], total_steps=s["total_steps"],
                       top1=s["last_eval"].get("top1"), last_stop=s["last_stop"], attempts=s["attempt"])
            failed += [{"where": name, **r} for r in s["failed_attempts"]]
        rows.append(row)
    return {"sweep": str(sweep), "name": sweep.read()["name"], "members": rows, "failed_attempts": failed}


__all__ = ["FAILED_STATES", "failed_attempts", "job_state", "last_stop", "prior_progress", "progress", "run_status", "stage_rows", "status",
           "sweep_status"]
