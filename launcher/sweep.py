"""Sweeps: the members of a sweep (launcher.sweep_spec) as one SLURM job array, one requeueable run each.

- `SWEEP_DIR/sweep.json` holds the spec and the members, `submissions.jsonl` each submission (members
  → array task ids, the shared stages' jobs), resume and cancel; each member is an ordinary run directory
  `SWEEP_DIR/<member>` (status, logs, cancel and resume work on it as on any run).
- Members share what they can: the shards of a dataset and the cached embeddings of each distinct
  image tower are made once, by the pipeline's shards and embed stages (`pipeline.stages`), and
  the array waits for them (`afterok`). Two members with different towers must name different caches.
- One array job (`slurm.array_parallelism` members at once); a member's preemption requeues only
  its own array task (`scontrol requeue ARRAY_TASK`), a member that diverges ends as a result.
- Locally (cluster: local) the shared stages run in this process, then the members run through
  submitit's local executor, `slurm.array_parallelism` at once (default 1).
- When the last member ends, its rank 0 writes the report (`launcher.report`).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from launcher import logger, pipeline, runs
from launcher.spec import make_executor, prepare, render_sbatch
from launcher.submit import check_fresh, clean_submit_env
from launcher.sweep_spec import Member, SweepSpec, resolve
from lit import stages
from lit.config import Config, save_config
from lit.configlib import ConfigError, to_dict
from lit.io import append_jsonl, read_jsonl, write_json

SWEEP = "sweep.json"
SUBMISSIONS = "submissions.jsonl"
"""The sweep folder's record of each submission, resume and cancel (members → array task ids, shared stages)."""
PREP_STAGES = ("shards", "embed")
TOWER_KEYS = ("image_weights", "image_pretrained", "lock_image", "unlocked_groups", "freeze_bn_stats")
SHARED_SECTIONS = ("slurm", "container", "cluster")
"""What one array job shares: its sbatch script (resources) and the way Python starts."""


# ---------------------------------------------------------------- reading a sweep folder


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / SWEEP).is_file()


def read(sweep_dir: str | Path) -> dict[str, Any]:
    path = Path(sweep_dir) / SWEEP
    if not path.is_file():
        raise ConfigError(str(sweep_dir), "sweep_dir", f"not a sweep folder: it has no {SWEEP} (start one with `python -m launcher sweep`)")
    return dict(json.loads(path.read_text()))


def member_dirs(sweep_dir: str | Path) -> dict[str, Path]:
    return {m["name"]: Path(m["run_dir"]) for m in read(sweep_dir)["members"]}


def member_dir(path: str | Path, job_id: str) -> Path:
    """The run folder of array task `job_id` (`ARRAY_TASK`) of the sweep in `path`; `path` itself when it is a run."""
    if not is_sweep(path) or "_" not in str(job_id):
        return Path(path)
    for s in read_jsonl(Path(path) / SUBMISSIONS):
        for name, jid in s.get("members", {}).items():
            if jid == str(job_id):
                return member_dirs(path)[name]
    raise ConfigError(str(path), "job_id", f"array task {job_id} is not a member of this sweep")


def sweep_of(run_dir: str | Path) -> Path | None:
    """The sweep folder a member's run folder belongs to, or None."""
    parent = Path(run_dir).resolve().parent
    if is_sweep(parent) and Path(run_dir).resolve() in [p.resolve() for p in member_dirs(parent).values()]:
        return parent
    return None


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
    return json.dumps({"root": cfg.data.root, "captions": to_dict(cfg.captions), "shards": to_dict(cfg.shards)}, sort_keys=True)


