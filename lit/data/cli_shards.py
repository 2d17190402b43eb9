"""`lit shards ROOT --split train --out DIR`: captioned webdataset shards of a split (resumable)."""

from __future__ import annotations

import argparse
import time

from rich.table import Table

from lit.config import RECIPES, load_config, with_overrides
from lit.data.shards import build_shards
from lit.log import console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", help="dataset root in the official layout (default: the config's data.root)")
    parser.add_argument("--split", default="train", help="annotation file ROOT/SPLIT.json (default: train)")
    parser.add_argument("--out", help="output folder (default: the config's data.train_shards or data.val_shards)")
    parser.add_argument("--config", help="job YAML whose `shards` and `captions` sections apply (flags override them)")
    parser.add_argument("--resize", type=int, help="resize so the short side is N pixels (0: keep the original bytes)")
    parser.add_argument("--samples-per-shard", type=int, help="most samples in one shard")
    parser.add_argument("--max-bytes", type=int, help="most bytes in one shard")
    parser.add_argument("--workers", type=int, help="processes writing shards in parallel")
    parser.add_argument("--seed", type=int, help="seed of the sample shuffle and of `mixed` captions")
    parser.add_argument("--recipe", choices=RECIPES, help="caption recipe")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the annotation file's order")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (batch jobs)")


def run(args: argparse.Namespace) -> int:
    flags = {"shards.resize": args.resize, "shards.samples_per_shard": args.samples_per_shard,
             "shards.max_bytes": args.max_bytes, "shards.workers": args.workers, "shards.seed": args.seed,
             "captions.recipe": args.recipe, "shards.shuffle": False if args.no_shuffle else None}
    cfg = with_overrides(load_config(args.config), [f"{k}={v}" for k, v in flags.items() if v is not None])
    root = args.root or cfg.data.root
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
