"""`lit calibrate RUN`: fit a temperature on half of the validation set, measure it on the other half, store it.

The validation samples are split by a hash of their keys (the same split whatever the shard
order or workers): `fraction` of them fit T, the rest are held out and measure the expected
calibration error before and after, at species and genus, and the coverage-vs-accuracy curve
of `--min-confidence` thresholds. RUN/calibration.json keeps T (prediction reads it) and
RUN/eval/calibration/ the report: calibration.json and plots/coverage.png.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lit.configlib import ConfigError
from lit.data.loader import Stream, eval_pipeline, make_loader
from lit.data.taxonomy import Taxonomy
from lit.errors import UsageError
from lit.eval.calibration import Calibration, EmbeddedImages, fit_temperature, measure
from lit.eval.metrics import label_lookup, to_class_index
from lit.eval.prior_weight import HIGH, Weighed, fit_prior_weight, top1
from lit.eval.runner import check_val_cache, image_features, val_folder
from lit.field.torch_model import CheckpointModel
from lit.log import console, logger
from lit.prior.combine import DEFAULT_WEIGHT
from lit.prior.store import Prior


def is_fit_key(key: str, fraction: float) -> bool:
    """Whether the sample `key` belongs to the fitting part (a fixed hash split)."""
    return zlib.crc32(f"calibrate:{key}".encode()) < fraction * 2**32


@torch.no_grad()
def validation_images(model: CheckpointModel, progress: bool = True) -> tuple[EmbeddedImages, list[str], np.ndarray]:
    """Every validation sample of the run's config as unit-norm embeddings with its class index, the keys and places [N, 3].

    Memory grows with images x embedding width, not with images x classes: logits are made later,
    a chunk at a time (lit.eval.calibration).
    """
    cfg = model.cfg
    folder, key = val_folder(cfg)
    cached = cfg.data.image_source == "cached"
    if cached:
        check_val_cache(folder, model.built)
    stream = Stream(folder.urls, cached, None if cached else model.preprocess, tokenizer=None, seed=cfg.train.seed)
    pipeline = eval_pipeline(stream, rank=0, world=1, batch_size=cfg.eval.batch_size)
    loader = make_loader(pipeline, min(cfg.data.workers, len(folder.urls)), seed=cfg.train.seed)
    lookup = label_lookup(model.categories)
    embeddings, targets, keys, places = [], [], [], []
    bar = Progress(TextColumn("[bold]calibration logits"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not progress)
    with bar:
        task = bar.add_task("val", total=folder.samples)
        for batch in loader:
            index = to_class_index(batch["labels"], lookup)
            known = index >= 0
            if not bool(known.all()):
                raise ConfigError("", key, f"{folder.path} holds labels missing from the classes predicted: calibrate with the "
                                           "run's own validation categories")
            feats = image_features(model.built.model, batch["images"].to(model.device), cached, cfg.train.precision)
            embeddings.append(feats.cpu().numpy().astype(np.float32))
            targets.append(index.numpy())
            keys += list(batch["keys"])
            where = batch.get("places")
            places.append(np.full((len(index), 3), np.nan, np.float32) if where is None else where.numpy().astype(np.float32))
            bar.advance(task, len(index))
    if not embeddings:
        raise ConfigError("", key, f"no validation samples could be read from {folder.path}")
    images = EmbeddedImages(np.concatenate(embeddings), model.classifier.cpu().numpy(), model.logit_scale, np.concatenate(targets),
                            model.logit_bias)
    return images, keys, np.concatenate(places)


def calibrate(checkpoint: str | Path, fraction: float = 0.5, device: str = "auto", progress: bool = True) -> tuple[Calibration, Path]:
    """Fit, measure and store the temperature of a run's newest checkpoint (or a checkpoint file)."""
    if not 0.0 < fraction < 1.0:
        raise UsageError("fraction", f"must be between 0 and 1 (exclusive), got {fraction}")
    model = CheckpointModel.load(checkpoint, device=device)
    images, keys, places = validation_images(model, progress)
    fit = np.array([is_fit_key(k, fraction) for k in keys], dtype=bool)
    if fit.sum() < 2 or (~fit).sum() < 2:
        raise UsageError("fraction", f"{len(keys)} validation samples give {int(fit.sum())} to fit and "
                                                f"{int((~fit).sum())} to hold out: both need at least 2")
    temperature = fit_temperature(images, np.flatnonzero(fit))
    taxonomy = Taxonomy.of(model.categories)
    held = np.flatnonzero(~fit)
    ece_before, curve_before, nll_before = measure(images, taxonomy, 1.0, held)
    ece_after, curve_after, nll_after = measure(images, taxonomy, temperature, held)
    cal = Calibration(
        temperature=temperature, checkpoint=str(model.checkpoint), step=model.step, templates=list(model.templates),
        num_classes=len(model.categories), fit_samples=int(fit.sum()), heldout_samples=int((~fit).sum()),
        ece_before=ece_before, ece_after=ece_after, nll_before=round(nll_before, 5), nll_after=round(nll_after, 5),
        coverage={f"{rank}_{when}": curve for when, curves in (("before", curve_before), ("after", curve_after))
                  for rank, curve in curves.items()},
    )
    if model.prior is not None:  # the run's prior, found as prediction finds it (also in a moved run folder)
        cal.prior_weight, cal.prior = calibrate_prior(model.prior, model, images, places, fit, temperature, taxonomy)
    cal.save(model.run_dir)
    report = model.run_dir / "eval" / "calibration"
    cal.save(report)
    coverage_plot(cal, report / "plots" / "coverage.png")
    logger.info("temperature %.4f fit on %d samples; held-out ECE species %.2f%% → %.2f%%, genus %.2f%% → %.2f%%",
                temperature, cal.fit_samples, ece_before["species"], ece_after["species"], ece_before["genus"], ece_after["genus"])
    return cal, report