def prep_groups(members: list[Member]) -> dict[str, list[tuple[str, Config]]]:
    """Per prep stage, one (group id, representative config) per distinct output folder; conflicts are errors."""
    stages_of = [m for m in members if set(PREP_STAGES) & set(m.cfg.pipeline.stages)]
    groups: dict[str, list[tuple[str, Config]]] = {"shards": [], "embed": []}
    for stage, path_of, key_of in (
        ("shards", lambda c: c.data.train_shards, shards_key),
        ("embed", lambda c: c.data.train_embeddings, tower_key),
    ):
        seen: dict[str, tuple[str, str]] = {}
        for m in stages_of:
            if stage not in m.cfg.pipeline.stages or (stage == "embed" and m.cfg.data.image_source != "cached"):
                continue
            path, key = path_of(m.cfg), key_of(m.cfg)
            if path in seen and seen[path][1] != key:
                which = "data.train_embeddings" if stage == "embed" else "data.train_shards"
                raise ConfigError(f"members.{m.name}", which, f"{path} is also the {stage} folder of member {seen[path][0]}, "
                                  f"made {'with another image tower or views' if stage == 'embed' else 'from other data'}: "
                                  f"give each member its own {which} (and its val folder)")
            if path not in seen:
                seen[path] = (m.name, key)
                groups[stage].append((f"{stage}{len(groups[stage])}", m.cfg))
    return groups


def _prep_cfg(cfg: Config, sweep_dir: Path, group: str) -> Config:
    return replace(cfg, name=f"{cfg.name.rsplit('-', 1)[0]}-{group}", run_dir=str(sweep_dir / "prep" / group))


def submit_prep(members: list[Member], sweep_dir: Path, kind: str) -> list[dict[str, Any]]:
    """Submit the shards and embed stages the members need and lack (embed after its shards); the chain."""
    groups = prep_groups(members)
    chain: list[dict[str, Any]] = []
    shards_job: dict[str, str | None] = {}
    for group, cfg in groups["shards"]:
        entry = pipeline.submit_chain(_prep_cfg(cfg, sweep_dir, group), [("shards", stages.state(cfg, "shards"))], kind)[0]
        shards_job[cfg.data.train_shards] = entry["job_id"]
        chain.append({**entry, "group": group})
    for group, cfg in groups["embed"]:
        after = shards_job.get(cfg.data.train_shards)
        state = stages.state(cfg, "embed")
        if after and state.complete:
            state = stages.StageState(False, f"runs after its shards stage ({state.detail})")
        entry = pipeline.submit_chain(_prep_cfg(cfg, sweep_dir, group), [("embed", state)], kind, after=after)[0]
        chain.append({**entry, "group": group})
    return chain


def run_prep_here(members: list[Member]) -> None:
    """Local sweeps: make the missing shards and caches in this process, each once."""
    groups = prep_groups(members)
    for stage in PREP_STAGES:
        for group, cfg in groups[stage]:
            state = stages.state(cfg, stage)
            if state.complete:
                logger.info("%s %s: complete already (%s)", stage, group, state.detail)
                continue
            logger.info("%s %s: %s", stage, group, state.detail)
            if stage == "shards":
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


def _write_sweep(spec: SweepSpec, sweep_dir: Path, members: list[Member], source: str) -> None:
    old = {m["name"]: m for m in read(sweep_dir)["members"]} if is_sweep(sweep_dir) else {}
    write_json(sweep_dir / SWEEP, {
        "format_version": 1, "name": spec.name, "job": str(Path(spec.job).resolve()), "source": source, "paper": spec.paper,
        "overrides": list(spec.overrides), "grid": {k: list(v) for k, v in spec.grid.items()},
        "members": [{"name": m.name, "overrides": list(m.overrides), "run_dir": m.cfg.run_dir,
                     "array_index": old.get(m.name, {}).get("array_index", m.index), "job_id": old.get(m.name, {}).get("job_id")}
                    for m in members],
    })


def _record_members(sweep_dir: Path, ids: dict[str, str], array_index: dict[str, int]) -> None:
    data = read(sweep_dir)
    for m in data["members"]:
        if m["name"] in ids:
            m["job_id"], m["array_index"] = ids[m["name"]], array_index[m["name"]]
    write_json(sweep_dir / SWEEP, data)


