"""`lit embed SHARDS OUT [--config JOB.yaml] [overrides]`: cache the frozen tower's embeddings."""

from __future__ import annotations

import argparse

from lit.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", help="folder written by `lit shards`")
    parser.add_argument("out", help="output folder for the embedding shards")
    parser.add_argument("--config", help="job YAML whose model section names the frozen tower (default: embedded)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--views", type=int, default=None, metavar="K",
                        help="augmented views per image (data.views; view 0 plain, the others seeded by key)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")


def run(args: argparse.Namespace) -> int:
    from lit.data.embed import embed_folder
    from lit.log import console

    overrides = [*args.overrides, *([f"data.views={args.views}"] if args.views is not None else [])]
    manifest = embed_folder(load_config(args.config, overrides), args.shards, args.out, args.batch_size, args.dtype, args.device)
    if manifest is not None:
        console.print(f"[green]{manifest['total_samples']} embeddings[/green] in {len(manifest['shards'])} shards → {args.out} "
                      f"(tower fingerprint {manifest['fingerprint'][:12]})")
    return 0