def calibrate_prior(prior: Prior, model: CheckpointModel, images: EmbeddedImages, places: np.ndarray, fit: np.ndarray,
                    temperature: float, taxonomy: Taxonomy) -> tuple[float | None, dict[str, Any]]:
    """The prior's weight fit on the fitting half's located samples; NLL, ECE and top-1 with and without it held out."""
    columns = prior.columns([c.id for c in model.categories])
    where = ~(np.isnan(places[:, 0]) | np.isnan(places[:, 1]))

    def log_prior(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), len(model.categories)))
        inside = where[rows]
        if inside.any():
            out[inside] = prior.log_presence(torch.from_numpy(places[rows[inside]]), columns).double().numpy()
        return out

    fit_rows, held = np.flatnonzero(fit & where), np.flatnonzero(~fit & where)
    info: dict[str, Any] = {"prior": str(prior.path), "located_fit": len(fit_rows), "located_heldout": len(held),
                            "unlocated": int((~where).sum())}
    if len(fit_rows) < 2 or len(held) < 2:
        logger.warning("the validation set has %d located samples to fit the prior's weight on and %d to hold out (both "
                       "need 2): its weight stays unfit (%.1f)", len(fit_rows), len(held), DEFAULT_WEIGHT)
        return None, info
    weight = fit_prior_weight(images, fit_rows, temperature, log_prior)
    if weight >= HIGH:
        logger.warning("the prior's weight reached its bound (%.0f): the prior decides nearly every located answer; check "
                       "that it was trained on this dataset's places", HIGH)
    alone, weighed = Weighed(images, temperature, 0.0, log_prior), Weighed(images, temperature, weight, log_prior)
    ece_alone, _, nll_alone = measure(alone, taxonomy, 1.0, held)
    ece_with, _, nll_with = measure(weighed, taxonomy, 1.0, held)
    info.update(weight=round(weight, 5), nll_image_only=round(nll_alone, 5), nll_with_prior=round(nll_with, 5),
                ece_image_only=ece_alone, ece_with_prior=ece_with, top1_image_only=top1(alone, held),
                top1_with_prior=top1(weighed, held))
    logger.info("prior weight %.3f fit on %d located samples; held out (%d): NLL %.4f → %.4f, top-1 %.2f%% → %.2f%%",
                weight, len(fit_rows), len(held), nll_alone, nll_with, info["top1_image_only"], info["top1_with_prior"])
    return weight, info


def coverage_plot(cal: Calibration, out: Path) -> Path:
    """Accuracy against coverage as the threshold P moves (species and genus, before and after), and both against P."""
    from lit.plots import plt, save_figure

    fig, (ax_cov, ax_p) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"species": "tab:blue", "genus": "tab:green"}
    for name, curve in cal.coverage.items():
        rank, when = name.rsplit("_", 1)
        pts = [(c["coverage"], c["accuracy"], c["min_confidence"]) for c in curve if c["accuracy"] is not None]
        line = "-" if when == "after" else ":"
        label = f"{rank}, " + (f"T={cal.temperature:.2f}" if when == "after" else "T=1")
        ax_cov.plot([p[0] for p in pts], [p[1] for p in pts], line, color=styles[rank], marker="o", ms=3, label=label)
        if when == "after":
            ax_p.plot([p[2] for p in pts], [p[1] for p in pts], "-", color=styles[rank], label=f"{rank} accuracy")
            ax_p.plot([p[2] for p in pts], [p[0] for p in pts], "--", color=styles[rank], label=f"{rank} coverage")
    ax_cov.set_xlabel("coverage: images answered at the rank (%)")
    ax_cov.set_ylabel("accuracy of those answers (%)")
    ax_cov.set_title("Coverage vs accuracy over --min-confidence P")
    ax_p.set_xlabel("--min-confidence P")
    ax_p.set_ylabel("percent")
    ax_p.set_title(f"Calibrated (T={cal.temperature:.2f})")
    for ax in (ax_cov, ax_p):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Held-out {cal.heldout_samples} images: ECE species {cal.ece_before.get('species')} → "
                 f"{cal.ece_after.get('species')} %, genus {cal.ece_before.get('genus')} → {cal.ece_after.get('genus')} %")
    return save_figure(fig, out)


def report_rows(cal: Calibration) -> list[tuple[str, str, str]]:
    """(measure, before, after) rows of the report table."""
    rows = [(f"ECE {rank} (%)", f"{cal.ece_before[rank]:.2f}", f"{cal.ece_after[rank]:.2f}") for rank in cal.ece_before]
    rows.append(("NLL species", f"{cal.nll_before:.4f}", f"{cal.nll_after:.4f}"))
    p = cal.prior
    if cal.prior_weight is not None and p:
        rows.append((f"with the location prior (w={cal.prior_weight:.3g}), {p['located_heldout']} located held-out images:", "image only", "with prior"))
        rows.append(("  NLL species", f"{p['nll_image_only']:.4f}", f"{p['nll_with_prior']:.4f}"))
        rows += [(f"  ECE {rank} (%)", f"{p['ece_image_only'][rank]:.2f}", f"{p['ece_with_prior'][rank]:.2f}") for rank in p["ece_image_only"]]
        rows.append(("  top-1 species (%)", f"{p['top1_image_only']:.2f}", f"{p['top1_with_prior']:.2f}"))
    return rows


__all__ = ["calibrate", "coverage_plot", "is_fit_key", "report_rows", "validation_images"]
