"""`lit eval --checkpoint CKPT [--data VAL_SHARDS] [--templates paper,openai]`: zero-shot accuracy of a checkpoint.

`lit eval --open-clip local-dir:DIR --config JOB.yaml`: the same for a whole pretrained open_clip model (a baseline).

Runs on every rank when started with torchrun or srun; rank 0 writes results.json and
plots/accuracy.png and prints the tables (ours beside the paper's Table 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from lit.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="checkpoint file, or a run directory (its newest checkpoint)")
    what.add_argument("--open-clip", metavar="SPEC", help="a whole pretrained open_clip model from local files, as a baseline: "
                                                          "local-dir:DIR or ARCH:FILE (with --config; lit.eval.baseline)")
    parser.add_argument("--config", metavar="JOB.yaml", help="with --open-clip: the job whose validation set, classes, "
                                                             "captions and templates to use")
    parser.add_argument("--data", help="validation shards (`lit shards`) or their embeddings (`lit embed`); "
                                       "default: the checkpoint config's validation folder")
    parser.add_argument("--templates", help="comma-separated template sets: paper, train, openai, simple, or files "
                                            "(default: the config's eval.templates)")
    parser.add_argument("--out", help="output folder (default: RUN/eval/step-N-TEMPLATES)")
    parser.add_argument("--subset", type=int, default=0, help="evaluate about this many samples (0: all)")
    parser.add_argument("--batch-size", type=int, help="images per batch on each rank (default: eval.batch_size)")
    parser.add_argument("--workers", type=int, help="data loader workers per rank (default: data.workers)")
    parser.add_argument("--hardest", type=int, help="hardest classes and confused pairs to report (default: eval.hardest)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quiet", action="store_true", help="write the files, print no tables")


def run(args: argparse.Namespace) -> int:
    from lit import dist
    from lit.eval.report import print_report
    from lit.eval.runner import evaluate_checkpoint
    from lit.eval.templates import parse_template_list

    templates = parse_template_list(args.templates) if args.templates else None
    if args.open_clip:
        result, out = _baseline(args, templates)
    else:
        result, out = evaluate_checkpoint(
            args.checkpoint, args.data, templates, args.out, subset=args.subset, batch_size=args.batch_size,
            workers=args.workers, hardest=args.hardest, device=args.device, progress=not args.quiet,
        )
    if dist.resolve().is_main:
        console = Console()
        if not args.quiet:
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

    if not args.config:
        raise UsageError("--config", "--open-clip needs the job whose validation set to use: --config JOB.yaml")
    if args.subset:
        raise UsageError("--subset", "a baseline is evaluated on the whole validation set: drop --subset")
    cfg = load_config(args.config)
    sets = [f"eval.templates=[{','.join(templates)}]"] if templates else []
    more = [f"{k}={v}" for k, v in (("eval.batch_size", args.batch_size), ("data.workers", args.workers),
                                    ("eval.hardest", args.hardest)) if v is not None]
    cfg = with_overrides(cfg, sets + more) if sets or more else cfg
    name = args.open_clip.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1] or "open_clip"
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "baselines" / Path(name).stem
    return evaluate_open_clip(cfg, args.open_clip, out, args.data, args.device, progress=not args.quiet), out
