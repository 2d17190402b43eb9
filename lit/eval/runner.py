"""Zero-shot evaluation of a model on the validation shards (or their cached embeddings), on every rank.

`evaluate_model` is collective: each rank builds its blocks of the classifier, evaluates its
share of the shards and the counts are summed over ranks, so no rank waits on a rank-0-only
pass. `evaluate_checkpoint` is the `lit eval` entry point.

results.json (accuracies in percent, as in the paper)::

    {"top1", "top5", "mean_per_class",                       # the headline
     "per_rank": {kingdom..species}, "per_supercategory": {...},
     "hardest": [{id, name, common_name, accuracy, top5, n}],  # hardest classes
     "confused": [{true, pred, count, true_name, pred_name}],  # most confused (true -> pred) pairs
     "hardest_taxa": {rank: [{taxon, lineage, accuracy, n, classes}]},
     "num_samples", "num_classes", "classes_evaluated", "bad_samples", "seconds",
     "templates", "checkpoint": {"path", "step"}, "setup": {...}, "paper_table": [...]}

The numeric top-level entries are what training logs into metrics.jsonl, beside the record's
own `type` and `step`: so the checkpoint's step lives under "checkpoint", not at the top.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lit import checkpoint as ckpt_files
from lit import dist
from lit.config import Config, config_from_dict
from lit.configlib import ConfigError, apply_overrides, to_dict
from lit.data.folders import ShardFolder, open_folder
from lit.data.inat import Category, DatasetError, load_categories_json
from lit.data.loader import Stream, batch_counts, eval_pipeline, make_loader
from lit.data.taxonomy import Taxonomy
from lit.errors import UsageError
from lit.eval.calibration import FILE, Calibration
from lit.eval.metrics import Counts, label_lookup, summarize, to_class_index
from lit.eval.paper import paper_table
from lit.eval.templates import resolve_templates
from lit.eval.with_prior import PriorScoring
from lit.eval.zeroshot import build_classifier
from lit.io import write_json
from lit.log import console, logger
from lit.model import BuiltModel, clip_api, fingerprint, logit_params

AMP = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}


def val_folder(cfg: Config) -> tuple[ShardFolder, str]:
    """The validation folder of the config's image source, and its config key."""
    if cfg.data.image_source == "cached":
        return open_folder(cfg.data.val_embeddings, "data.val_embeddings", "lit embed"), "data.val_embeddings"
    return open_folder(cfg.data.val_shards, "data.val_shards", "lit shards"), "data.val_shards"


def check_val_cache(folder: ShardFolder, built: BuiltModel) -> None:
    """Cached embeddings are only valid for the tower and preprocessing that made them."""
    made_with = str(folder.manifest.get("fingerprint"))
    ours = fingerprint(built.model, built.preprocess_val)
    if made_with != ours:
        raise ConfigError(
            "", "data.val_embeddings",
            f"{folder.path} was made by another image tower or preprocessing (fingerprint {made_with[:12]} vs this "
            f"model's {ours[:12]}): rerun `lit embed VAL_SHARDS {folder.path}` with this model's config, "
            "or evaluate the raw shards (data.image_source=raw)",
        )


def load_categories(folder: ShardFolder, key: str) -> list[Category]:
    """The split's categories (classifier order) from the folder's categories.json."""
    if not folder.categories_file.is_file():
        raise ConfigError("", key, f"{folder.path} has no categories.json: rebuild it with `lit shards` (and `lit embed`)")
    try:
        categories = load_categories_json(folder.categories_file)
    except DatasetError as err:
        raise ConfigError("", key, f"{err}; rebuild the folder with `lit shards`") from err
    if not categories:
        raise ConfigError("", key, f"{folder.categories_file} lists no categories: rebuild the folder with `lit shards`")
    return categories


