"""Sweeps: the members of a sweep (launcher.sweep_spec) as one SLURM job array, one requeueable run each.

- `SWEEP_DIR/sweep.json` holds the spec and the members, `submissions.jsonl` each submission (members
  → array task ids, the shared stages' jobs), resume and cancel; each member is an ordinary run directory
  `SWEEP_DIR/<member>` (status, logs, cancel and resume work on it as on any run).
- Members share what they can: the shards of a dataset, the cached embeddings of each distinct
  image tower and the location prior of each distinct `prior_key` (annotations and prior settings)
  are made once, by the pipeline's shards, embed and prior stages (`pipeline.stages`), and the array
  waits for them (`afterok`; the prior beside shards and embed, for the members' final evaluation).
  Two members with different towers must name different caches; a member's prior without its own
  prior.out goes to SWEEP_DIR/priors/KEY (`launcher.sweep_spec.shared_prior`).
- One array job (`slurm.array_parallelism` members at once); a member's preemption requeues only
  its own array task (`scontrol requeue ARRAY_TASK`), a member that diverges ends as a result.
- Locally (cluster: local) the shared stages run in this process, then the members run through
  submitit's local executor, `slurm.array_parallelism` at once (default 1).
- When the last member ends, its rank 0 writes the report (`launcher.report`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from launcher import clusters, logger, pipeline
from launcher.local import run_local
from launcher.report import member_ended
from launcher.rundir import RunDir
from launcher.spec import prepare, render_sbatch
from launcher.submit import cancel as cancel_run
from launcher.submit import check_fresh, clean_submit_env, resume_config
from launcher.sweep_spec import Member, MemberSpec, SweepSpec, prior_key, resolve
from launcher.sweepdir import SWEEP, SweepDir
from launcher.task import Task
from lit import stages
from lit.config import STAGES, Config
from lit.configlib import ConfigError, to_dict
from lit.prior.store import prior_dir

PREP_STAGES = ("prior", "shards", "embed")
"""The stages a sweep runs once for the members that share their outputs, before the array."""
TOWER_KEYS = ("image_weights", "image_pretrained", "lock_image", "unlocked_groups", "freeze_bn_stats")
SHARED_SECTIONS = ("slurm", "container", "cluster")
"""What one array job shares: its sbatch script (resources) and the way Python starts."""


# ---------------------------------------------------------------- shared stages


def tower_key(cfg: Config) -> str:
    """What makes a cache of image embeddings: the image tower's settings and the views."""
    model = to_dict(cfg.model)
    conf = model.get("config") or {}
    tower = {k: model[k] for k in TOWER_KEYS}
    tower.update(vision={k: conf.get(k) for k in ("vision_cfg", "embed_dim", "quick_gelu", "preprocess_cfg")},
                 name=model["name"] if not conf else "", views=[cfg.data.views, cfg.data.view_policy, cfg.data.view_seed],
                 shards=[cfg.data.train_shards, cfg.data.val_shards], dtype=cfg.pipeline.embed_dtype)
    return json.dumps(tower, sort_keys=True)


def shards_key(cfg: Config) -> str:
    """What makes a dataset's shards: its root, the captions and the shard settings."""
    return json.dumps({"root": cfg.data.root, "captions": to_dict(cfg.captions), "shards": to_dict(cfg.shards)}, sort_keys=True)


PREP_OUTPUT: dict[str, tuple[str, Callable[[Config], str], Callable[[Config], str], str]] = {
    "prior": ("prior.out", lambda c: str(prior_dir(c)), prior_key, "from other annotations or prior settings"),
    "shards": ("data.train_shards", lambda c: c.data.train_shards, shards_key, "from other data"),
    "embed": ("data.train_embeddings", lambda c: c.data.train_embeddings, tower_key, "with another image tower or views"),
}
"""Per prep stage: the key naming its output folder, that folder, what makes it (members with equal keys share it), what differs."""


def prep_groups(members: list[Member]) -> dict[str, list[tuple[str, Config]]]:
    """Per prep stage, one (group id, representative config) per distinct output folder; conflicts are errors."""
    groups: dict[str, list[tuple[str, Config]]] = {stage: [] for stage in PREP_STAGES}
    for stage in PREP_STAGES:
        which, path_of, key_of, differs = PREP_OUTPUT[stage]
        seen: dict[str, tuple[str, str]] = {}
        for m in members:
            if stage not in m.cfg.pipeline.stages or (stage == "embed" and m.cfg.data.image_source != "cached"):
                continue
            path, key = path_of(m.cfg), key_of(m.cfg)
            if path in seen and seen[path][1] != key:
                raise ConfigError(f"members.{m.name}", which, f"{path} is also the {stage} folder of member {seen[path][0]}, "
                                  f"made {differs}: give each member its own {which}"
                                  + (" (and its val folder)" if stage != "prior" else ""))
            if path not in seen:
                seen[path] = (m.name, key)
                groups[stage].append((f"{stage}{len(groups[stage])}", m.cfg))
    return groups


