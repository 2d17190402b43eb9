"""`lit embed` images/s on this machine, against one core's decode-and-preprocess rate measured in the same run.

The data: toy iNat images at iNat2021's size (500x375 JPEGs), generated once into bench/out/data,
as `lit shards` folders. Interleaved in each round (order rotated, ratios taken within a round):
- one core's PIL decode + open_clip's 224-px eval transform of the cheap tower's JPEGs (the
  `projection` benchmark's measurement), and the same decode + the cheap tower's own preprocess;
- `embed_folder` with a cheap tower (the project's `lit-tiny`: a negligible forward, so the
  figure is the pipeline's: tar reading, decode, preprocess, collate, hand-over, shard writing),
  with 2 DataLoader workers (the new code path) and with 0 (the main process decodes, as the
  old code path did);
- `embed_folder` with the embedded default tower (EfficientNet-Lite0), 2 workers vs 0.
Each embed run starts from a deleted output folder (embed_folder keeps complete shards: a
kept one would not be measured) and counts everything `lit embed` does, start-up included.
CPU seconds per image (this process and its joined workers) are reported too: they hardly
depend on what else the machine runs. No GPU here: the GPU figures come from `bench/gpu_check.py`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _common as common

TRAIN_PER_CLASS = 40  # x 32 toy classes: 1,280 images for the cheap tower (~10 s a run on 2 cores)
DEFAULT_PER_CLASS = 4  # 128 images for the default tower: its forward runs at ~10 images/s on 2 CPU cores
SIZE = (500, 375)
SAMPLES_PER_SHARD = (64, 32)  # cheap, default: enough shards for the workers either way
WORKERS = 2
BATCH = 64
REPEATS = 3
GOAL_PER_WORKER = 0.8  # embed images/s >= 0.8 x workers x one core's decode + eval transform
CHEAP = ("model.name=lit-tiny", "model.image_weights=", "data.image_source=raw")
VARIANTS = ("decode_eval", "decode_own", "cheap_new", "cheap_old", "default_new", "default_old")

LATEST: dict[str, Any] = {}
"""This process's latest figures of the cheap tower (for `bench.projection`, which runs after it in `make bench`)."""


@dataclass(frozen=True)
class Data:
    """The benchmark's shard folders and the cheap folder's JPEG bytes."""

    cheap: Path  # shards of the cheap tower's images (the train split)
    default: Path  # shards of the default tower's images (the val split: fewer)
    jpegs: list[bytes]  # the cheap folder's JPEGs, for the one-core decode

    def images(self, folder: Path) -> int:
        import json

        return int(sum(e["samples"] for e in json.loads((folder / "manifest.json").read_text())["shards"]))


def dataset(train_per_class: int = TRAIN_PER_CLASS, default_per_class: int = DEFAULT_PER_CLASS,
            samples_per_shard: tuple[int, int] = SAMPLES_PER_SHARD) -> Data:
    """The 500x375 toy images and their shards (generated once, reused by later runs)."""
    root = common.toy_root(train_per_class, default_per_class, SIZE)
    return Data(common.shards(root, "train", samples_per_shard[0]), common.shards(root, "val", samples_per_shard[1]),
                common.jpegs(root, "train"))


@dataclass
class Variant:
    """One measured thing: `run` returns images/s; each call also records CPU ms per image."""

    run: Callable[[], float]
    images: int
    rates: list[float] = field(default_factory=list)  # images/s of the measured runs (set by `measure`)
    cpu_ms: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        cpu = common.cpu_seconds()
        rate = self.run()
        self.cpu_ms.append(1e3 * (common.cpu_seconds() - cpu) / self.images)
        return rate


def embed_rate(cfg: Any, source: Path, out: Path, workers: int, images: int, batch_size: int = BATCH) -> Callable[[], float]:
    """A run of `embed_folder` on the CPU into a fresh `out`: images/s, end to end."""
    from lit.data.embed import embed_folder

    def go() -> float:
        shutil.rmtree(out, ignore_errors=True)  # complete shards are kept by a re-run: none may be left
        start = time.perf_counter()
        manifest = embed_folder(cfg, source, out, batch_size, "float16", "cpu", workers=workers)
        wall = time.perf_counter() - start
        if manifest is None or manifest.get("stopped") or manifest.get("total_samples") != images:
            raise RuntimeError(f"embed_folder of {source} embedded {manifest and manifest.get('total_samples')} of {images} images")
        shutil.rmtree(out)
        return images / wall
    return go


