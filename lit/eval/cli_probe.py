"""`lit probe JOB.yaml [section.key=value ...] [--out DIR]`: a linear probe on the job's cached embeddings."""

from __future__ import annotations

import argparse

from rich.console import Console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB.yaml", help="the job whose data.train_embeddings / data.val_embeddings to probe")
    parser.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    parser.add_argument("--out", help="output folder for results.json and plots/accuracy.png (default: RUN_DIR/probe)")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training embeddings")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (cosine decay)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=int, default=256, help="embeddings per step")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lit.config import load_config
    from lit.errors import UsageError
    from lit.eval.probe import ProbeSettings, probe
    from lit.eval.report import breakdown_table

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}", f"must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0 or args.weight_decay < 0:
        raise UsageError("--lr", f"--lr must be > 0 and --weight-decay >= 0, got {args.lr}, {args.weight_decay}")
    cfg = load_config(args.job, args.overrides)
    out = Path(args.out) if args.out else Path(cfg.run_dir) / "probe"
    settings = ProbeSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=cfg.train.seed)
    result = probe(cfg, settings, out)
    console = Console()
    console.print(f"[bold]linear probe[/bold] on {result['setup']['train_samples']} cached training embeddings: "
                  f"top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}% on {result['num_samples']} validation images "
                  f"of {result['num_classes']} classes")
    console.print(breakdown_table(result))
    console.print(f"results → {out / 'results.json'}")
    return 0
