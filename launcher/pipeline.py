"""The whole job as one submission: its stages (shards → embed → train → eval) as SLURM jobs chained with afterok.

- Each stage is one submitit job with its own resources (`pipeline.<stage>`, the `slurm` section
  filling what a stage leaves unset); training is `launcher.task.Task`, the others `StageTask`.
- A stage whose outputs are already complete and match the job is skipped (`lit.stages.state`).
- Each job depends on the one before it (`afterok`) with `--kill-on-invalid-dep=yes`: when a stage
  fails for good, SLURM cancels the stages after it instead of leaving them pending forever.
- `RUN_DIR/pipeline.jsonl` records each submission (stage → job id); a stage's bookkeeping lives in
  its home (`RUN_DIR` for training, `RUN_DIR/stages/NAME` for the others); `status`, `cancel` and
  `resume` read them.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from launcher import logger, runs
from launcher.spec import PreflightFailed, make_executor, preflight, prepare, render_sbatch
from launcher.submit import clean_submit_env, free_port
from lit import stages
from lit.config import STAGES, Config, StageConfig, save_config
from lit.configlib import ConfigError
from lit.io import append_jsonl, read_jsonl

PIPELINE = "pipeline.jsonl"
OUTPUT_KEYS = {"shards": ("data.train_shards", "data.val_shards"), "embed": ("data.train_embeddings", "data.val_embeddings")}
"""Preflight checks of paths a stage of the submission makes: they need not exist yet."""


def home(cfg: Config, stage: str) -> Path:
    """Where a stage's job keeps its bookkeeping (config, attempts, metrics, submitit's folder)."""
    return Path(cfg.run_dir) if stage == "train" else Path(cfg.run_dir) / "stages" / stage


def stage_config(cfg: Config, stage: str) -> Config:
    """The job's config with the stage's resources in its slurm section (training: the job as it is)."""
    if stage == "train":
        return cfg
    res: StageConfig = getattr(cfg.pipeline, stage)
    s = cfg.slurm
    gpus = s.gpus_per_node if res.gpus_per_node is None else res.gpus_per_node
    slurm = replace(
        s, nodes=res.nodes or s.nodes, gpus_per_node=gpus,
        tasks_per_node=res.tasks_per_node or (s.tasks_per_node if res.gpus_per_node is None else 0),
        cpus_per_task=res.cpus_per_task or s.cpus_per_task, mem_gb=res.mem_gb or s.mem_gb, time_min=res.time_min or s.time_min,
        partition=res.partition or s.partition, constraint=res.constraint or (s.constraint if gpus else ""),
        exclusive=s.exclusive and bool(gpus),
    )
    train = cfg.train if gpus else replace(cfg.train, device="cpu")
    return replace(cfg, name=f"{cfg.name}-{stage}", slurm=slurm, train=train)


def chosen_stages(cfg: Config, only: str | None) -> list[str]:
    """The stages to run: `--stages a,b` or the job's pipeline.stages (train alone when both are empty)."""
    names = [s.strip() for s in only.split(",") if s.strip()] if only else list(cfg.pipeline.stages or ("train",))
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ConfigError("command line", "--stages", f"{unknown[0]!r} is not a stage; choose from {', '.join(STAGES)}")
    if "embed" in names and cfg.data.image_source != "cached":
        raise ConfigError("command line", "--stages", "the embed stage makes cached embeddings: set data.image_source=cached")
    return sorted(names, key=STAGES.index)


def plan(cfg: Config, names: list[str]) -> list[tuple[str, stages.StageState]]:
    """Each chosen stage with its state; complete stages before the first incomplete one are skipped."""
    out = []
    behind = False  # a stage after one that runs always runs: its inputs are about to change
    for name in names:
        state = stages.state(cfg, name)
        if behind and state.complete:
            state = stages.StageState(False, f"runs after a stage that runs ({state.detail})")
        behind = behind or not state.complete
        out.append((name, state))
    return out


