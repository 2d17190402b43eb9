"""`python -m launcher sweep JOB.yaml key=a,b,c ...` or `python -m launcher sweep SWEEP.yaml [overrides]`."""

from __future__ import annotations

import argparse
from dataclasses import replace

from rich.console import Console
from rich.markup import escape

from launcher import sweep
from launcher.sweep_spec import from_cli, is_sweep_file, load_spec
from lit.cli import would_submit

out = Console(soft_wrap=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="JOB_OR_SWEEP.yaml", help="a job YAML (then give key=a,b,c axes) or a sweep file")
    parser.add_argument("overrides", nargs="*", help="section.key=value for every member; key=a,b,c: one member per value")
    parser.add_argument("--name", default="", help="name of the sweep (default: the file's name and the swept keys)")
    parser.add_argument("--sweep-dir", default="", help="folder of the sweep (default: runs/sweeps/NAME)")
    parser.add_argument("--paper", default="", choices=["", "warmup"], help="put the paper's published figures beside the report")
    parser.add_argument("--dry-run", action="store_true", help="print the members, their overrides and the array; submit nothing")


def run(args: argparse.Namespace) -> int:
    if is_sweep_file(args.file):
        spec, _ = load_spec(args.file, args.overrides)
        spec = replace(spec, name=args.name or spec.name, sweep_dir=args.sweep_dir or spec.sweep_dir, paper=args.paper or spec.paper)
    else:
        spec = from_cli(args.file, args.overrides, args.name, args.sweep_dir, args.paper)
    if args.dry_run:
        print(sweep.dry_run_text(spec, args.file), flush=True)  # verbatim: never wrapped
        return would_submit(out, lambda: sweep.checks(spec, args.file))
    record = sweep.submit(spec, args.file)
    for name, job_id in record["members"].items():
        out.print(f"  {name}: job [bold]{job_id}[/bold]")
    for entry in record.get("prep", []):
        out.print(f"  shared {entry['stage']} ({entry['group']}): " + ("skipped" if entry["skipped"] else f"job {entry['job_id']}"))
    sweep_dir = record["sweep_dir"]
    out.print(f"  status: python -m launcher status {escape(str(sweep_dir))}")
    out.print(f"  report: python -m launcher report {escape(str(sweep_dir))}")
    return 0
