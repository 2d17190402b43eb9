"""`lit export CHECKPOINT OUT [--onnx]`: the open_clip folder (lit.train.cli_export), or with --onnx a folder onnxruntime runs.

The `--onnx` folder (lit.serve.onnx_export) holds the image encoder as ONNX, the fp16 class
embeddings of the run's classes and templates, the taxonomy, the preprocessing and the
calibration; it is verified against torch on the whole validation set (lit.serve.onnx_verify) in a staging
folder, and only a verified export is put at OUT.
"""

from __future__ import annotations

import argparse

from lit.train import cli_export as open_clip_export


def add_arguments(parser: argparse.ArgumentParser) -> None:
    open_clip_export.add_arguments(parser)
    parser.add_argument("--onnx", action="store_true",
                        help="write the portable ONNX export (`lit predict --model OUT`, `lit serve OUT`) instead")
    parser.add_argument("--categories", help="with --onnx: the classes to export (default: the config's validation categories)")
    parser.add_argument("--templates", help="with --onnx: comma-separated template sets (default: the config's eval.templates)")
    parser.add_argument("--verify-limit", type=int, default=0,
                        help="with --onnx: verify on the first N validation images only (0: all of them)")


def run(args: argparse.Namespace) -> int:
    if not args.onnx:
        return open_clip_export.run(args)
    from lit.eval.templates import parse_template_list
    from lit.log import console
    from lit.serve.onnx_export import export_onnx

    templates = parse_template_list(args.templates) if args.templates else None
    out, check = export_onnx(args.checkpoint, args.out, categories=args.categories, templates=templates,
                             verify_limit=args.verify_limit)
    console.print(f"ONNX export → {out}\n  verified on {check['images']} validation images: embeddings within "
                  f"{check['max_abs_diff']:.2e} of torch's (tolerance {check['tolerance']:.0e}); class scores within "
                  f"{check['score_max_abs_diff']:.2e} (bound {check['score_bound']:.2e}); top-1 identical for "
                  f"{check['top1_same']}/{check['images']} ({check['near_ties']} near-ties within {check['near_tie_margin']:.2e}, "
                  f"{check['near_tie_top1_differs']} of them flipped)\n  lit predict --model {out} PHOTOS... ; lit serve {out}")
    return 0
