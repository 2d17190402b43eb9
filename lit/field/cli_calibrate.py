"""`lit calibrate RUN`: fit the prediction temperature on (a held-out part of) the validation set and store it with the run."""

from __future__ import annotations

import argparse

from lit.cliargs import add_progress, add_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    parser.add_argument("--fit-fraction", type=float, default=0.5,
                        help="share of the validation samples (by key hash) that fit T; the rest measure it")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add_progress(parser, renamed_quiet=True)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lit.field.calibrate import calibrate, report_rows

    cal, report = calibrate(args.run, args.fit_fraction, args.device, progress=not args.no_progress)
    table = Table(title=f"Temperature {cal.temperature:.4f}: fit on {cal.fit_samples}, measured on {cal.heldout_samples} "
                        "held-out validation images")
    for name in ("measure", "before (T=1)", "after"):
        table.add_column(name, justify="left" if name == "measure" else "right")
    for row in report_rows(cal):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"stored with the run → {report.parent.parent / 'calibration.json'}; report → {report / 'calibration.json'}, "
                  f"plot → {report / 'plots' / 'coverage.png'}")
    return 0