def _prep_cfg(cfg: Config, sweep: SweepDir, group: str) -> Config:
    return replace(cfg, name=f"{cfg.name.rsplit('-', 1)[0]}-{group}", run_dir=str(sweep.prep(group)))


def submit_prep(members: list[Member], sweep: SweepDir, kind: str) -> list[dict[str, Any]]:
    """Submit the prior, shards and embed stages the members need and lack (embed after its shards); the chain."""
    groups = prep_groups(members)
    chain: list[dict[str, Any]] = []
    for group, cfg in groups["prior"]:  # reads the annotations only: waits for nothing
        entry = pipeline.submit_chain(_prep_cfg(cfg, sweep, group), [("prior", stages.state(cfg, "prior"))], kind)[0]
        chain.append({**entry, "group": group})
    shards_job: dict[str, str | None] = {}
    for group, cfg in groups["shards"]:
        entry = pipeline.submit_chain(_prep_cfg(cfg, sweep, group), [("shards", stages.state(cfg, "shards"))], kind)[0]
        shards_job[cfg.data.train_shards] = entry["job_id"]
        chain.append({**entry, "group": group})
    for group, cfg in groups["embed"]:
        after = shards_job.get(cfg.data.train_shards)
        state = stages.state(cfg, "embed")
        if after and state.complete:
            state = stages.StageState(False, f"runs after its shards stage ({state.detail})")
        entry = pipeline.submit_chain(_prep_cfg(cfg, sweep, group), [("embed", state)], kind, after=after)[0]
        chain.append({**entry, "group": group})
    return chain


def run_prep_here(members: list[Member]) -> None:
    """Local sweeps: make the missing priors, shards and caches in this process, each once."""
    groups = prep_groups(members)
    for stage in PREP_STAGES:
        for group, cfg in groups[stage]:
            state = stages.state(cfg, stage)
            if state.complete:
                logger.info("%s %s: complete already (%s)", stage, group, state.detail)
                continue
            logger.info("%s %s: %s", stage, group, state.detail)
            if stage == "prior":
                stages.run_prior(cfg, lambda: False)
            elif stage == "shards":
                stages.run_shards(cfg, lambda: False)
            else:
                stages.run_embed(cfg, lambda: False)


# ---------------------------------------------------------------- submitting


def check_shared(members: list[Member]) -> None:
    """One array job has one sbatch script: every member must ask for the same resources."""
    first = members[0]
    for m in members[1:]:
        for section in SHARED_SECTIONS:
            a, b = getattr(first.cfg, section), getattr(m.cfg, section)
            if a != b:
                diff = section
                if hasattr(a, "__dataclass_fields__"):
                    keys = [k for k in a.__dataclass_fields__ if getattr(a, k) != getattr(b, k)]
                    diff = ", ".join(f"{section}.{k}" for k in keys)
                raise ConfigError(f"members.{m.name}", diff, f"differs from member {first.name}'s: the members of one job array "
                                  "share their resources; sweep these keys in separate sweeps")


def _write_sweep(spec: SweepSpec, sweep: SweepDir, members: list[Member], source: str) -> None:
    old = {m["name"]: m for m in sweep.read()["members"]} if SweepDir.is_sweep(sweep.path) else {}
    sweep.write({
        "format_version": 1, "name": spec.name, "job": str(Path(spec.job).resolve()), "source": source, "paper": spec.paper,
        "overrides": list(spec.overrides), "grid": {k: list(v) for k, v in spec.grid.items()},
        "members": [{"name": m.name, "overrides": list(m.overrides), "run_dir": m.cfg.run_dir,
                     "array_index": old.get(m.name, {}).get("array_index", m.index), "job_id": old.get(m.name, {}).get("job_id")}
                    for m in members],
    })


