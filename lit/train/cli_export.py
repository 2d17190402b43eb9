"""`lit export CHECKPOINT OUT`: weights and config that plain open_clip loads."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint file or run directory (its newest checkpoint)")
    parser.add_argument("out", help="output folder")


def run(args: argparse.Namespace) -> int:
    from lit.log import console
    from lit.train.export import WEIGHTS_NAME, export

    out = export(args.checkpoint, args.out)
    console.print(f"exported to {out}\n  open_clip.create_model_and_transforms('local-dir:{out}')\n"
                  f"  or, for an open_clip architecture: pretrained='{out / WEIGHTS_NAME}'")
    return 0