def _task(cfg: Config, stage: str) -> Any:
    from launcher.stage_task import StageTask
    from launcher.task import Task

    local = ("127.0.0.1", free_port()) if cfg.cluster == "local" else (None, None)
    if stage == "train":
        return Task(cfg, *local)
    return StageTask(cfg, stage, str(home(cfg, stage)), *local)


def checks(cfg: Config, names: list[str]) -> None:
    """Preflight of the first stage's config, not failing on paths that earlier stages of this submission make."""
    made = {k for s in names for k in OUTPUT_KEYS.get(s, ())}
    try:
        preflight(cfg)
    except PreflightFailed as err:
        failed = [c for c in err.checks if c.status == "fail" and c.name not in made]
        if failed:
            raise PreflightFailed(failed) from err


def submit(cfg: Config, only: str | None = None, kind: str = "submit") -> list[dict[str, Any]]:
    """Submit the stages that are not complete, each after the one before; returns the chain (one record per stage)."""
    cfg = prepare(cfg)
    if cfg.cluster != "slurm":
        raise ConfigError("", "cluster", "a pipeline runs stages as SLURM jobs: set cluster=slurm "
                          "(locally, run `lit shards`/`lit embed` and submit the training alone)")
    names = chosen_stages(cfg, only)
    checks(cfg, names)
    save_config(cfg, Path(cfg.run_dir) / "config.yaml")
    chain = submit_chain(cfg, plan(cfg, names), kind)
    append_jsonl(Path(cfg.run_dir) / PIPELINE, {"type": kind, "time": round(time.time(), 3), "stages": chain})
    return chain


def submit_chain(cfg: Config, planned: list[tuple[str, stages.StageState]], kind: str = "submit",
                 after: str | None = None) -> list[dict[str, Any]]:
    """Submit each planned stage that is not complete after the one before (the first after `after`): the chain."""
    chain: list[dict[str, Any]] = []
    for name, state in planned:
        if state.complete:
            chain.append({"stage": name, "job_id": None, "skipped": True, "detail": state.detail})
            continue
        sub_cfg = stage_config(cfg, name)
        where = home(cfg, name)
        save_config(sub_cfg, where / "config.yaml")
        executor = make_executor(sub_cfg, where, after)
        with clean_submit_env():
            job = executor.submit(_task(sub_cfg, name))
        runs.record_job(where, kind, job.job_id, cfg.cluster, stage=name, after=after)
        after = str(job.job_id)
        chain.append({"stage": name, "job_id": after, "skipped": False, "detail": state.detail})
        logger.info("%s: stage %s is job %s", kind, name, after)
    return chain


def dry_run_text(cfg: Config, only: str | None = None) -> str:
    """Every stage's sbatch script and the chain, as `submit` would make them."""
    cfg = prepare(cfg)
    names = chosen_stages(cfg, only)
    parts: list[str] = []
    previous: str | None = None
    for name, state in plan(cfg, names):
        if state.complete:
            parts.append(f"## stage {name}: skipped ({state.detail})")
            continue
        dep = f"<job id of {previous}>" if previous else None
        parts.append(f"## stage {name} ({state.detail})" + (f", after {previous} succeeds" if previous else "")
                     + f"\n{render_sbatch(stage_config(cfg, name), home(cfg, name), dep)}")
        previous = name
    chain = " → ".join(f"{n}{' (skipped)' if s.complete else ''}" for n, s in plan(cfg, names))
    return "\n\n".join([f"# pipeline of {cfg.name}: {chain}", *parts])