def checks(spec: SweepSpec, source: str, kind: str = "submit",
           only: list[str] | None = None) -> tuple[Path, list[Member], list[Member]]:
    """What submitting checks first (`--dry-run` too): fresh folders, shared caches, each member's preflight.

    Returns the sweep folder, every member and those chosen (`only`).
    """
    sweep_dir, members = resolve(spec, source)
    members = [replace(m, cfg=prepare(m.cfg)) for m in members]
    chosen = [m for m in members if only is None or m.name in only]
    cluster = clusters.of(chosen[0].cfg)
    if kind == "submit":
        if SweepDir.is_sweep(sweep_dir):
            raise ConfigError(str(sweep_dir), "sweep_dir", f"{sweep_dir} holds a sweep already: continue it with "
                              f"`python -m launcher resume {sweep_dir}`, or give the sweep another name or sweep_dir")
        for m in chosen:
            check_fresh(m.cfg.run_dir)
    check_shared(chosen)
    for m in chosen:  # the shared stages the member has make their outputs; its training reads them
        pipeline.checks(m.cfg, [s for s in STAGES if (s in PREP_STAGES and s in m.cfg.pipeline.stages) or s == "train"])
    if not (cluster.scheduled or cluster.follows):
        raise ConfigError(source, "cluster", f"a sweep runs on cluster slurm or local, not {cluster.name!r}")
    return sweep_dir, members, chosen


def submit(spec: SweepSpec, source: str, kind: str = "submit", only: list[str] | None = None) -> dict[str, Any]:
    """Submit the sweep (or the members `only`): shared stages, then the array; returns the submission record."""
    sweep_dir, members, chosen = checks(spec, source, kind, only)
    sweep = SweepDir(sweep_dir)
    cluster = clusters.of(chosen[0].cfg)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _write_sweep(spec, sweep, members, source)
    if cluster.follows:
        return run_local_members(sweep, chosen, kind)
    prep = submit_prep(chosen, sweep, kind)
    after = ":".join(e["job_id"] for e in prep if e["job_id"]) or None
    for m in chosen:
        RunDir(m.cfg.run_dir).save_config(m.cfg)
    executor = cluster.executor(chosen[0].cfg, sweep_dir, after, array=True)
    executor.update_parameters(job_name=spec.name)
    with clean_submit_env():
        with executor.batch():
            jobs = [executor.submit(Task(m.cfg)) for m in chosen]
    ids = {m.name: str(j.job_id) for m, j in zip(chosen, jobs)}
    for m in chosen:
        RunDir(m.cfg.run_dir).record_job(kind, ids[m.name], cluster.name, folder=str(sweep.submitit_folder), sweep=str(sweep_dir))
    sweep.record_members(ids, {m.name: i for i, m in enumerate(chosen)})
    record = {"type": kind, "time": round(time.time(), 3), "members": ids, "prep": prep, "after": after, "sweep_dir": str(sweep_dir)}
    sweep.record_submission(record)
    logger.info("%s: sweep %s is array %s (%d members)", kind, spec.name, next(iter(ids.values())).split("_")[0], len(ids))
    return record


def run_local_members(sweep: SweepDir, members: list[Member], kind: str) -> dict[str, Any]:
    """Local sweeps: prep here, then each member through the local executor (array_parallelism at once)."""
    run_prep_here(members)
    parallel = max(1, members[0].cfg.slurm.array_parallelism)

    def one(m: Member) -> tuple[str, str]:
        summary = run_local(m.cfg, kind=kind)
        return m.name, summary.job_id

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        ids = dict(pool.map(one, members))
    sweep.record_members(ids, {m.name: m.index for m in members})
    record = {"type": kind, "time": round(time.time(), 3), "members": ids, "prep": [], "cluster": members[0].cfg.cluster,
              "sweep_dir": str(sweep.path)}
    sweep.record_submission(record)
    member_ended(members[-1].cfg.run_dir)
    return record


def dry_run_text(spec: SweepSpec, source: str) -> str:
    """The members, their overrides and the array's sbatch script, as `submit` would make them."""
    sweep_dir, members = resolve(spec, source)
    members = [replace(m, cfg=prepare(m.cfg)) for m in members]
    check_shared(members)
    lines = [f"# sweep {spec.name}: {len(members)} members in {sweep_dir}"]
    for m in members:
        lines.append(f"  [{m.index}] {m.name}: {' '.join(m.overrides) or '(the job as it is)'}  → {m.cfg.run_dir}")
    groups = prep_groups(members)
    for stage in PREP_STAGES:
        for group, cfg in groups[stage]:
            state = stages.state(cfg, stage)
            lines.append(f"## shared stage {stage} ({group}): {'skipped, ' if state.complete else ''}{state.detail}")
    cfg = members[0].cfg
    if clusters.of(cfg).scheduled:
        parallel = cfg.slurm.array_parallelism or len(members)
        lines.append(f"## job array of {len(members)} tasks, {min(parallel, len(members))} at once"
                     + (" (after the shared stages succeed)" if any(groups.values()) else ""))
        after = ":".join(f"<job id of {stage} {group}>" for stage in PREP_STAGES for group, c in groups[stage]
                         if not stages.state(c, stage).complete) or None
        lines.append(render_sbatch(replace(cfg, name=spec.name), sweep_dir, after, array_size=len(members)))
    else:
        lines.append(f"## {cfg.cluster}: the members run on this machine, {max(1, cfg.slurm.array_parallelism)} at once")
    return "\n".join(lines)


