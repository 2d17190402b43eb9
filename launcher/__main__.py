"""`python -m launcher`: submit and follow LiT runs (SLURM or local) and sweeps; the demo and the ablation.

Options and positionals (`section.key=value` overrides included) may come in any order.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from launcher import clusters, pipeline, spec, sweep
from launcher.cli_status import show as show_status
from launcher.local import run_local
from launcher.preflight import preflight
from launcher.rundir import RunDir
from launcher.submit import cancel, check_fresh, resume_config, run_debug, submit
from launcher.submitit_api import FailedSubmissionError, UncompletedJobError
from launcher.sweepdir import SweepDir
from lit.cli import guarded, parse_intermixed, would_submit
from lit.cliargs import OVERRIDES_HELP, add_job
from lit.config import STAGES, Config, load_config
from lit.errors import UsageError, UserError
from lit.log import console, setup_logging

out = Console(soft_wrap=True)  # stdout: what the command prints; logs go to stderr (lit.log.console)


def build_parser() -> argparse.ArgumentParser:
    """Every command; a plugin (PLUGINS) is a stub for --help: its module adds its arguments when it runs."""
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("submit", help="submit a job YAML (section.key=value overrides)")
    add_job(p, required=True)
    p.add_argument("--dry-run", action="store_true",
                   help="print the sbatch scripts and each task's command, run the preflight a submission runs; submit nothing")
    p.add_argument("--preempt-at-step", type=int, default=None, metavar="N",
                   help="local runs: send the preemption signal once step N is trained (it resumes)")
    p.add_argument("--stages", default=None, metavar="A,B",
                   help=f"run these pipeline stages (of {', '.join(STAGES)}) instead of pipeline.stages")
    p = sub.add_parser("status", help="SLURM state, attempt, last step and metrics of a run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p = sub.add_parser("resume", help="resubmit a stopped, failed or cancelled run from its checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help=OVERRIDES_HELP)
    p.add_argument("--dry-run", action="store_true", help="run every check of the resume and show what it would submit")
    p = sub.add_parser("cancel", help="cancel the run's job")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p = sub.add_parser("logs", help="print a task's log (stdout and stderr)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--rank", type=int, default=0, help="global rank of the task (default 0)")
    p.add_argument("--stage", choices=list(STAGES), default=None,
                   help="a pipeline stage's task (default: the training)")
    p.add_argument("--tail", type=int, default=200, metavar="N", help="last N lines of each file (0: all)")
    for name, (_, help_text) in PLUGINS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# ---------------------------------------------------------------- commands


def cmd_submit(args: argparse.Namespace) -> int:
    cfg = load_config(args.job, args.overrides)
    if pipeline.chosen_stages(cfg, args.stages) != ["train"]:
        return submit_pipeline(cfg, args)
    if args.dry_run:
        cfg = spec.prepare(cfg)
        dry_run(cfg)
        return would_submit(out, lambda: _fresh_preflight(cfg))
    return start(cfg, fresh=True, preempt_at_step=args.preempt_at_step)


def _fresh_preflight(cfg: Config) -> None:
    check_fresh(cfg.run_dir)
    preflight(cfg)


def submit_pipeline(cfg: Config, args: argparse.Namespace) -> int:
    if args.dry_run:
        print(pipeline.dry_run_text(cfg, args.stages), flush=True)  # verbatim: never wrapped
        prepared = spec.prepare(cfg)
        return would_submit(out, lambda: pipeline.checks(prepared, pipeline.chosen_stages(prepared, args.stages)))
    chain = pipeline.submit(cfg, args.stages)
    print_chain(chain, spec.prepare(cfg).run_dir)
    return 0


def print_chain(chain: list[dict[str, Any]], run_dir: str) -> None:
    for entry in chain:
        what = f"skipped ({entry['detail']})" if entry["skipped"] else f"job [bold]{entry['job_id']}[/bold]"
        out.print(f"  {entry['stage']}: {what}", soft_wrap=True)
    out.print(f"  status: python -m launcher status {escape(run_dir)}")


def start(cfg: Config, fresh: bool, preempt_at_step: int | None = None) -> int:
    kind = clusters.of(cfg)
    if preempt_at_step is not None and not kind.follows:
        raise UsageError("--preempt-at-step", f"is for local runs; this job's cluster is {cfg.cluster!r}")
    if kind.in_process:
        code = run_debug(cfg, fresh=fresh)
        out.print(f"{cfg.cluster} run {'finished' if code == 0 else 'stopped with a checkpoint'} (exit {code})")
        return code
    if kind.follows:
        if fresh:
            check_fresh(spec.prepare(cfg).run_dir)
        summary = run_local(cfg, preempt_at_step=preempt_at_step, kind="submit" if fresh else "resume")
        out.print(f"local job {summary.job_id}: {summary.attempts} attempt(s), step {summary.final_step}, "
                  f"{'finished' if summary.finished else 'not finished'}" + (f"\n{summary.error}" if summary.error else ""))
        return 0 if summary.finished and not summary.error else 1
    sub = submit(cfg, kind="submit" if fresh else "resume", fresh=fresh)
    out.print(f"submitted job [bold]{sub.job_id}[/bold] for run {escape(sub.run_dir)}")
    out.print(f"  status: python -m launcher status {escape(sub.run_dir)}")
    out.print(f"  logs:   python -m launcher logs {escape(sub.run_dir)} --rank 0")
    return 0


def dry_run(cfg: Config) -> int:
    kind = clusters.of(cfg)
    if kind.scheduled:
        out.rule("sbatch script (what submitit submits)")
        print(spec.render_sbatch(cfg), flush=True)  # verbatim: never wrapped
    else:
        out.print(f"[bold]{cfg.cluster}[/bold] run: {spec.world_size(cfg)} process(es) on this machine")
    out.rule("each task runs")
    print(spec.task_command(cfg), flush=True)
    out.print("  → launcher.task.Task(config) → lit.train.run.run(config), resuming from RUN_DIR/checkpoints",
              soft_wrap=True)
    for key, value in kind.rendezvous_notes(cfg).items():
        out.print(f"  {key}: {escape(value)}", soft_wrap=True)
    table = Table(title="tasks")
    for column in ("rank", "node", "local rank", "device"):
        table.add_column(column)
    for line in kind.layout(cfg):
        table.add_row(str(line.rank), str(line.node), str(line.local_rank), line.device)
    out.print(table)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    if SweepDir.is_sweep(run_dir):
        record = sweep.resume(run_dir, args.overrides, dry_run=args.dry_run)
        out.print(f"{'would resume' if args.dry_run else 'resumed'} {len(record['members'])} member(s): "
                  + ", ".join(f"{k} ({v})" for k, v in record["members"].items()))
        return 0
    if RunDir(run_dir).is_pipeline():
        print_chain(pipeline.resume(run_dir, args.overrides, dry_run=args.dry_run), str(run_dir))
        return 0
    cfg = resume_config(run_dir, args.overrides)
    if args.dry_run:
        cfg = spec.prepare(cfg)
        dry_run(cfg)
        return would_submit(out, lambda: preflight(cfg))
    return start(cfg, fresh=False)


def cmd_cancel(args: argparse.Namespace) -> int:
    if SweepDir.is_sweep(Path(args.run_dir).resolve()):
        ids = sweep.cancel(Path(args.run_dir).resolve())
        out.print(f"cancelled jobs {', '.join(ids) or '(none was queued or running)'}; "
                  f"`python -m launcher resume {escape(args.run_dir)}` goes on with the members that have no result", soft_wrap=True)
        return 0
    if RunDir(Path(args.run_dir).resolve()).is_pipeline():
        ids = pipeline.cancel(Path(args.run_dir).resolve())
        out.print(f"cancelled jobs {', '.join(ids) or '(none was queued or running)'}; "
                  f"`python -m launcher resume {escape(args.run_dir)}` goes on from the first unfinished stage", soft_wrap=True)
        return 0

    job_id = cancel(Path(args.run_dir).resolve())
    out.print(f"cancelled job {job_id}; `python -m launcher resume {escape(args.run_dir)}` continues the run", soft_wrap=True)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    run = RunDir(Path(args.run_dir).resolve())
    if args.stage:
        run = run.stage(args.stage)
    paths = run.log_files(args.rank)
    found = False
    for path in paths:
        if not path.is_file():
            continue
        found = True
        out.rule(escape(str(path)))
        with open(path, errors="replace") as f:
            lines = deque(f, maxlen=args.tail) if args.tail > 0 else list(f)
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
    if not found:
        out.print(f"no log yet for rank {args.rank}: {escape(str(paths[0]))} (the job may still be pending)", soft_wrap=True)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return show_status(args.run_dir, args.json)


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "resume": cmd_resume, "cancel": cmd_cancel, "logs": cmd_logs}
PLUGINS = {
    "demo": ("launcher.demo", "the end-to-end demo (`make demo`)"),
    "sweep": ("launcher.cli_sweep", "submit a sweep: a job YAML with key=a,b,c axes, or a sweep file"),
    "ablation": ("launcher.ablation", "the sweeps in miniature, locally (`make ablation`, `--grid`)"),
    "report": ("launcher.report", "a sweep's members side by side: report.md, report.json, plots"),
}
"""Commands implemented elsewhere: a module with `add_arguments(parser)` and `run(args) -> int`."""


def _plugin(argv: list[str]) -> int | None:
    """Run a plugin command when argv names one whose module is installed; None otherwise."""
    if not argv or argv[0] not in PLUGINS:
        return None
    name, (module_name, help_text) = argv[0], PLUGINS[argv[0]]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        console.print(f"[red]`{name}` is not available: {module_name} is not installed[/red]", soft_wrap=True)
        return 2
    parser = argparse.ArgumentParser(prog=f"python -m launcher {name}", description=help_text)
    module.add_arguments(parser)
    args = parse_intermixed(parser, argv[1:])
    setup_logging()
    return int(module.run(args) or 0)


class SubmissionFailed(UserError):
    """sbatch (through submitit) refused the job: its message says why."""

    label = "submission failed"
    exit_code = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Every command through lit.cli.guarded: the same errors, messages and exit codes as `lit`."""
    return guarded(lambda: _dispatch(list(sys.argv[1:] if argv is None else argv)))


def _dispatch(argv: list[str]) -> int:
    try:
        plugged = _plugin(argv)
        if plugged is not None:
            return plugged
        args = parse_intermixed(build_parser(), argv)
        setup_logging()
        return COMMANDS[args.command](args)
    except (UncompletedJobError, FailedSubmissionError) as err:  # sbatch refused the job
        raise SubmissionFailed(str(err).strip()) from err


if __name__ == "__main__":
    raise SystemExit(main())
