"""`python -m launcher sweep JOB.yaml key=a,b,c ...` or `python -m launcher sweep SWEEP.yaml [overrides]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(soft_wrap=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="JOB_OR_SWEEP.yaml", help="a job YAML (then give key=a,b,c axes) or a sweep file")
    parser.add_argument("overrides", nargs="*", help="section.key=value for every member; key=a,b,c: one member per value")
    parser.add_argument("--name", default="", help="name of the sweep (default: the file's name and the swept keys)")
    parser.add_argument("--sweep-dir", default="", help="folder of the sweep (default: runs/sweeps/NAME)")
    parser.add_argument("--paper", default="", choices=["", "warmup"], help="put the paper's published figures beside the report")
    parser.add_argument("--dry-run", action="store_true", help="print the members, their overrides and the array; submit nothing")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from launcher import sweep
    from launcher.sweep_spec import from_cli, is_sweep_file, load_spec

    if is_sweep_file(args.file):
        spec, _ = load_spec(args.file, args.overrides)
        spec = replace(spec, name=args.name or spec.name, sweep_dir=args.sweep_dir or spec.sweep_dir, paper=args.paper or spec.paper)
    else:
        spec = from_cli(args.file, args.overrides, args.name, args.sweep_dir, args.paper)
    if args.dry_run:
        print(sweep.dry_run_text(spec, args.file), flush=True)  # verbatim: never wrapped
        return 0
    record = sweep.submit(spec, args.file)
    for name, job_id in record["members"].items():
        out.print(f"  {name}: job [bold]{job_id}[/bold]")
    for entry in record.get("prep", []):
        out.print(f"  shared {entry['stage']} ({entry['group']}): " + ("skipped" if entry["skipped"] else f"job {entry['job_id']}"))
    sweep_dir = record["sweep_dir"]
    out.print(f"  status: python -m launcher status {escape(str(sweep_dir))}")
    out.print(f"  report: python -m launcher report {escape(str(sweep_dir))}")
    return 0


def sweep_status(sweep_dir: Path, as_json: bool) -> int:
    """`python -m launcher status SWEEP_DIR`: one row per member."""
    from launcher import sweep

    rows = sweep.status(sweep_dir)
    if as_json:
        print(json.dumps({"sweep": str(sweep_dir), "members": rows}, indent=2))
        return 0
    table = Table(title=f"sweep {sweep.read(sweep_dir)['name']}")
    for column in ("member", "job", "state", "outcome", "step", "top-1", "last stop"):
        table.add_column(column, overflow="fold")
    for r in rows:
        step = f"{r['step']}" + (f" / {r['total_steps']}" if r.get("total_steps") else "")
        table.add_row(r["member"], str(r["job_id"] or "-"), r["state"], r["outcome"] or "-", step,
                      "-" if r["top1"] is None else f"{r['top1']:.2f}", escape(str(r["last_stop"] or "-")))
    out.print(table)
    out.print(f"one member: python -m launcher status {escape(str(sweep_dir))}/MEMBER; "
              f"report: python -m launcher report {escape(str(sweep_dir))}", soft_wrap=True)
    return 0
