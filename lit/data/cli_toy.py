"""`lit toy-inat OUT`: write the embedded toy dataset in the official iNat2021 layout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lit.data.toy import SPECIES, toy_image_count, write_toy_inat
from lit.data.toy_wide import write_wide_inat
from lit.log import console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="dataset root to write (train.json, val.json, ..., image folders)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every image (same seed, same bytes)")
    parser.add_argument("--train-per-class", type=int, default=40, help="train images per species")
    parser.add_argument("--val-per-class", type=int, default=10, help="val images per species")
    parser.add_argument("--test-per-class", type=int, default=2, help="public_test images per species (unlabelled)")
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--hard", action="store_true",
                        help="96 look-alike species (8 families x 3 genera x 4 species that differ by a small hue step) "
                             "instead of the 32 clearly drawn ones: a set where settings make a difference")
    parser.add_argument("--wide", type=int, default=0, metavar="N",
                        help="N classes at the paper's scale (10000: iNat2021's count) instead, for scale tests: the real "
                             "category table with --categories-csv, else a generated taxonomy of the same depth (no public_test)")
    parser.add_argument("--categories-csv", default=None, metavar="CSV",
                        help="with --wide: the iNat2021 category table (the official columns), its first N rows")


def run(args: argparse.Namespace) -> int:
    for name in ("train_per_class", "val_per_class", "test_per_class"):
        if getattr(args, name) < 0:
            console.print(f"[red]--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}[/red]")
            return 2
    if args.image_size < 16:
        console.print(f"[red]--image-size must be >= 16 pixels, got {args.image_size}[/red]")
        return 2
    if args.wide < 0 or (args.wide and args.hard) or (args.categories_csv and not args.wide):
        console.print("[red]--wide N takes N >= 1, not with --hard; --categories-csv goes with --wide[/red]")
        return 2
    if args.wide:
        classes = args.wide
        total = classes * (args.train_per_class + args.val_per_class)
    else:
        total = toy_image_count(args.train_per_class, args.val_per_class, args.test_per_class, args.hard)
        classes = total // max(1, args.train_per_class + args.val_per_class + args.test_per_class) if total else len(SPECIES)
    start = time.perf_counter()
    with Progress(TextColumn("[bold]drawing toy images"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("toy", total=total)
        if args.wide:
            root = write_wide_inat(Path(args.out), classes=classes, train_per_class=args.train_per_class,
                                   val_per_class=args.val_per_class, image_size=args.image_size, seed=args.seed,
                                   categories_csv=args.categories_csv, on_image=lambda: progress.advance(task))
        else:
            root = write_toy_inat(args.out, seed=args.seed, train_per_class=args.train_per_class,
                                  val_per_class=args.val_per_class, image_size=args.image_size,
                                  test_per_class=args.test_per_class, on_image=lambda: progress.advance(task), hard=args.hard)
    console.print(f"[green]wrote {total} images of {classes} species[/green] to {root} "
                  f"in {time.perf_counter() - start:.1f} s (train.json, train_mini.json, val.json"
                  + (")" if args.wide else ", public_test.json)"))
    return 0
