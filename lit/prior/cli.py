"""`lit prior JOB.yaml [section.key=value ...]`: train the job's location prior; `--map SPECIES` draws one species' range."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from rich.console import Console

from lit import signals
from lit.cliargs import add_job, add_progress, job_and_overrides
from lit.config import load_config
from lit.data.inat import load_split
from lit.data.places import day_of_year
from lit.errors import UsageError
from lit.prior.map import find_species, write_map
from lit.prior.store import PRIOR_FILE, Prior, prior_dir
from lit.prior.train import train_prior


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job(parser)
    parser.add_argument("--map", metavar="SPECIES", help="write a PNG world map of this species' predicted presence "
                        "(scientific or common name, or category id) with its training observations; trains first if needed")
    parser.add_argument("--map-out", metavar="PNG", help="where the map goes (default: PRIOR_DIR/map-<species>.png)")
    parser.add_argument("--map-date", metavar="YYYY-MM-DD", help="the map for this day of the year (default: any time of year)")
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(*job_and_overrides(args))
    day = math.nan
    if args.map_date:
        parsed = day_of_year(args.map_date)
        if parsed is None:
            raise UsageError("--map-date", f"{args.map_date!r} is not a date: give YYYY-MM-DD")
        day = parsed
    console = Console()
    previous = signals.install()
    try:
        summary = train_prior(cfg, should_stop=signals.requested, progress=not args.no_progress)
    finally:
        signals.restore(previous)
    if summary.get("stopped"):
        console.print(f"prior: stopped ({signals.reason()}) at epoch {summary['epoch']}, step {summary['step']}; "
                      "the same command goes on from there")
        return signals.EXIT_PREEMPTED
    path = prior_dir(cfg) / PRIOR_FILE
    console.print(f"prior: {path} ({summary.get('observations', '?')} located images; "
                  f"{summary.get('skipped', 0)} skipped without usable coordinates)")
    if not args.map:
        return 0
    prior = Prior.load(path)
    split = load_split(cfg.data.root, cfg.prior.split)
    column = find_species(prior, args.map, {c.id: c.common_name for c in split.categories})
    cid = prior.category_ids[column]
    seen = np.array([img.place.row()[:2] for img in split.images if img.category_id == cid and img.place.located]).reshape(-1, 2)
    slug = prior.names[column].replace(" ", "_")
    out = Path(args.map_out) if args.map_out else prior_dir(cfg) / f"map-{slug}.png"
    write_map(prior, column, out, seen, day=day)
    console.print(f"map: {out} ({prior.names[column]}, {len(seen)} training observations)")
    return 0
