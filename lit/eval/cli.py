"""`lit eval RUN [--data VAL_SHARDS] [--templates paper,openai]`: zero-shot accuracy of a run's checkpoint.

`lit eval JOB.yaml --open-clip local-dir:DIR`: the same for a whole pretrained open_clip model (a baseline).

Runs on every rank when started with torchrun or srun; rank 0 writes results.json and
plots/accuracy.png and prints the tables (ours beside the paper's Table 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from lit.cliargs import RUN_HELP, add_progress, add_renamed
from lit.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", metavar="RUN | JOB.yaml",
                        help=f"{RUN_HELP}; with --open-clip, the job whose validation set, classes, captions and templates to use")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="overrides of the evaluation's settings: eval.* (batch_size, hardest, templates) and data.workers; "
                             "the rest is the checkpoint's own config")
    parser.add_argument("--open-clip", metavar="SPEC", help="a whole pretrained open_clip model from local files, as a baseline: "
                                                          "local-dir:DIR or ARCH:FILE (lit.eval.baseline)")
    parser.add_argument("--data", help="validation shards (`lit shards`) or their embeddings (`lit embed`); "
                                       "default: the checkpoint config's validation folder")
    parser.add_argument("--templates", help="comma-separated template sets: paper, train, openai, simple, or files "
                                            "(default: the config's eval.templates)")
    parser.add_argument("--out", help="output folder (default: RUN/eval/step-N-TEMPLATES)")
    parser.add_argument("--max-samples", type=int, default=0, help="evaluate about this many samples (0: all)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--no-tables", action="store_true", help="write the files, print no tables")
    add_progress(parser)
    add_renamed(parser, "--checkpoint", "the positional RUN", dest="checkpoint_flag")
    add_renamed(parser, "--config", "the positional JOB.yaml (with --open-clip)", dest="config_flag")
    add_renamed(parser, "--subset", "--max-samples", dest="max_samples", type=int)
    add_renamed(parser, "--quiet", "--no-tables", dest="no_tables", nargs=0, const=True)
    for flag, key in RENAMED_TO_OVERRIDES.items():
        add_renamed(parser, flag, f"the override {key}=N", dest=flag.strip("-").replace("-", "_"), type=int)


RENAMED_TO_OVERRIDES = {"--batch-size": "eval.batch_size", "--workers": "data.workers", "--hardest": "eval.hardest"}
"""Flags that mirrored config keys: read for one release as the overrides they stand for."""


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The command's overrides, the renamed flags' among them."""
    more = [f"{key}={getattr(args, flag.strip('-').replace('-', '_'))}" for flag, key in RENAMED_TO_OVERRIDES.items()
            if getattr(args, flag.strip("-").replace("-", "_"), None) is not None]
    return [*more, *(args.overrides or [])]


def run(args: argparse.Namespace) -> int:
    from lit import dist
    from lit.eval.report import print_report
    from lit.eval.runner import evaluate_checkpoint
    from lit.eval.templates import parse_template_list

    templates = parse_template_list(args.templates) if args.templates else None
    args.target = args.target or getattr(args, "checkpoint_flag", None)
    if args.open_clip:
        result, out = _baseline(args, templates)
    else:
        if not args.target:
            raise UsageError("RUN", "name the run (or checkpoint file) to evaluate, or a baseline with --open-clip SPEC JOB.yaml")
        result, out = evaluate_checkpoint(
            args.target, args.data, templates, args.out, subset=args.max_samples, overrides=overrides_of(args),
            device=args.device, progress=not args.no_progress,
        )
    if dist.resolve().is_main:
        console = Console()
        if not args.no_tables:
            print_report(result, console, hardest=min(10, len(result["hardest"])))
        cal = result.get("calibration")
        if cal:
            console.print(f"calibration (lit calibrate, T={cal['temperature']:.3g}): expected calibration error at species "
                          f"{cal['ece_before'].get('species', float('nan')):.2f} % before, {cal['ece_after'].get('species', float('nan')):.2f} % "
                          f"after; coverage vs accuracy: {cal['coverage_plot']}")
        console.print(f"results → {out / 'results.json'}, plot → {out / 'plots' / 'accuracy.png'}")
    return 0


def _baseline(args: argparse.Namespace, templates: Sequence[str] | None) -> tuple[dict[str, Any], Path]:
    from lit.config import load_config, with_overrides
    from lit.eval.baseline import evaluate_open_clip
    from lit.eval.runner import check_eval_overrides

    job = getattr(args, "config_flag", None) or args.target
    if not job:
        raise UsageError("JOB.yaml", "--open-clip needs the job whose validation set to use: lit eval JOB.yaml --open-clip SPEC")
    if args.max_samples:
        raise UsageError("--max-samples", "a baseline is evaluated on the whole validation set: drop --max-samples")
    cfg = load_config(job)
    sets = [f"eval.templates=[{','.join(templates)}]"] if templates else []
    check_eval_overrides(overrides_of(args))
    more = overrides_of(args)
    cfg = with_overrides(cfg, sets + more) if sets or more else cfg
    name = args.open_clip.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1] or "open_clip"
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "baselines" / Path(name).stem
    return evaluate_open_clip(cfg, args.open_clip, out, args.data, args.device, progress=not args.no_progress), out
