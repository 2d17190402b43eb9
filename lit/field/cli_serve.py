"""`lit serve RUN_OR_EXPORT [--port 8000]`: the web page and `POST /predict` on uvicorn, on 127.0.0.1 unless told otherwise.

`POST /predict` takes the photo in the multipart field `file` and, optionally, where and when it was
taken in `lat`, `lon` and `date` (else the photo's EXIF), which weigh the answer by the run's
location prior when it has one (lit.field.app).

The server's memory follows what its requests hold (lit.field.app): blocks of 1 MiB and more are
mapped and unmapped one by one, so that a decoded image freed in one worker thread is given back
at once rather than kept in that thread's glibc arena (8 uploads of 60 MP added 1.4 GB without it,
470 MB with it, with 2 decode slots).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
from typing import TYPE_CHECKING

from lit.cliargs import RUN_HELP, add_run
from lit.errors import UsageError

if TYPE_CHECKING:  # FastAPI only when serving: `lit --help` stays fast
    from lit.field.app import Service


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser, metavar="RUN_OR_EXPORT", help=f"{RUN_HELP} (torch), or an ONNX export folder (onnxruntime only)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("-k", "--top", type=int, default=5, help="how many guesses per photo")
    parser.add_argument("--min-confidence", type=float, default=0.5, metavar="P",
                        help="the answer is the deepest rank with probability >= P, else `unknown`")
    parser.add_argument("--subset", action="append", default=[], metavar="RANK=NAME[,NAME]|CSV",
                        help="rank only these classes (as `lit predict --subset`)")
    parser.add_argument("--max-mb", type=float, default=20.0, help="largest upload in MiB")
    parser.add_argument("--max-megapixels", type=float, default=64.0, help="largest image in megapixels (decompression bombs)")
    parser.add_argument("--decode-slots", type=int, default=2, metavar="N",
                        help="requests that may hold a decoded image at once (each up to 4 bytes a pixel); the others wait")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def build_service(args: argparse.Namespace) -> Service:
    """The Service of the arguments (lit.field.app)."""
    from lit.field.app import Service
    from lit.field.classifier import Classifier

    if args.decode_slots < 1:
        raise UsageError("--decode-slots", f"must be >= 1, got {args.decode_slots}")
    classifier = Classifier.load(args.run, device=args.device)
    scorer = classifier.scorer(top=args.top, subset=args.subset, min_confidence=args.min_confidence)
    return Service(classifier.predictor, scorer, max_bytes=int(args.max_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
                   decode_slots=args.decode_slots)


def prior_line(service: Service) -> str:
    """Whether answers are weighed by where and when (form fields `lat`, `lon`, `date`, else the upload's EXIF)."""
    if service.has_prior:
        return (f"answers are weighed by the location prior (weight {service.scorer.prior_weight:g}) where the form's "
                "`lat`/`lon` or the photo's EXIF GPS place it")
    return "the model has no location prior: places are recorded but change nothing"


MMAP_THRESHOLD = 1 << 20
"""Allocations from this size on get their own mapping, returned to the system when freed."""


def give_back_freed_memory() -> str | None:
    """Set glibc's mmap threshold to MMAP_THRESHOLD (fixed: glibc would raise it after each free); why not, or None."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return f"no glibc mallopt in {name or 'this C library'}: freed images may stay in the process's memory"
    return None if mallopt(-3, MMAP_THRESHOLD) == 1 else "mallopt(M_MMAP_THRESHOLD) failed"  # -3: M_MMAP_THRESHOLD


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from lit.field.app import create_app
    from lit.log import console

    if not 0 < args.port < 65536:
        raise UsageError("--port", f"must be 1-65535, got {args.port}")
    problem = give_back_freed_memory()
    if problem:
        console.print(f"[yellow]lit serve: {problem}[/yellow]")
    service = build_service(args)
    console.print(f"lit serve: {service.predictor.describe()} on http://{args.host}:{args.port}/ (POST /predict, field `file`)")
    console.print(f"lit serve: {prior_line(service)}", highlight=False)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")
    return 0
