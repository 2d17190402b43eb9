"""`lit embed SHARDS OUT [JOB.yaml] [section.key=value ...]`: cache the frozen tower's embeddings.

The batch size is the job's `pipeline.embed_batch_size` (as the pipeline's embed stage uses it),
the views `data.views`: set them as overrides.
"""

from __future__ import annotations

import argparse

from lit.cliargs import JOB_HELP, add_job, add_renamed, job_and_overrides
from lit.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", help="folder written by `lit shards`")
    parser.add_argument("out", help="output folder for the embedding shards")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add_job(parser, help=JOB_HELP + " (its model section names the frozen tower)")
    add_renamed(parser, "--views", "the override data.views=K", dest="views", type=int)
    add_renamed(parser, "--batch-size", "the override pipeline.embed_batch_size=N", dest="batch_size", type=int)


def run(args: argparse.Namespace) -> int:
    from lit.data.embed import embed_folder
    from lit.log import console

    job, overrides = job_and_overrides(args)
    renamed = {"data.views": getattr(args, "views", None), "pipeline.embed_batch_size": getattr(args, "batch_size", None)}
    overrides = [*(f"{k}={v}" for k, v in renamed.items() if v is not None), *overrides]
    cfg = load_config(job, overrides)
    manifest = embed_folder(cfg, args.shards, args.out, cfg.pipeline.embed_batch_size, args.dtype, args.device)
    if manifest is not None:
        console.print(f"[green]{manifest['total_samples']} embeddings[/green] in {len(manifest['shards'])} shards → {args.out} "
                      f"(tower fingerprint {manifest['fingerprint'][:12]})")
    return 0
