"""`lit models prepare JOB.yaml [overrides]` (on a login node) and `lit models verify JOB.yaml [overrides]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = sub.add_parser("prepare", help="download the towers the job names, check them, write them with sha256 sums")
    prep.add_argument("config", metavar="JOB.yaml", help="the job file (its model section names the towers)")
    prep.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    prep.add_argument("--cache-dir", default=None,
                      help="download cache of open_clip and huggingface_hub (default: huggingface_hub's, $HF_HUB_CACHE or "
                           "~/.cache/huggingface/hub); with HF_HUB_OFFLINE=1 nothing is downloaded")
    prep.add_argument("--force", action="store_true", help="replace existing files that were not written by lit models prepare")
    prep.add_argument("--images", type=int, default=4, help="generated images on which the features are compared (default 4)")
    ver = sub.add_parser("verify", help="check the prepared files against their sha256 sums (what the job's preflight does)")
    ver.add_argument("config", metavar="JOB.yaml")
    ver.add_argument("overrides", nargs="*", help="config overrides section.key=value")


def run(args: argparse.Namespace) -> int:
    from lit.config import load_config
    from lit.log import console, logger

    cfg = load_config(args.config, args.overrides)
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

    job = args.config + (" " + " ".join(args.overrides) if args.overrides else "")
    prepared = prepare_models(cfg, job=job, cache_dir=args.cache_dir, force=args.force, images=args.images)
    table = Table(title=f"lit models prepare {escape(job)}")
    for column in ("tower", "source", "written to", "files", "size", "sha256", "sums file"):
        table.add_column(column, overflow="fold")
    for w in prepared.written:
        table.add_row(w.tower, escape(w.source), escape(str(w.path)), str(w.files), f"{w.size / 2**20:.1f} MiB",
                      w.sha256 if w.tower == "image" else f"{w.sha256} (of {w.sums.name})", escape(w.sums.name))
    console.print(table)
    if prepared.feature_diff is not None:
        console.print(f"image features equal open_clip's own pretrained model on {prepared.images} generated images "
                      f"(max |difference| {prepared.feature_diff:.2e}); image tower fingerprint {prepared.fingerprint[:12]}")
    console.print(f"the job's preflight (lit doctor --config {escape(job)}, or lit models verify) checks these sums; "
                  "bind the folders into the container (container.binds)")
    return 0