def submit(spec: SweepSpec, source: str, kind: str = "submit", only: list[str] | None = None) -> dict[str, Any]:
    """Submit the sweep (or the members `only`): shared stages, then the array; returns the submission record."""
    sweep_dir, members = resolve(spec, source)
    members = [replace(m, cfg=prepare(m.cfg)) for m in members]
    chosen = [m for m in members if only is None or m.name in only]
    if kind == "submit":
        if is_sweep(sweep_dir):
            raise ConfigError(str(sweep_dir), "sweep_dir", f"{sweep_dir} holds a sweep already: continue it with "
                              f"`python -m launcher resume {sweep_dir}`, or give the sweep another name or sweep_dir")
        for m in chosen:
            check_fresh(m.cfg.run_dir)
    check_shared(chosen)
    for m in chosen:
        pipeline.checks(m.cfg, list(PREP_STAGES))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _write_sweep(spec, sweep_dir, members, source)
    if chosen[0].cfg.cluster == "local":
        return run_local_members(sweep_dir, chosen, kind)
    if chosen[0].cfg.cluster != "slurm":
        raise ConfigError(source, "cluster", f"a sweep runs on cluster slurm or local, not {chosen[0].cfg.cluster!r}")
    from launcher.task import Task

    prep = submit_prep(chosen, sweep_dir, kind)
    after = ":".join(e["job_id"] for e in prep if e["job_id"]) or None
    for m in chosen:
        save_config(m.cfg, Path(m.cfg.run_dir) / "config.yaml")
    executor = make_executor(chosen[0].cfg, sweep_dir, after, array=True)
    executor.update_parameters(job_name=spec.name)
    with clean_submit_env():
        with executor.batch():
            jobs = [executor.submit(Task(m.cfg)) for m in chosen]
    ids = {m.name: str(j.job_id) for m, j in zip(chosen, jobs)}
    for m in chosen:
        runs.record_job(m.cfg.run_dir, kind, ids[m.name], "slurm", folder=str(sweep_dir / "slurm"), sweep=str(sweep_dir))
    _record_members(sweep_dir, ids, {m.name: i for i, m in enumerate(chosen)})
    record = {"type": kind, "time": round(time.time(), 3), "members": ids, "prep": prep, "after": after, "sweep_dir": str(sweep_dir)}
    append_jsonl(sweep_dir / SUBMISSIONS, record)
    logger.info("%s: sweep %s is array %s (%d members)", kind, spec.name, next(iter(ids.values())).split("_")[0], len(ids))
    return record


def run_local_members(sweep_dir: Path, members: list[Member], kind: str) -> dict[str, Any]:
    """Local sweeps: prep here, then each member through the local executor (array_parallelism at once)."""
    from launcher.local import run_local

    run_prep_here(members)
    parallel = max(1, members[0].cfg.slurm.array_parallelism)

    def one(m: Member) -> tuple[str, str]:
        summary = run_local(m.cfg, kind=kind)
        return m.name, summary.job_id

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        ids = dict(pool.map(one, members))
    _record_members(sweep_dir, ids, {m.name: m.index for m in members})
    record = {"type": kind, "time": round(time.time(), 3), "members": ids, "prep": [], "cluster": "local", "sweep_dir": str(sweep_dir)}
    append_jsonl(sweep_dir / SUBMISSIONS, record)
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
    if cfg.cluster == "slurm":
        parallel = cfg.slurm.array_parallelism or len(members)
        lines.append(f"## job array of {len(members)} tasks, {min(parallel, len(members))} at once"
                     + (" (after the shared stages succeed)" if any(groups.values()) else ""))
        after = ":".join(f"<job id of {stage} {group}>" for stage in PREP_STAGES for group, c in groups[stage]
                         if not stages.state(c, stage).complete) or None
        lines.append(render_sbatch(replace(cfg, name=spec.name), sweep_dir, after, array_size=len(members)))
    else:
        lines.append(f"## {cfg.cluster}: the members run on this machine, {max(1, cfg.slurm.array_parallelism)} at once")
    return "\n".join(lines)


# ---------------------------------------------------------------- status, cancel, resume