def chains(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every line of pipeline.jsonl: submissions and resumes (with their stages) and cancels."""
    return read_jsonl(Path(run_dir) / PIPELINE)


def last_chain(run_dir: str | Path) -> list[dict[str, Any]]:
    """The stages of the newest submission or resume."""
    submitted = [c for c in chains(run_dir) if "stages" in c]
    if not submitted:
        raise ConfigError(str(run_dir), "run_dir", f"no pipeline was submitted from this run directory ({PIPELINE} is missing)")
    return list(submitted[-1]["stages"])


def _progress(cfg: Config, stage: str) -> str:
    """A stage's progress in words, from the files it writes."""
    if stage == "shards":
        done = [f for _, f, _ in stages.splits(cfg) if (Path(f) / "manifest.json").is_file()]
        partial = sum(len(list((Path(f) / ".progress").glob("*.json"))) for _, f, _ in stages.splits(cfg))
        return f"{len(done)} of 2 splits complete" + (f", {partial} shards of the next written" if partial else "")
    if stage == "embed":
        parts = []
        for split, shards, emb in stages.splits(cfg):
            total = len(json.loads((Path(shards) / "manifest.json").read_text())["shards"]) if (Path(shards) / "manifest.json").is_file() else 0
            written = len(list(Path(emb).glob(".emb-*.json")))
            parts.append(f"{split} {written}/{total or '?'} shards")
        return ", ".join(parts)
    if stage == "train":
        status: dict[str, Any] = runs.run_status(cfg.run_dir) if (Path(cfg.run_dir) / "config.yaml").is_file() else {}
        last = status.get("last_train") or {}
        steps = status.get("total_steps")
        return f"step {status.get('step', 0)}" + (f" / {steps}" if steps else "") + (f", loss {last['loss']:.4g}" if last.get("loss") else "")
    state = stages.eval_state(cfg)
    return state.detail


def status(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per stage of the newest submission: job, SLURM state, attempts, progress, why it failed."""
    cfg = runs.load_run_config(run_dir)
    rows = []
    failed_before = ""
    for entry in last_chain(run_dir):
        name = entry["stage"]
        where = home(cfg, name)
        row: dict[str, Any] = {"stage": name, "job_id": entry["job_id"], "progress": _progress(cfg, name), "why": ""}
        if entry["skipped"]:
            row.update(state="SKIPPED", attempts=0, why=entry["detail"])
        else:
            state = runs.slurm_state(entry["job_id"])
            decisions = [d for d in runs.attempt_records(where, "retry") if d.get("job_id") == entry["job_id"]]
            row.update(state=state, attempts=len([a for a in runs.attempts(where) if a.get("job_id") == entry["job_id"]]))
            if decisions and decisions[-1]["decision"] != "retried":
                row["why"] = f"{decisions[-1]['decision']}: {decisions[-1]['cause']}"
            elif state == "CANCELLED" and failed_before:
                row["why"] = f"cancelled by SLURM: the {failed_before} stage before it failed (afterok never satisfied)"
            if state in ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL") and not failed_before:
                failed_before = name
        rows.append(row)
    return rows


def cancel(run_dir: str | Path) -> list[str]:
    """Cancel every job of the newest submission that is still queued or running; returns their ids."""
    ids = [e["job_id"] for e in last_chain(run_dir) if e["job_id"] and runs.is_active(runs.slurm_state(e["job_id"]))]
    if ids:
        import subprocess

        subprocess.run(["scancel", *ids], check=True, capture_output=True, timeout=60)
    append_jsonl(Path(run_dir) / PIPELINE, {"type": "cancel", "time": round(time.time(), 3), "job_ids": ids})
    return ids


def resume(run_dir: str | Path, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Submit again from the first stage that is not complete (the stages of the last submission)."""
    from lit.config import with_overrides

    cfg = runs.load_run_config(run_dir)
    if overrides:
        cfg = with_overrides(cfg, overrides)
    chain = last_chain(run_dir)
    names = [e["stage"] for e in chain]
    active = [e["job_id"] for e in chain if e["job_id"] and runs.is_active(runs.slurm_state(e["job_id"]))]
    if active:
        raise ConfigError(str(run_dir), "run_dir", f"jobs {', '.join(active)} of this pipeline are still queued or running: "
                          f"wait for them or `python -m launcher cancel {run_dir}` first")
    return submit(cfg, ",".join(names), kind="resume")


def is_pipeline(run_dir: str | Path) -> bool:
    return (Path(run_dir) / PIPELINE).is_file()


__all__ = ["PIPELINE", "cancel", "chains", "last_chain", "chosen_stages", "dry_run_text", "home", "is_pipeline", "plan",
           "resume", "stage_config", "status", "submit", "submit_chain", "checks"]
