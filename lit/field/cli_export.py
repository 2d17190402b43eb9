"""`lit export RUN OUT [--onnx]`: weights and config that plain open_clip loads, or with --onnx a folder onnxruntime runs.

Without --onnx, OUT holds open_clip_config.json and open_clip_pytorch_model.bin
(lit.field.open_clip_export). The `--onnx` folder (lit.field.onnx_export) holds the image
encoder as ONNX, the fp16 class embeddings of the run's classes and templates, the taxonomy,
the preprocessing and the calibration; it is verified against torch on the whole validation set
(lit.field.onnx_verify) in a staging folder, and only a verified export is put at OUT. When the
run has a location prior (`lit prior`), prior.onnx goes with it, verified within 1e-5 of torch's
(lit.field.onnx_prior); `--no-prior` leaves it out.
"""

from __future__ import annotations

import argparse
import json

from lit.cliargs import add_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    parser.add_argument("out", help="output folder")
    parser.add_argument("--onnx", action="store_true",
                        help="write the portable ONNX export (`lit predict OUT PHOTOS`, `lit serve OUT`) instead")
    parser.add_argument("--categories", help="with --onnx: the classes to export (default: the config's validation categories)")
    parser.add_argument("--templates", help="with --onnx: comma-separated template sets (default: the config's eval.templates)")
    parser.add_argument("--verify-limit", type=int, default=0,
                        help="with --onnx: verify on the first N validation images only (0: all of them)")
    parser.add_argument("--no-prior", dest="prior", action="store_false",
                        help="with --onnx: leave the run's location prior out (predictions then ignore places)")


def run(args: argparse.Namespace) -> int:
    from lit.log import console

    if not args.onnx:
        from lit.field.open_clip_export import WEIGHTS_NAME, export

        folder = export(args.run, args.out)
        console.print(f"exported to {folder}\n  open_clip.create_model_and_transforms('local-dir:{folder}')\n"
                      f"  or, for an open_clip architecture: pretrained='{folder / WEIGHTS_NAME}'")
        return 0
    from lit.eval.templates import parse_template_list
    from lit.field.onnx_export import export_onnx
    from lit.field.onnx_predict import MANIFEST, PRIOR_KEY

    templates = parse_template_list(args.templates) if args.templates else None
    out, check = export_onnx(args.run, args.out, categories=args.categories, templates=templates,
                             verify_limit=args.verify_limit, prior=args.prior)
    console.print(f"ONNX export → {out}\n  verified on {check['images']} validation images: embeddings within "
                  f"{check['max_abs_diff']:.2e} of torch's (tolerance {check['tolerance']:.0e}); class scores within "
                  f"{check['score_max_abs_diff']:.2e} (bound {check['score_bound']:.2e}); top-1 identical for "
                  f"{check['top1_same']}/{check['images']} ({check['near_ties']} near-ties within {check['near_tie_margin']:.2e}, "
                  f"{check['near_tie_top1_differs']} of them flipped)")
    prior = json.loads((out / MANIFEST).read_text()).get(PRIOR_KEY)
    if prior:
        pv = prior["verification"]
        console.print(f"  location prior: {pv['classes']} classes, weight {prior['weight']:g} "
                      f"({'calibrated' if prior['weight_calibrated'] else 'default: run `lit calibrate` to fit it'}); "
                      f"log p(present) within {pv['max_abs_diff']:.2e} of torch's on {pv['places']} places "
                      f"({pv['max_scaled_diff']:.2e} in units of its terms, tolerance {pv['tolerance']:.0e})")
    console.print(f"  lit predict {out} PHOTOS... ; lit serve {out}")
    return 0