def newest_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """{"path", "step"} of the newest checkpoint in a run directory (Nones when there is none)."""
    found = ckpt_files.list_checkpoints(run_dir)
    if not found:
        return {"path": None, "step": None}
    match = ckpt_files.NAME.match(found[-1].name)
    return {"path": str(found[-1]), "step": int(match.group(1)) if match else None}


def _batches(cfg: Config, built: BuiltModel, folder: ShardFolder, info: dist.DistInfo, subset: int) -> Iterator[dict[str, Any]]:
    cached = cfg.data.image_source == "cached"
    stream = Stream(folder.urls, cached, None if cached else built.preprocess_val, tokenizer=None, seed=cfg.train.seed)
    workers = min(cfg.data.workers, max(1, len(folder.urls[info.rank::info.world_size])))
    fraction = min(1.0, subset / folder.samples) if subset > 0 else 1.0
    pipeline = eval_pipeline(stream, rank=info.rank, world=info.world_size, batch_size=cfg.eval.batch_size, fraction=fraction)
    return iter(make_loader(pipeline, workers, seed=cfg.train.seed))


def image_features(model: torch.nn.Module, images: torch.Tensor, cached: bool, precision: str) -> torch.Tensor:
    """Unit-norm image features from raw images or cached tower outputs (before normalization)."""
    if cached:
        return F.normalize(images.float(), dim=-1)
    amp = AMP.get(precision) if images.device.type == "cuda" else None
    with torch.autocast(images.device.type, dtype=amp) if amp else contextlib.nullcontext():
        return F.normalize(clip_api(model).encode_image(images).float(), dim=-1)


