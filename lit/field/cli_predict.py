"""`lit predict RUN_OR_EXPORT IMAGE... [--out predictions.csv]`: species of many photos.

RUN_OR_EXPORT is a run folder or checkpoint file (torch), or an ONNX export folder (onnxruntime
alone: no torch is imported). IMAGE is an image file, a folder (searched recursively for image types) or a .txt/.lst file
of paths. Images go in batches (`--batch-size`) through DataLoader workers (`--workers`),
with the EXIF orientation applied. An unreadable or non-image file, or a link to a missing
one, is skipped, counted and listed in the summary, never stopping the others; the exit code is 0 when every image was
predicted, 1 when some were skipped, 2 on a usage error. `--subset` restricts the ranked
classes; `--min-confidence P` makes the answer the deepest rank with probability >= P (else
`unknown`), with the temperature `lit calibrate` stored. With a checkpoint, the class embeddings are built on
the first call and kept under RUN/eval/classifiers (lit.eval.classifier_cache).

Where and when: `--lat/--lon` and `--date` apply to every image and win over its EXIF field by
field (a flag's position over the photo's GPS, `--date` over its time of capture); what no flag
gives comes from EXIF, else the answer is the image's alone. With the model's location prior
(`lit prior`), a located photo's answer is weighed by it and its row also holds the image-only
answer; the summary counts images by where their place came from, image-only ones and malformed
EXIF GPS (answered image-only).
"""

from __future__ import annotations

import argparse
import json
import os
from contextlib import nullcontext
from typing import TYPE_CHECKING

from rich.console import Console

from lit.cliargs import add_progress, add_renamed
from lit.data.inat import RANKS
from lit.errors import UsageError

if TYPE_CHECKING:
    from lit.field.scoring import Prediction


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="RUN_OR_EXPORT IMAGE",
                        help="the model (a run folder or checkpoint file: torch; an ONNX export folder from `lit export "
                             "--onnx`: onnxruntime only, no torch), then image files, folders (recursive, by image type) "
                             "or .txt/.lst files of paths")
    parser.add_argument("-k", "--top", type=int, default=5, help="how many guesses per image")
    parser.add_argument("--rank", choices=RANKS, default="species",
                        help="rank of the top-k list: probabilities are summed up the tree")
    parser.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                        help="the answer is the deepest rank whose probability is >= P, else `unknown` (default 0: the top species)")
    parser.add_argument("--subset", action="append", default=[], metavar="RANK=NAME[,NAME]|CSV",
                        help="rank only these classes: e.g. family=Felidae, supercategory=Birds, or a CSV of allowed taxa "
                             "at any rank; repeat to allow several")
    parser.add_argument("--out", help="write one row per image to this .csv or .jsonl file (then only a summary is printed)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="image decoding workers (0: none)")
    parser.add_argument("--categories", help="candidate classes: categories.json, a split JSON or the official CSV "
                                             "(default: the checkpoint config's validation categories)")
    parser.add_argument("--templates", help="comma-separated template sets (default: the config's eval.templates)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of tables")
    parser.add_argument("--lat", metavar="DEG", help="latitude of every photo in decimal degrees (-90..90; with --lon), "
                                                     "over their EXIF GPS: weighs answers by the location prior")
    parser.add_argument("--lon", metavar="DEG", help="longitude of every photo in decimal degrees (-180..180; with --lat)")
    parser.add_argument("--date", metavar="YYYY-MM-DD", help="date every photo was taken, over their EXIF time of capture")
    add_progress(parser, renamed_quiet=True)
    add_renamed(parser, "--checkpoint", "the model as the first positional (RUN_OR_EXPORT)", dest="checkpoint")
    add_renamed(parser, "--model", "the model as the first positional (RUN_OR_EXPORT)", dest="model")


def model_and_images(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The model and the images: the first positional and the rest (or every positional after the older --checkpoint/--model)."""
    named = [v for v in (getattr(args, "checkpoint", None), getattr(args, "model", None)) if v]
    if len(named) > 1:
        raise UsageError("--checkpoint/--model", "give one model")
    if named:
        return named[0], list(args.inputs)
    if len(args.inputs) < 2:
        raise UsageError("IMAGE", f"name the model, then the images: lit predict RUN_OR_EXPORT IMAGE... (got {args.inputs})")
    return args.inputs[0], list(args.inputs[1:])


def run(args: argparse.Namespace) -> int:
    from lit.field.classifier import Classifier
    from lit.field.exif import given_place
    from lit.field.images import discover
    from lit.field.results import Tally, check_out, prediction_table, print_places, print_summary, row_writer, write_skipped
    from lit.log import console as err_console

    if args.top < 1:
        raise UsageError("--top", f"must be >= 1, got {args.top}")
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError("--batch-size/--workers", f"need a batch size >= 1 and workers >= 0, got {args.batch_size}, {args.workers}")
    if args.out:
        check_out(args.out)
    place = given_place(args.lat, args.lon, args.date, "flags")
    target, images = model_and_images(args)
    paths, skipped = discover(images)
    if not paths and not skipped:
        raise UsageError("IMAGE", f"no image files in {', '.join(images)}")
    templates = None
    if args.templates:
        from lit.eval.templates import parse_template_list

        templates = parse_template_list(args.templates)
    classifier = Classifier.load(target, device=args.device, categories=args.categories, templates=templates)
    scorer = classifier.scorer(top=args.top, rank=args.rank, subset=args.subset, min_confidence=args.min_confidence)
    progress = not args.no_progress and len(paths) > args.batch_size
    tally, out = Tally(), Console()

    def show(rows: list[Prediction]) -> None:
        for p in rows:
            if args.json:
                print(json.dumps(p.to_json(), ensure_ascii=False))
            else:
                out.print(prediction_table(p))

    # Rows are written (or printed) and counted batch by batch; none is kept (keep=False).
    with row_writer(args.out, args.top) if args.out else nullcontext() as writer:
        sink = writer.write if writer is not None else show

        def take(rows: list[Prediction]) -> None:
            sink(rows)
            tally.add(rows)

        _, bad = classifier.predict_files(paths, scorer, place=place, batch_size=args.batch_size, workers=args.workers,
                                          on_rows=take, keep=False, console=err_console, progress=progress)
    skipped += bad
    print_summary(tally.predicted, skipped, err_console)
    print_places(tally, err_console)
    if args.out:
        err_console.print(f"{tally.predicted} row(s) → {args.out}", soft_wrap=True, highlight=False)
        if skipped:
            err_console.print(f"skipped inputs → {write_skipped(args.out, skipped)}", soft_wrap=True, highlight=False)
    return 1 if skipped else 0
