"""Zero-shot evaluation: classifier builds for the 10,000 real classes, and images/s on raw vs cached data.

Classifier: `lit.eval.zeroshot.build_classifier` with the paper shape's text tower (random
init: the cost does not depend on the weights) for the categories of iNat2021
(../shared/data/inat2021-categories.csv; the 32 toy classes when it is absent), with the
`paper` set (1 template) and the `openai` set (80). Building all 10,000 classes on 2 CPU
cores would take minutes (1 template) to hours (80), so each round builds an evenly spread
subset and projects the time to 10,000 classes: the build is a loop of independent class
blocks, linear in the number of classes. OpenCLIP's own `build_zero_shot_classifier` on the
same model and classes (texts padded to 77 tokens) is timed in the same round.

Evaluation: `lit.eval.runner.count_predictions` (the evaluation pass, classifier built
beforehand) over the toy validation shards with the paper shape's frozen ViT-L-14 (raw: JPEG
decode, resize, tower forward) and over their `lit embed` cache (cached), interleaved.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import open_clip
import torch

from bench import _common as common

REPEATS = 3
CLASSES = 10_000
SUBSET = {"paper": 256, "openai": 12}  # classes built per round, per template set
RAW_IMAGES = 16  # validation images of the raw pass (a fixed subset by key hash); the cached pass reads all
CACHED_PASSES = 5  # the cached pass is short: repeat it within a round


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """n items evenly spread over the sequence (all of them when it is shorter)."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def classifier_variants(built: Any, cats: list[Any]) -> dict[str, Callable[[], float]]:
    """Seconds per class of each classifier build."""
    from lit.config import CaptionConfig
    from lit.eval.templates import builtin_set
    from lit.eval.zeroshot import build_classifier

    model = built.model.eval()
    sets = {name: builtin_set(name, CaptionConfig()) for name in SUBSET}

    def lit(name: str) -> Callable[[], float]:
        subset = spread(cats, SUBSET[name])

        def go() -> float:
            start = time.perf_counter()
            with torch.no_grad():
                build_classifier(model, built.tokenizer, subset, [sets[name]], device="cpu")
            return (time.perf_counter() - start) / len(subset)
        return go

    def plain() -> float:
        subset = spread(cats, SUBSET["paper"])
        start = time.perf_counter()
        with torch.no_grad():
            open_clip.build_zero_shot_classifier(model, built.tokenizer, subset, list(sets["paper"].templates),
                                                 num_classes_per_batch=512, device="cpu", use_tqdm=False)
        return (time.perf_counter() - start) / len(subset)

    return {"lit paper": lit("paper"), "lit openai": lit("openai"), "open_clip paper": plain}


def eval_variants() -> tuple[dict[str, Callable[[], float]], dict[str, Any]]:
    """Images/s of the evaluation pass on raw validation shards and on their embedding cache."""
    from lit import dist
    from lit.config import config_from_dict
    from lit.data.embed import embed_folder
    from lit.data.folders import open_folder
    from lit.eval.runner import count_predictions, load_categories
    from lit.eval.templates import resolve_templates
    from lit.eval.zeroshot import build_classifier

    shape = common.paper_shape()
    val = common.shards(common.toy_root(1, 1), "val", 8)
    emb = common.OUT / "data" / "emb-paper-val"
    tree: dict[str, dict[str, Any]] = {"data": {"val_shards": str(val), "val_embeddings": str(emb), "workers": 0, "augment": False},
            "model": {"name": "bench-paper", "config": shape.config, "image_weights": ""}, "eval": {"batch_size": 16}}
    raw_cfg = config_from_dict({**tree, "data": {**tree["data"], "image_source": "raw"}}, "bench")
    cached_cfg = config_from_dict({**tree, "data": {**tree["data"], "image_source": "cached"}}, "bench")
    shutil.rmtree(emb, ignore_errors=True)
    start = time.perf_counter()
    embed_folder(raw_cfg, val, emb, batch_size=8, device="cpu")
    embed_s = time.perf_counter() - start
    built = common.build(shape.config, "bench-paper")
    built.model.eval()
    info = dist.resolve({})
    raw_folder, cached_folder = open_folder(val, "val"), open_folder(emb, "emb")
    cats = load_categories(raw_folder, "val")
    with torch.no_grad():
        classifier = build_classifier(built.model, built.tokenizer, cats, resolve_templates(["paper"]), device="cpu")

    def raw() -> float:
        start = time.perf_counter()
        counts, _, _ = count_predictions(raw_cfg, built, raw_folder, info, classifier, cats, subset=RAW_IMAGES)
        return int(counts.total.sum()) / (time.perf_counter() - start)

    def cached() -> float:
        start, n = time.perf_counter(), 0
        for _ in range(CACHED_PASSES):
            counts, _, _ = count_predictions(cached_cfg, built, cached_folder, info, classifier, cats)
            n += int(counts.total.sum())
        return n / (time.perf_counter() - start)

    info_out = {"val_images": raw_folder.samples, "raw_images_per_pass": RAW_IMAGES, "embed_seconds": round(embed_s, 1)}
    return {"raw": raw, "cached": cached}, info_out


def run() -> list[dict[str, Any]]:
    cats, source = common.categories()
    text_model = common.build(common.text_config(), "bench-text")
    variants = classifier_variants(text_model, cats)
    evals, eval_info = eval_variants()
    variants.update(evals)
    runs = common.interleaved(variants, REPEATS, max_wait=5.0)
    load = common.external_load()
    scale = CLASSES if len(cats) >= CLASSES else len(cats)
    return [
        {"metric": f"classifier, {scale:,} classes x 1 template (paper)", "unit": "s (projected)",
         "values": [t * scale for t in runs["lit paper"]],
         "params": {"categories": source, "classes_built_per_round": SUBSET, "text_tower": common.PAPER_TEXT,
                    "eval_model": "ViT-L-14 frozen (random init)", **eval_info, "external_load_cores": load},
         "note": f"built for {SUBSET['paper']} classes spread over the list, scaled to {scale:,}"},
        {"metric": f"classifier, {scale:,} classes x 80 templates (openai)", "unit": "s (projected)",
         "values": [t * scale for t in runs["lit openai"]],
         "note": f"built for {SUBSET['openai']} classes spread over the list, scaled to {scale:,}"},
        {"metric": "classifier, 1 template: open_clip build_zero_shot_classifier / lit", "unit": "ratio",
         "values": common.ratios(runs["open_clip paper"], runs["lit paper"]),
         "note": "same model and classes; open_clip pads every text to 77 tokens, lit trims to the longest in the batch"},
        {"metric": "eval pass, raw images (ViT-L-14)", "unit": "images/s", "values": runs["raw"]},
        {"metric": "eval pass, cached embeddings", "unit": "images/s", "values": runs["cached"]},
        {"metric": "eval pass, cached / raw", "unit": "ratio", "values": common.ratios(runs["cached"], runs["raw"]),
         "note": "count_predictions with the classifier built beforehand: decoding, tower forward, logits, counts"},
    ]
