"""`lit models prepare JOB.yaml [overrides]` (on a login node) and `lit models verify JOB.yaml [overrides]`.

Both take a sweep file too (jobs/sweeps/*.yaml, launcher.sweep_spec's format): then every member's towers, or
those of `--member NAME`; a text tower several members share is written once.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lit.cliargs import add_job
from lit.configlib import ConfigError, read_yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = sub.add_parser("prepare", help="download the towers the job names, check them, write them with sha256 sums")
    add_job(prep, required=True, help="the job file (its model section names the towers), or a sweep file")
    prep.add_argument("--member", action="append", default=[], help="of a sweep file: only this member (repeatable)")
    prep.add_argument("--cache-dir", default=None,
                      help="download cache of open_clip and huggingface_hub (default: huggingface_hub's, $HF_HUB_CACHE or "
                           "~/.cache/huggingface/hub); with HF_HUB_OFFLINE=1 nothing is downloaded")
    prep.add_argument("--force", action="store_true", help="replace existing files that were not written by lit models prepare")
    prep.add_argument("--images", type=int, default=4, help="generated images on which the features are compared (default 4)")
    ver = sub.add_parser("verify", help="check the prepared files against their sha256 sums (what the job's preflight does)")
    add_job(ver, required=True, help="the job file, or a sweep file (every member)")
    ver.add_argument("--member", action="append", default=[], help="of a sweep file: only this member (repeatable)")


def sweep_jobs(path: str, overrides: list[str], only: list[str]) -> list[tuple[str, str, list[str]]] | None:
    """(label, job file, overrides) of each member of the sweep file `path`; None when `path` is a job file.

    A sweep's grid is ignored unless it sweeps a model key (then each grid point would need its own towers).
    """
    data: dict[str, Any] = read_yaml(path)
    if "job" not in data:
        return None
    job = Path(str(data["job"]))
    job = job if job.is_absolute() else Path(path).parent / job
    grid = [k for k in (data.get("grid") or {}) if str(k).startswith("model.")]
    if grid:
        raise ConfigError(path, f"grid.{grid[0]}", "a grid over model keys: prepare each point's towers with the job file and "
                          "its overrides (lit models prepare JOB.yaml KEY=VALUE)")
    common = [str(o) for o in data.get("overrides") or []]
    members = [(str(m.get("name", "")), [str(o) for o in m.get("overrides") or []]) for m in data.get("members") or [{}]]
    unknown = sorted(set(only) - {name for name, _ in members})
    if unknown:
        raise ConfigError(path, "--member", f"{', '.join(unknown)}: not a member; the members: {', '.join(n for n, _ in members)}")
    return [(f"{path} --member {name}" if name else path, str(job), [*common, *own, *overrides])
            for name, own in members if not only or name in only]


def run(args: argparse.Namespace) -> int:
    from lit.log import logger

    try:
        members = sweep_jobs(args.job, list(args.overrides), list(args.member))
    except ConfigError as err:
        logger.error("models: %s", err)
        return 2
    if members is None:
        return _run_job(args, args.job, list(args.overrides))
    texts: set[tuple[str, str]] = set()
    status = 0
    for label, job, overrides in members:
        from lit.config import load_config
        from lit.models.verify import raw_model_config, text_folder_value

        logger.info("models: %s", label)
        if args.action == "prepare":
            cfg = load_config(job, overrides)
            text = (cfg.model.text_pretrained, text_folder_value(raw_model_config(cfg)))
            if cfg.model.text_pretrained and text in texts:
                overrides = [*overrides, "model.text_pretrained="]  # written for an earlier member: the image tower only
            texts.add(text)
        status = max(status, _run_job(args, job, overrides, label))
    return status


def _run_job(args: argparse.Namespace, job_file: str, job_overrides: list[str], label: str = "") -> int:
    from lit.config import load_config
    from lit.log import console, logger

    cfg = load_config(job_file, job_overrides)
    if args.action == "verify":
        from lit.doctor import ok, report
        from lit.models.verify import model_checks

        checks = model_checks(cfg)
        console.print(report(checks))
        if not checks:
            logger.info("models: the job loads no local tower files (pkg: towers or none)")
        return 0 if ok(checks) else 1
    if args.images < 1:
        logger.error("models: --images must be >= 1, got %d", args.images)
        return 2
    from rich.markup import escape
    from rich.table import Table

    from lit.models.prepare import prepare_models

    job = label or (job_file + (" " + " ".join(job_overrides) if job_overrides else ""))
    prepared = prepare_models(cfg, job=job, cache_dir=args.cache_dir, force=args.force, images=args.images)
    table = Table(title=f"lit models prepare {escape(job)}")
    for column in ("tower", "source", "written to", "files", "size", "sha256", "sums file"):
        table.add_column(column, overflow="fold")
    for w in prepared.written:
        table.add_row(w.tower, escape(w.source), escape(str(w.path)), str(w.files), f"{w.size / 2**20:.1f} MiB",
                      w.sha256 if w.tower == "image" else f"{w.sha256} (of {w.sums.name})", escape(w.sums.name))
    console.print(table)
    if prepared.feature_diff is not None:
        library = "timm" if cfg.model.image_pretrained.startswith("timm:") else "open_clip"
        console.print(f"image features equal {library}'s own pretrained model on {prepared.images} generated images "
                      f"(max |difference| {prepared.feature_diff:.2e}); image tower fingerprint {prepared.fingerprint[:12]}")
    preflight = f"lit models verify {job}" if label else f"lit doctor {job}, or lit models verify"
    console.print(f"the job's preflight ({escape(preflight)}) checks these sums; "
                  "bind the folders into the container (container.binds)")
    return 0