def variants(data: Data, workers: int = WORKERS, names: Sequence[str] = VARIANTS) -> dict[str, Variant]:
    """The measured variants (a subset by name), ready to run."""
    import open_clip
    import torch

    from lit.config import load_config
    from lit.model import build_model

    cheap, default = load_config(None, list(CHEAP)), load_config(None, [])
    own = build_model(cheap.model, torch.device("cpu"), seed=0).preprocess_val  # lit-tiny's preprocess (its image size)
    work = common.OUT / "work" / "embed"
    n, n_cheap, n_default = len(data.jpegs), data.images(data.cheap), data.images(data.default)
    make: dict[str, Callable[[], Variant]] = {
        "decode_eval": lambda: Variant(common.decode_rate(data.jpegs, open_clip.image_transform(224, is_train=False)), n),
        "decode_own": lambda: Variant(common.decode_rate(data.jpegs, own), n),
        "cheap_new": lambda: Variant(embed_rate(cheap, data.cheap, work / "cheap", workers, n_cheap), n_cheap),
        "cheap_old": lambda: Variant(embed_rate(cheap, data.cheap, work / "cheap", 0, n_cheap), n_cheap),
        "default_new": lambda: Variant(embed_rate(default, data.default, work / "default", workers, n_default), n_default),
        "default_old": lambda: Variant(embed_rate(default, data.default, work / "default", 0, n_default), n_default),
    }
    return {k: make[k]() for k in names}


def measure(data: Data, repeats: int = REPEATS, workers: int = WORKERS, names: Sequence[str] = VARIANTS,
            max_wait: float = 5.0, warmup: Sequence[str] = ("decode_eval", "decode_own", "cheap_new")) -> dict[str, Variant]:
    """Run the variants interleaved (after a warm-up of some); returns them with their images/s and CPU ms per image."""
    vs = variants(data, workers, names)
    for name in warmup:  # imports, page cache, the first fork: not measured
        if name in vs:
            vs[name].run()
    calls: dict[str, Callable[[], float]] = dict(vs.items())
    for name, values in common.interleaved(calls, repeats, max_wait=max_wait).items():
        vs[name].rates = values
    return vs


def efficiency(embed: Sequence[float], decode: Sequence[float], workers: int) -> list[float]:
    """Share of its workers' one-core decode-and-preprocess rate the embed pipeline reached, per round (at most 1)."""
    return [min(1.0, e / (workers * d)) for e, d in zip(embed, decode)]


def cheap_figures(repeats: int = REPEATS, max_wait: float = 5.0) -> dict[str, Any]:
    """The cheap tower's embed rate and one core's rate with its preprocess: this run's, else measured now."""
    if LATEST:
        return dict(LATEST)
    vs = measure(dataset(), repeats, names=("decode_own", "cheap_new"), max_wait=max_wait)
    return {"decode_own": vs["decode_own"].rates, "embed": vs["cheap_new"].rates, "workers": WORKERS,
            "external_load_cores": common.external_load(),
            "measured_by": "the projection benchmark (the embed benchmark did not run before it in this process)"}


