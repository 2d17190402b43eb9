"""`lit eval --checkpoint CKPT [--data VAL_SHARDS] [--templates paper,openai]`: zero-shot accuracy of a checkpoint.

Runs on every rank when started with torchrun or srun; rank 0 writes results.json and
plots/accuracy.png and prints the tables (ours beside the paper's Table 1).
"""

from __future__ import annotations

import argparse

from rich.console import Console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or a run directory (its newest checkpoint)")
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
    result, out = evaluate_checkpoint(
        args.checkpoint, args.data, templates, args.out, subset=args.subset, batch_size=args.batch_size,
        workers=args.workers, hardest=args.hardest, device=args.device, progress=not args.quiet,
    )
    if dist.resolve().is_main:
        console = Console()
        if not args.quiet:
            print_report(result, console, hardest=min(10, len(result["hardest"])))
        console.print(f"results → {out / 'results.json'}, plot → {out / 'plots' / 'accuracy.png'}")
    return 0
