"""`python -m launcher`: submit and follow LiT runs (SLURM or local) and sweeps; the demo and the ablation.

Options and positionals (`section.key=value` overrides included) may come in any order.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from launcher import runs, spec, sweep
from launcher.submitit_api import FailedSubmissionError, UncompletedJobError
from lit.cli import parse_intermixed
from lit.config import Config, load_config
from lit.configlib import ConfigError
from lit.doctor import report
from lit.errors import UserError
from lit.log import console, setup_logging

out = Console(soft_wrap=True)  # stdout: what the command prints; logs go to stderr (lit.log.console)


def build_parser() -> argparse.ArgumentParser:
    """Every command; a plugin (PLUGINS) is a stub for --help: its module adds its arguments when it runs."""
    parser = argparse.ArgumentParser(prog="python -m launcher", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("submit", help="submit a job YAML (section.key=value overrides)")
    p.add_argument("job", metavar="JOB.yaml")
    p.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script and each task's command; submit nothing")
    p.add_argument("--preempt-at-step", type=int, default=None, metavar="N",
                   help="local runs: send the preemption signal once step N is trained (it resumes)")
    p.add_argument("--stages", default=None, metavar="A,B",
                   help="run these pipeline stages (of shards, embed, train, eval) instead of pipeline.stages")
    p = sub.add_parser("status", help="SLURM state, attempt, last step and metrics of a run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p = sub.add_parser("resume", help="resubmit a stopped, failed or cancelled run from its checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("overrides", nargs="*", help="config overrides section.key=value (e.g. slurm.time_min=120)")
    p = sub.add_parser("cancel", help="cancel the run's job")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p = sub.add_parser("logs", help="print a task's log (stdout and stderr)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--rank", type=int, default=0, help="global rank of the task (default 0)")
    p.add_argument("--stage", choices=["shards", "embed", "train", "eval"], default=None,
                   help="a pipeline stage's task (default: the training)")
    p.add_argument("--tail", type=int, default=200, metavar="N", help="last N lines of each file (0: all)")
    for name, (_, help_text) in PLUGINS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# ---------------------------------------------------------------- commands


def cmd_submit(args: argparse.Namespace) -> int:
    from launcher import pipeline

    cfg = load_config(args.job, args.overrides)
    if pipeline.chosen_stages(cfg, args.stages) != ["train"]:
        return submit_pipeline(cfg, args)
    if args.dry_run:
        return dry_run(spec.prepare(cfg))
    return start(cfg, fresh=True, preempt_at_step=args.preempt_at_step)


def submit_pipeline(cfg: Config, args: argparse.Namespace) -> int:
    from launcher import pipeline

    if args.dry_run:
        print(pipeline.dry_run_text(cfg, args.stages), flush=True)  # verbatim: never wrapped
        return 0
    chain = pipeline.submit(cfg, args.stages)
    print_chain(chain, spec.prepare(cfg).run_dir)
    return 0


def print_chain(chain: list[dict[str, Any]], run_dir: str) -> None:
    for entry in chain:
        what = f"skipped ({entry['detail']})" if entry["skipped"] else f"job [bold]{entry['job_id']}[/bold]"
        out.print(f"  {entry['stage']}: {what}", soft_wrap=True)
    out.print(f"  status: python -m launcher status {escape(run_dir)}")


def stages_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="pipeline stages")
    for column in ("stage", "job", "state", "attempts", "progress", "why"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["stage"], str(r["job_id"] or "-"), r["state"], str(r["attempts"]), escape(r["progress"]), escape(r["why"]))
    return table


def start(cfg: Config, fresh: bool, preempt_at_step: int | None = None) -> int:
    from launcher.submit import run_debug, submit

    if preempt_at_step is not None and cfg.cluster != "local":
        raise ConfigError("command line", "--preempt-at-step", f"is for local runs; this job's cluster is {cfg.cluster!r}")
    if cfg.cluster == "debug":
        code = run_debug(cfg, fresh=fresh)
        out.print(f"debug run {'finished' if code == 0 else 'stopped with a checkpoint'} (exit {code})")
        return code
    if cfg.cluster == "local":
        from launcher.local import run_local

        if fresh:
            from launcher.submit import check_fresh

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
    if cfg.cluster == "slurm":
        out.rule("sbatch script (what submitit submits)")
        print(spec.render_sbatch(cfg), flush=True)  # verbatim: never wrapped
    else:
        out.print(f"[bold]{cfg.cluster}[/bold] run: {spec.world_size(cfg)} process(es) on this machine")
    out.rule("each task runs")
    print(spec.task_command(cfg), flush=True)
    out.print("  → launcher.task.Task(config) → lit.train.run.run(config), resuming from RUN_DIR/checkpoints",
              soft_wrap=True)
    for key, value in spec.rendezvous_notes(cfg).items():
        out.print(f"  {key}: {escape(value)}", soft_wrap=True)
    table = Table(title="tasks")
    for column in ("rank", "node", "local rank", "device"):
        table.add_column(column)
    for line in spec.task_layout(cfg):
        table.add_row(str(line.rank), str(line.node), str(line.local_rank), line.device)
    out.print(table)
    try:
        spec.check_container(cfg)
    except ConfigError as err:
        out.print(f"[yellow]submit would stop here:[/yellow] {escape(str(err))}", soft_wrap=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from launcher import pipeline

    run_dir = Path(args.run_dir).resolve()
    if sweep.is_sweep(run_dir):
        from launcher.cli_sweep import sweep_status

        return sweep_status(run_dir, args.json)
    status = runs.run_status(run_dir)
    if pipeline.is_pipeline(run_dir):
        status["stages"] = pipeline.status(run_dir)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    if status.get("stages"):
        out.print(stages_table(status["stages"]))
    out.print(status_table(status))
    if status["attempts"]:
        out.print(attempts_table(status["attempts"]))
    if status["retry_decisions"]:
        out.print(failures_table(status["retry_decisions"]))
    return 0


def _fmt(values: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = values.get(k)
        if v is not None:
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts) or "-"


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"run {status['name']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    total = status["total_steps"]
    rows = [
        ("run_dir", status["run_dir"]),
        ("job", f"{status['job_id']} ({status['cluster']})"),
        ("state", status["state"]),
        ("attempt", f"{status['attempt']} (requeues of this job: {status['requeues']} of max {status['max_requeues']}; "
                    f"retries after failures: {status['retries']} of max {status['max_failures']})"),
        ("step", f"{status['step']}" + (f" / {total}" if total else "") + f" (newest checkpoint: {status['checkpoint_step']})"),
        ("finished", {"finished": "yes", "diverged": "yes: diverged"}.get(status.get("outcome", ""), "no")),
        ("last train", _fmt(status["last_train"], ("epoch", "loss", "lr", "logit_scale", "samples_per_s"))),
        ("last eval", _fmt(status["last_eval"], ("top1", "top5", "final"))),
        ("last stop", status["last_stop"] or "-"),
    ]
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    return table


def attempts_table(attempts: list[dict[str, Any]]) -> Table:
    table = Table(title="attempts")
    for column in ("attempt", "job", "requeue", "start step", "host", "previous stop"):
        table.add_column(column, overflow="fold")
    for a in attempts:
        table.add_row(str(a.get("attempt")), str(a.get("job_id")), str(a.get("requeue")), str(a.get("start_step")),
                      escape(str(a.get("host"))), escape(str(a.get("last_stop")) + (
                          f"; schedule changed: {'; '.join(a['schedule_changes'])}" if a.get("schedule_changes") else "")))
    return table


def failures_table(decisions: list[dict[str, Any]]) -> Table:
    """One row per failed attempt: how srun ended, what was decided and why."""
    table = Table(title="failed attempts")
    for column in ("job", "restart", "srun", "decision", "cause"):
        table.add_column(column, overflow="fold")
    for d in decisions:
        table.add_row(str(d.get("job_id")), str(d.get("restart")), escape(str(d.get("srun"))), str(d.get("decision")),
                      escape(str(d.get("cause"))))
    return table


def cmd_resume(args: argparse.Namespace) -> int:
    from launcher import pipeline
    from launcher.submit import resume_config

    run_dir = Path(args.run_dir).resolve()
    if sweep.is_sweep(run_dir):
        record = sweep.resume(run_dir, args.overrides)
        out.print(f"resumed {len(record['members'])} member(s): " + ", ".join(f"{k} ({v})" for k, v in record["members"].items()))
        return 0
    if pipeline.is_pipeline(run_dir):
        print_chain(pipeline.resume(run_dir, args.overrides), str(run_dir))
        return 0
    cfg = resume_config(run_dir, args.overrides)
    return start(cfg, fresh=False)


def cmd_cancel(args: argparse.Namespace) -> int:
    from launcher import pipeline
    from launcher.submit import cancel

    if sweep.is_sweep(Path(args.run_dir).resolve()):
        ids = sweep.cancel(Path(args.run_dir).resolve())
        out.print(f"cancelled jobs {', '.join(ids) or '(none was queued or running)'}; "
                  f"`python -m launcher resume {escape(args.run_dir)}` goes on with the members that have no result", soft_wrap=True)
        return 0
    if pipeline.is_pipeline(Path(args.run_dir).resolve()):
        ids = pipeline.cancel(Path(args.run_dir).resolve())
        out.print(f"cancelled jobs {', '.join(ids) or '(none was queued or running)'}; "
                  f"`python -m launcher resume {escape(args.run_dir)}` goes on from the first unfinished stage", soft_wrap=True)
        return 0

    job_id = cancel(Path(args.run_dir).resolve())
    out.print(f"cancelled job {job_id}; `python -m launcher resume {escape(args.run_dir)}` continues the run", soft_wrap=True)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    if args.stage and args.stage != "train":
        from launcher import pipeline

        run_dir = pipeline.home(runs.load_run_config(run_dir), args.stage)
    paths = runs.log_files(run_dir, args.rank)
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


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "resume": cmd_resume, "cancel": cmd_cancel, "logs": cmd_logs}
PLUGINS = {
    "demo": ("launcher.demo", "the end-to-end demo (`make demo`)"),
    "sweep": ("launcher.cli_sweep", "submit a sweep: a job YAML with key=a,b,c axes, or a sweep file"),
    "ablation": ("launcher.ablation", "the warm-up sweep in miniature, locally (`make ablation`)"),
    "report": ("launcher.report", "a sweep's members side by side: report.md, report.json, plots"),
}
"""Commands implemented elsewhere: a module with `add_arguments(parser)` and `run(args) -> int`."""


def _plugin(argv: list[str]) -> int | None:
    """Run a plugin command when argv names one whose module is installed; None otherwise."""
    if not argv or argv[0] not in PLUGINS:
        return None
    import importlib

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plugged = _plugin(argv)
        if plugged is not None:
            return plugged
        args = parse_intermixed(build_parser(), argv)
        setup_logging()
        return COMMANDS[args.command](args)
    except UserError as err:
        console.print(f"[red]{err.label}:[/red] {escape(str(err))}", soft_wrap=True)
        return 2
    except spec.PreflightFailed as err:
        console.print(report(err.checks))
        console.print("[red]lit doctor failed: nothing was submitted[/red]")
        return 1
    except (UncompletedJobError, FailedSubmissionError) as err:  # sbatch refused the job
        console.print(f"[red]submission failed:[/red] {escape(str(err).strip())}", soft_wrap=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
