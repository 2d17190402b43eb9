"""`lit predict --checkpoint CKPT IMAGE... [--rank genus]`: the top-k species (or taxa) of images with their taxonomy.

The class embeddings are built on the first call and kept under RUN/eval/classifiers
(lit.eval.classifier_cache), so later calls on the same checkpoint, classes and templates
only run the image tower.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from lit.data.inat import RANKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or a run directory (its newest checkpoint)")
    parser.add_argument("-k", "--top", type=int, default=5, help="how many guesses per image")
    parser.add_argument("--rank", choices=RANKS, default="species",
                        help="rank to predict at: probabilities are summed up the tree")
    parser.add_argument("--categories", help="candidate classes: categories.json, a split JSON or the official CSV "
                                             "(default: the checkpoint config's validation categories)")
    parser.add_argument("--templates", help="comma-separated template sets (default: the config's eval.templates)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of tables")


def run(args: argparse.Namespace) -> int:
    from lit import dist
    from lit.checkpoint import model_from_checkpoint, resolve_checkpoint
    from lit.configlib import ConfigError
    from lit.eval.classifier_cache import cache_dir, classifier_key, load_or_build
    from lit.eval.predict import predict, print_predictions, read_categories
    from lit.eval.runner import load_categories, val_folder
    from lit.eval.templates import parse_template_list, resolve_templates
    from lit.eval.zeroshot import build_classifier

    if args.top < 1:
        raise ConfigError("", "--top", f"must be >= 1, got {args.top}")
    device = dist.pick_device(dist.DistInfo(0, 1, 0, "single"), args.device)
    checkpoint = resolve_checkpoint(args.checkpoint)
    cfg, built, _ = model_from_checkpoint(checkpoint, device)
    if args.categories:
        categories = read_categories(args.categories)
    else:
        folder, key = val_folder(cfg)
        categories = load_categories(folder, key)
    templates = parse_template_list(args.templates) if args.templates else cfg.eval.templates
    sets = resolve_templates(templates, cfg.captions)
    classifier = load_or_build(cache_dir(checkpoint), classifier_key(checkpoint, categories, sets),
                               lambda: build_classifier(built.model.eval(), built.tokenizer, categories, sets, device=device),
                               device)
    results = predict(built.model, built.preprocess_val, classifier, categories, args.images, args.top, args.rank)
    if args.json:
        for image, guesses in zip(args.images, results):
            print(json.dumps({"image": str(image), "guesses": [g.to_json() for g in guesses]}, ensure_ascii=False))
    else:
        print_predictions(args.images, results, Console())
    return 0
