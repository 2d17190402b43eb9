"""`lit shards [JOB.yaml] [section.key=value ...] --split train [--out DIR]`: captioned webdataset shards (resumable)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.table import Table

from lit.cliargs import add_job, add_progress, add_renamed, job_and_overrides
from lit.config import load_config
from lit.data.shards import build_shards
from lit.log import console, logger

RENAMED = {"--resize": ("shards.resize", int), "--samples-per-shard": ("shards.samples_per_shard", int),
           "--max-bytes": ("shards.max_bytes", int), "--workers": ("shards.workers", int), "--seed": ("shards.seed", int),
           "--recipe": ("captions.recipe", str)}
"""Flags of earlier releases that mirror config keys: still read, as the overrides they stand for."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job(parser, help="job YAML whose data.root, shards and captions sections apply (default: the embedded demo job), "
                         "then section.key=value overrides (e.g. data.root=/scratch/inat21 shards.workers=8)")
    parser.add_argument("--split", default="train", help="annotation file DATA_ROOT/SPLIT.json (default: train)")
    parser.add_argument("--out", help="output folder (default: the config's data.train_shards or data.val_shards)")
    add_progress(parser)
    for flag, (key, kind) in RENAMED.items():
        add_renamed(parser, flag, f"the override {key}=...", dest=key.replace(".", "__"), type=kind)
    add_renamed(parser, "--no-shuffle", "the override shards.shuffle=false", dest="shards__shuffle", nargs=0, const=False)


def run(args: argparse.Namespace) -> int:
    roots = []
    if args.job is not None and Path(args.job).is_dir():  # the dataset root as the first positional (earlier releases)
        logger.warning("lit shards ROOT is renamed: give the job file first and the root as data.root=%s", args.job)
        roots, args.job = [f"data.root={args.job}"], None
    job, overrides = job_and_overrides(args)
    overrides = [*roots, *overrides]
    renamed = [f"{key.replace('__', '.')}={value}" for key, value in vars(args).items() if "__" in key]
    cfg = load_config(job, [*renamed, *overrides])
    root = cfg.data.root
    out = args.out or (cfg.data.val_shards if args.split == "val" else cfg.data.train_shards)
    start = time.perf_counter()
    manifest = build_shards(root, args.split, out, cfg.shards, cfg.captions, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    totals = manifest["totals"]
    table = Table(title=f"{args.split} shards in {out}")
    for name in ("shards", "samples", "classes", "skipped", "MB", "images/s"):
        table.add_column(name, justify="right")
    table.add_row(str(totals["shards"]), f"{totals['samples']:,}", str(manifest["num_classes"]), str(totals["skipped"]),
                  f"{totals['bytes'] / 1e6:,.1f}", f"{totals['samples'] / max(elapsed, 1e-9):,.0f}")
    console.print(table)
    if manifest["skipped"]:
        console.print(f"[yellow]{len(manifest['skipped'])} images skipped[/yellow]; reasons in {out}/manifest.json, e.g. "
                      f"{manifest['skipped'][0]['file_name']}: {manifest['skipped'][0]['reason']}")
    return 0