@torch.no_grad()
def count_predictions(
    cfg: Config, built: BuiltModel, folder: ShardFolder, info: dist.DistInfo, classifier: torch.Tensor,
    categories: Sequence[Category], subset: int = 0, progress: bool = False, prior: PriorScoring | None = None,
) -> tuple[Counts, int, list[int]]:
    """This rank's counts, bad samples, and labels missing from the categories (not reduced); `prior` counts its own.

    Classes are ranked by cosine similarity: the order of the model's scores, logit_scale x cosine + logit_bias
    (a positive scale and one bias for every class leave it as it is); `prior` weighs the scores themselves.
    """
    device = classifier.device
    cached = cfg.data.image_source == "cached"
    lookup, taxon_ids = label_lookup(categories).to(device), torch.as_tensor(Taxonomy.of(categories).ids, device=device)
    counts = Counts.zeros(len(categories), device)
    bad, unknown = 0, set[int]()
    expected = folder.samples // info.world_size if subset <= 0 else min(subset // info.world_size, folder.samples)
    bar = Progress(TextColumn("[bold]zero-shot eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not (progress and info.is_main))
    with bar:
        task = bar.add_task("eval", total=max(1, expected))
        for batch, bad_so_far in batch_counts(_batches(cfg, built, folder, info, subset)):
            bad = bad_so_far
            labels = batch["labels"].to(device)
            targets = to_class_index(labels, lookup)
            known = targets >= 0
            if not bool(known.all()):
                unknown.update(int(v) for v in labels[~known].tolist())
            feats = image_features(built.model, batch["images"].to(device, non_blocking=True), cached, cfg.train.precision)
            sims = feats[known] @ classifier.T
            counts.add(sims, targets[known], taxon_ids)
            if prior is not None:
                places = batch.get("places")
                places = torch.full((len(labels), 3), float("nan")) if places is None else places
                prior.add(sims, places.to(device)[known], targets[known], taxon_ids)
            bar.advance(task, len(labels))
    return counts, bad, sorted(unknown)


def evaluate_model(
    cfg: Config, built: BuiltModel, info: dist.DistInfo, subset: int = 0, write_results: bool = False, *,
    out_dir: str | Path | None = None, checkpoint: dict[str, Any] | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Zero-shot evaluation on every rank (collective); returns the results on every rank.

    `subset` > 0 reads about that many samples, chosen by a hash of their keys: the same ones at
    every periodic evaluation, whatever the ranks and workers, spread over all classes. When `write_results`, rank 0 writes
    `{out_dir or cfg.run_dir}/results.json` and `plots/accuracy.png`.
    """
    start = time.perf_counter()
    folder, key = val_folder(cfg)
    if cfg.data.image_source == "cached":
        check_val_cache(folder, built)
    categories = load_categories(folder, key)
    sets = resolve_templates(cfg.eval.templates, cfg.captions)
    model = built.model
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        classifier = build_classifier(model, built.tokenizer, categories, sets, device=device,
                                      rank=info.rank, world=info.world_size)
        scale, bias = logit_params(model)  # bias 0.0 without one (a CLIP-loss model)
        prior = PriorScoring.of(cfg, categories, scale, checkpoint, device, bias)
        local, bad, unknown = count_predictions(cfg, built, folder, info, classifier, categories, subset, progress, prior)
    finally:
        model.train(was_training)
    counts = local.reduce()
    flags = dist.all_reduce_sum(torch.tensor([float(bad), float(len(unknown))], dtype=torch.float64, device=device))
    if flags[1] > 0:  # every rank sees the reduced flag and raises together: no rank hangs in a collective
        raise ConfigError("", key, f"{folder.path} holds labels missing from its categories.json (e.g. {unknown[:5]} on rank "
                                   f"{info.rank}): rebuild the folder with `lit shards` so both come from one split")
    if int(counts.total.sum()) == 0:
        raise ConfigError("", key, f"no samples were evaluated from {folder.path} ({int(flags[0])} bad samples): "
                                   "check the shards (`lit shards` rebuilds them)")
    result = summarize(counts, categories, Taxonomy.of(categories), cfg.eval.hardest)
    if prior is not None:
        result["prior"] = prior.summary(result, categories, Taxonomy.of(categories), cfg.eval.hardest)
    result.update(
        bad_samples=int(flags[0]),
        seconds=round(time.perf_counter() - start, 2),
        templates=list(cfg.eval.templates),
        checkpoint=checkpoint if checkpoint is not None else newest_checkpoint(cfg.run_dir),
        setup={"data": str(folder.path), "image_source": cfg.data.image_source, "model": cfg.model.name,
               "logit_scale": scale, "logit_bias": bias, "world_size": info.world_size, "subset": subset,
               "batch_size": cfg.eval.batch_size},
        paper_table=paper_table(),
    )
    logger.info("zero-shot top-1 %.2f%%, top-5 %.2f%% on %d samples of %d classes (%s templates, %.1f s)",
                result["top1"], result["top5"], result["num_samples"], result["num_classes"],
                "+".join(cfg.eval.templates), result["seconds"])
    if write_results and info.is_main:
        write_outputs(result, Path(out_dir) if out_dir is not None else Path(cfg.run_dir))
    dist.barrier()
    return result


def write_outputs(result: dict[str, Any], out_dir: Path) -> Path:
    """results.json (atomically) and plots/accuracy.png under `out_dir`; returns the JSON path."""
    from lit.eval.report import accuracy_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    write_json(path, result)
    accuracy_plot(result, out_dir / "plots" / "accuracy.png")
    logger.info("results → %s, plot → %s", path, out_dir / "plots" / "accuracy.png")
    return path


EVAL_OVERRIDES = ("eval.", "data.workers=")
"""What `lit eval` may override of a checkpoint's config: the evaluation's own settings and its loaders."""


def check_eval_overrides(overrides: Sequence[str]) -> None:
    """UsageError for an override outside EVAL_OVERRIDES (the model and its data are the checkpoint's)."""
    for text in overrides:
        if not text.startswith(EVAL_OVERRIDES):
            raise UsageError("section.key=value", f"{text!r}: lit eval takes eval.* and data.workers overrides; the rest is "
                                                  "the checkpoint's own config (--data names other validation data)")


def eval_config(
    cfg: Config, data: str | Path | None = None, templates: Sequence[str] | None = None,
    batch_size: int | None = None, workers: int | None = None, hardest: int | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """The checkpoint's config with the evaluation's choices; `data` may be image shards or embeddings."""
    tree = to_dict(cfg)
    if data is not None:
        folder = open_folder(data, "--data", "lit shards` or `lit embed")
        if folder.manifest.get("kind") == "embeddings":
            tree["data"].update(image_source="cached", val_embeddings=str(folder.path), augment=False)
        else:
            tree["data"].update(image_source="raw", val_shards=str(folder.path))
    for section, name, value in (("eval", "templates", list(templates) if templates else None),
                                 ("eval", "batch_size", batch_size), ("data", "workers", workers), ("eval", "hardest", hardest)):
        if value is not None:
            tree[section][name] = value
    check_eval_overrides(overrides)
    return config_from_dict(apply_overrides(tree, overrides) if overrides else tree, "lit eval arguments")


def default_out_dir(checkpoint_path: Path, templates: Sequence[str]) -> Path:
    """RUN/eval/step-N-TEMPLATES: beside the run, never over the training's own results.json."""
    run_dir = checkpoint_path.parent.parent if checkpoint_path.parent.name == "checkpoints" else checkpoint_path.parent
    label = "+".join(Path(t).stem if t not in ("paper", "train", "openai", "simple") else t for t in templates)
    return run_dir / "eval" / f"{checkpoint_path.stem}-{label}"


def calibration_summary(checkpoint_path: Path, step: int) -> dict[str, Any] | None:
    """What `lit calibrate` measured for this checkpoint (RUN/calibration.json): T, ECE before and after, its report."""
    run_dir = checkpoint_path.parent.parent if checkpoint_path.parent.name == "checkpoints" else checkpoint_path.parent
    cal = Calibration.read(run_dir / FILE)
    if cal is None or Path(cal.checkpoint).name != checkpoint_path.name or cal.step != step:
        return None
    return {"temperature": cal.temperature, "ece_before": cal.ece_before, "ece_after": cal.ece_after,
            "heldout_samples": cal.heldout_samples, "report": str(run_dir / "eval" / "calibration"),
            "coverage_plot": str(run_dir / "eval" / "calibration" / "plots" / "coverage.png")}


def evaluate_checkpoint(
    ckpt: str | Path, data: str | Path | None = None, templates: Sequence[str] | None = None, out: str | Path | None = None,
    *, subset: int = 0, batch_size: int | None = None, workers: int | None = None, hardest: int | None = None,
    overrides: Sequence[str] = (), device: str = "auto", progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint (file or run directory) on every rank; returns (results, output folder)."""
    from lit.checkpoint import model_from_checkpoint, resolve_checkpoint

    info = dist.resolve()
    dev = dist.pick_device(info, device)
    dist.init(info, dev)
    try:
        path = resolve_checkpoint(ckpt)
        cfg, built, state = model_from_checkpoint(path, dev)
        cfg = eval_config(cfg, data, templates, batch_size, workers, hardest, overrides)
        out_dir = Path(out) if out is not None else default_out_dir(path, cfg.eval.templates)
        result = evaluate_model(cfg, built, info, subset, write_results=False, out_dir=out_dir,
                                checkpoint={"path": str(path), "step": int(state["step"])}, progress=progress)
        calibration = calibration_summary(path, int(state["step"]))
        if calibration is not None:  # the eval report carries the calibration measured for this checkpoint
            result["calibration"] = calibration
        if info.is_main:
            write_outputs(result, out_dir)
        dist.barrier()
        return result, out_dir
    finally:
        dist.shutdown()


__all__ = ["check_val_cache", "count_predictions", "default_out_dir", "eval_config", "evaluate_checkpoint", "evaluate_model",
           "image_features", "load_categories", "newest_checkpoint", "val_folder", "write_outputs"]