def status(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per member: job, state, outcome, step, last zero-shot top-1, why it stopped."""
    rows = []
    for name, run_dir in member_dirs(sweep_dir).items():
        row: dict[str, Any] = {"member": name, "run_dir": str(run_dir)}
        if not (run_dir / "config.yaml").is_file():
            row.update(job_id=None, state="NOT SUBMITTED", outcome="", step=0, total_steps=None, top1=None, last_stop="")
        else:
            s = runs.run_status(run_dir)
            row.update(job_id=s["job_id"], state=s["state"], outcome=s["outcome"], step=s["step"], total_steps=s["total_steps"],
                       top1=s["last_eval"].get("top1"), last_stop=s["last_stop"], attempts=s["attempt"])
        rows.append(row)
    return rows


def _active_ids(sweep_dir: Path) -> list[str]:
    ids = [r["job_id"] for r in status(sweep_dir) if r["job_id"] and runs.is_active(r["state"])]
    for sub in read_jsonl(sweep_dir / SUBMISSIONS):
        ids += [e["job_id"] for e in sub.get("prep", []) if e.get("job_id") and runs.is_active(runs.slurm_state(e["job_id"]))]
    return ids


def cancel(sweep_dir: str | Path) -> list[str]:
    """Cancel every queued or running member and shared stage of the sweep; their ids."""
    from launcher.submit import cancel as cancel_run

    sweep_dir = Path(sweep_dir)
    ids = []
    for row in status(sweep_dir):
        if row["job_id"] and runs.is_active(row["state"]):
            ids.append(cancel_run(row["run_dir"]))  # scancel ARRAY_TASK, or TERM to a local controller
    prep = [i for i in _active_ids(sweep_dir) if i not in ids]
    if prep:
        import subprocess

        subprocess.run(["scancel", *prep], check=True, capture_output=True, timeout=60)
        ids += prep
    append_jsonl(sweep_dir / SUBMISSIONS, {"type": "cancel", "time": round(time.time(), 3), "job_ids": ids})
    return ids


def spec_of(sweep_dir: str | Path) -> SweepSpec:
    from launcher.sweep_spec import MemberSpec

    data = read(sweep_dir)
    return SweepSpec(job=data["job"], name=data["name"], sweep_dir=str(sweep_dir), overrides=tuple(data["overrides"]),
                     members=tuple(MemberSpec(m["name"], tuple(m["overrides"])) for m in data["members"]),
                     paper=data.get("paper", ""))


def resume(sweep_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Submit again the members that have no result yet (finished and diverged ones stay), as a new array."""
    sweep_dir = Path(sweep_dir).resolve()
    active = _active_ids(sweep_dir)
    if active:
        raise ConfigError(str(sweep_dir), "sweep_dir", f"jobs {', '.join(active)} of this sweep are still queued or running: "
                          f"wait for them or `python -m launcher cancel {sweep_dir}` first")
    spec = spec_of(sweep_dir)
    if overrides:
        spec = replace(spec, overrides=spec.overrides + tuple(overrides))
    todo = [r["member"] for r in status(sweep_dir) if r["outcome"] == ""]
    if not todo:
        raise ConfigError(str(sweep_dir), "sweep_dir", "every member has its result: nothing to resume "
                          f"(`python -m launcher report {sweep_dir}` shows them)")
    _check_resumable(sweep_dir, todo, overrides or [])
    return submit(spec, str(sweep_dir / SWEEP), kind="resume", only=todo)


def _check_resumable(sweep_dir: Path, names: list[str], overrides: list[str]) -> None:
    from launcher.submit import resume_config

    dirs = member_dirs(sweep_dir)
    for name in names:
        if (dirs[name] / "config.yaml").is_file():
            resume_config(dirs[name], overrides)  # refuses schedule changes mid-run unless allowed


def member_ended(run_dir: str | Path) -> Path | None:
    """After a member ends: when every member of its sweep has its result, write the report; its path."""
    sweep_dir = sweep_of(run_dir)
    if sweep_dir is None:
        return None
    if any(r["outcome"] == "" for r in status(sweep_dir)):
        return None
    from launcher.report import write_report

    return write_report(sweep_dir)


__all__ = ["SWEEP", "cancel", "dry_run_text", "is_sweep", "member_dir", "member_dirs", "member_ended", "read",
           "resume", "status", "submit", "sweep_of", "tower_key"]