def rows(vs: dict[str, Variant], data: Data, workers: int = WORKERS) -> list[dict[str, Any]]:
    """The benchmark's rows from measured variants."""
    r = {k: v.rates for k, v in vs.items()}
    load = common.external_load()
    w = workers
    params = {"size": f"{SIZE[0]}x{SIZE[1]}", "images": {"cheap": data.images(data.cheap), "default": data.images(data.default),
              "decoded": len(data.jpegs)}, "workers": w, "batch_size": BATCH, "dtype": "float16", "device": "cpu",
              "cheap_tower": "lit-tiny (32-px ViT, random init)", "default_tower": "EfficientNet-Lite0 (embedded defaults)",
              "mean_jpeg_kb": round(statistics.fmean(len(b) for b in data.jpegs) / 1e3, 1) if data.jpegs else 0,
              "cores": os.cpu_count(), "external_load_cores": load, "load_average": [round(x, 2) for x in os.getloadavg()]}
    eff = efficiency(r["cheap_new"], r["decode_own"], w)
    return [
        {"metric": "JPEG decode + eval transform (224 px), 500x375, 1 core", "unit": "images/s", "values": r["decode_eval"],
         "params": params, "note": "the projection benchmark's measurement, on the cheap tower's JPEGs"},
        {"metric": "JPEG decode + lit-tiny preprocess (32 px), 500x375, 1 core", "unit": "images/s", "values": r["decode_own"]},
        {"metric": f"lit embed, lit-tiny, {w} workers", "unit": "images/s", "values": r["cheap_new"]},
        {"metric": "lit embed, lit-tiny, 0 workers (main process decodes)", "unit": "images/s", "values": r["cheap_old"]},
        {"metric": f"lit embed, lit-tiny, {w} workers / 1-core decode + eval transform", "unit": "ratio",
         "values": common.ratios(r["cheap_new"], r["decode_eval"]), "goal": GOAL_PER_WORKER * w,
         "note": f"goal {GOAL_PER_WORKER} x {w} workers; the denominator's 224-px transform costs more per image than "
                 "lit-tiny's 32-px preprocess: the next row compares like with like"},
        {"metric": f"lit embed, lit-tiny, {w} workers / 1-core decode + its own preprocess", "unit": "ratio",
         "values": common.ratios(r["cheap_new"], r["decode_own"]),
         "note": f"{w} would be every worker at one core's rate; the share of that is what bench.projection applies"},
        {"metric": f"lit embed, lit-tiny: {w} workers / 0", "unit": "ratio", "values": common.ratios(r["cheap_new"], r["cheap_old"])},
        {"metric": f"lit embed, lit-tiny, {w} workers: share of its workers' decode rate", "unit": "ratio", "values": eff},
        {"metric": "CPU, 1-core decode + lit-tiny preprocess", "unit": "ms/image", "values": vs["decode_own"].cpu_ms},
        {"metric": f"lit embed CPU, lit-tiny, {w} workers", "unit": "ms/image", "values": vs["cheap_new"].cpu_ms,
         "note": "CPU of this process and its joined DataLoader workers, start-up included: what the pipeline costs whatever the load"},
        {"metric": "lit embed CPU, lit-tiny, 0 workers", "unit": "ms/image", "values": vs["cheap_old"].cpu_ms},
        {"metric": f"lit embed, default tower (EfficientNet-Lite0), {w} workers", "unit": "images/s", "values": r["default_new"]},
        {"metric": "lit embed, default tower (EfficientNet-Lite0), 0 workers", "unit": "images/s", "values": r["default_old"]},
        {"metric": f"lit embed, default tower: {w} workers / 0 (new / old code path)", "unit": "ratio",
         "values": common.ratios(r["default_new"], r["default_old"]),
         "note": "on a CPU the tower's forward dominates, and the workers share its cores"},
    ]


def run() -> list[dict[str, Any]]:
    data = dataset()
    vs = measure(data)
    out = rows(vs, data)
    LATEST.clear()
    LATEST.update(decode_own=vs["decode_own"].rates, decode_eval=vs["decode_eval"].rates, embed=vs["cheap_new"].rates,
                  workers=WORKERS, external_load_cores=out[0]["params"]["external_load_cores"],
                  measured_by="the embed benchmark, earlier in this run")
    out.append({"section": "lit embed on this machine", "markdown": section(out)})
    return out


def section(out: list[dict[str, Any]]) -> str:
    med = {r["metric"]: statistics.median(r["values"]) for r in out if "values" in r}
    w = WORKERS
    return "\n".join([
        f"`lit embed` (`embed_folder`) on this machine's CPU ({os.cpu_count()} cores, shared: see the load average above "
        f"and `external_load_cores` in the setup), {w} DataLoader workers against one core's decode-and-preprocess rate "
        "of the same JPEGs, measured interleaved in the same run.",
        "",
        f"- Cheap tower (lit-tiny): {med[f'lit embed, lit-tiny, {w} workers']:,.0f} images/s with {w} workers, "
        f"{med['lit embed, lit-tiny, 0 workers (main process decodes)']:,.0f} with 0; one core decodes and preprocesses "
        f"{med['JPEG decode + eval transform (224 px), 500x375, 1 core']:,.0f} images/s with the 224-px eval transform, "
        f"{med['JPEG decode + lit-tiny preprocess (32 px), 500x375, 1 core']:,.0f} with lit-tiny's own 32-px preprocess.",
        f"- Default tower (EfficientNet-Lite0): {med[f'lit embed, default tower (EfficientNet-Lite0), {w} workers']:,.1f} "
        f"images/s with {w} workers, {med['lit embed, default tower (EfficientNet-Lite0), 0 workers']:,.1f} with 0: "
        "its forward on the CPU sets the pace.",
        "- GPU figures (ViT-L/14 embed in fp16 vs fp32, and against the tower-only forward rate) stay open: this machine "
        "has no GPU. `python -m bench.gpu_check` measures them on a GPU machine and `python -m bench --gpu` merges them.",
    ])