# ---------------------------------------------------------------- cancel, resume


def todo(sweep: SweepDir) -> list[str]:
    """The members that have no result yet (finished and diverged ones have theirs)."""
    return [name for name, run in sweep.members().items() if run.outcome() == ""]


def _member_jobs(sweep: SweepDir) -> dict[str, str]:
    """Each member's job that is still queued or running (member → job id)."""
    found = {}
    for name, run in sweep.members().items():
        job = run.current_job()
        if job is not None and clusters.is_active(clusters.named(job.cluster).state(job.job_id)):
            found[name] = job.job_id
    return found


def _prep_jobs(sweep: SweepDir) -> dict[str, RunDir]:
    """The shared stages' jobs that are still queued or running (job id → the stage's home)."""
    found = {}
    for entry in [e for sub in sweep.submissions() for e in sub.get("prep", []) if e.get("job_id")]:
        home = sweep.prep(entry["group"]).stage(entry["stage"])
        job = home.current_job()
        if job is not None and job.job_id == entry["job_id"] and clusters.is_active(clusters.named(job.cluster).state(job.job_id)):
            found[job.job_id] = home
    return found


def cancel(sweep_dir: str | Path) -> list[str]:
    """Cancel every queued or running member and shared stage of the sweep; their ids."""
    sweep = SweepDir(sweep_dir)
    ids = [cancel_run(sweep.members()[name]) for name in _member_jobs(sweep)]  # scancel ARRAY_TASK, or TERM to a controller
    ids += [cancel_run(home) for job_id, home in _prep_jobs(sweep).items() if job_id not in ids]
    sweep.record_cancel(ids)
    return ids


def spec_of(sweep: SweepDir) -> SweepSpec:
    data = sweep.read()
    return SweepSpec(job=data["job"], name=data["name"], sweep_dir=str(sweep.path), overrides=tuple(data["overrides"]),
                     members=tuple(MemberSpec(m["name"], tuple(m["overrides"])) for m in data["members"]),
                     paper=data.get("paper", ""))


def resume(sweep_dir: str | Path, overrides: list[str] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Submit again the members that have no result yet (finished and diverged ones stay), as a new array.

    Checked at submit time as every resume is (`launcher.submit.resume_config`, for each member).
    `dry_run`: every check, then the members that would be submitted, and nothing submitted.
    """
    sweep = SweepDir(Path(sweep_dir).resolve())
    active = [*_member_jobs(sweep).values(), *_prep_jobs(sweep)]
    if active:
        raise ConfigError(str(sweep), "sweep_dir", f"jobs {', '.join(active)} of this sweep are still queued or running: "
                          f"wait for them or `python -m launcher cancel {sweep}` first")
    spec = spec_of(sweep)
    if overrides:
        spec = replace(spec, overrides=spec.overrides + tuple(overrides))
    names = todo(sweep)
    if not names:
        raise ConfigError(str(sweep), "sweep_dir", "every member has its result: nothing to resume "
                          f"(`python -m launcher report {sweep}` shows them)")
    runs = sweep.members()
    for name in names:
        if runs[name].has_config():
            resume_config(runs[name], overrides or ())  # refuses schedule changes mid-run unless allowed
    if dry_run:
        checks(spec, str(sweep.path / SWEEP), kind="resume", only=names)
        return {"sweep_dir": str(sweep.path), "members": {name: "(dry run)" for name in names}}
    return submit(spec, str(sweep.path / SWEEP), kind="resume", only=names)


__all__ = ["PREP_OUTPUT", "PREP_STAGES", "cancel", "check_shared", "checks", "dry_run_text", "prep_groups", "prior_key", "resume",
           "run_local_members", "shards_key", "spec_of", "submit", "submit_prep", "todo", "tower_key"]
