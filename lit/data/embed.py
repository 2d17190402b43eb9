"""Cache the frozen image tower's outputs: one embedding shard per image shard, plus a fingerprinted manifest.

Each sample keeps its key, txt, cls and json and gains `npy` (the tower's output before
normalization, float16 by default). Training on the cache (`data.image_source: cached`) never
decodes a JPEG. Ranks split the shards, DataLoader workers decode and preprocess them in parallel,
batches run across shard boundaries (at positions a resumed run forms the same way), and a
re-run keeps the shards that are already complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lit import dist
from lit.config import Config
from lit.configlib import ConfigError
from lit.data.folders import ShardFolder, open_folder
from lit.data.views import make_view, train_transform
from lit.io import atomic_file, file_sha256, write_json
from lit.log import console, logger
from lit.model import build_model, clip_api, fingerprint, image_tower_locked, preprocess_cfg

FORMAT_VERSION = 1
DTYPES = {"float16": np.float16, "float32": np.float32}
AMP_DTYPES = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}




@dataclass(frozen=True)
class Item:
    """One sample on its way through the tower: where it belongs and what it keeps."""

    shard: int  # position in this rank's list of shards
    key: str
    txt: Any
    cls: int
    meta: Any
    last: int  # the shard's sample count on its last sample (its end), else -1
    bad: str = ""  # why the sample has no image ("" when it has one)


class ShardImages(torch.utils.data.IterableDataset):
    """This rank's shards, decoded and preprocessed in DataLoader workers, as ready-made batches.

    Worker w takes every `workers`-th shard. Batch boundaries sit at fixed positions of each
    worker's stream of samples (multiples of `batch_size`, shards already embedded included),
    so a resumed run forms exactly the batches an uninterrupted one forms (bitwise-equal outputs
    on the CPU), while batches still run across shard boundaries.
    """

    def __init__(self, urls: list[str], counts: list[int], skip: set[int], preprocess: Any, batch_size: int,
                 views: int = 1, view_seed: int = 0, view_transform: Any = None) -> None:
        self.urls, self.counts, self.skip = urls, counts, skip
        self.preprocess, self.batch_size = preprocess, batch_size
        self.views, self.view_seed, self.view_transform = views, view_seed, view_transform

    def _image(self, jpg: Any, key: str) -> torch.Tensor:
        """The plain view, or all K views stacked ([K, C, H, W]; view 0 plain, the others seeded by key)."""
        if self.views == 1:
            return self.preprocess(jpg)
        return torch.stack([make_view(jpg, key, v, self.view_seed, self.preprocess, self.view_transform)
                            for v in range(self.views)])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        position = 0
        pending: list[tuple[Item, torch.Tensor | None]] = []
        for index in range(worker, len(self.urls), workers):
            if index in self.skip:
                position += self.counts[index]
                continue
            if pending and position % self.batch_size == 0:
                yield _collate(pending)
                pending = []
            for item, image in self._samples(index):
                pending.append((item, image))
                position += 1
                if position % self.batch_size == 0:
                    yield _collate(pending)
                    pending = []
        if pending:
            yield _collate(pending)

    def _samples(self, index: int) -> Iterator[tuple[Item, torch.Tensor | None]]:
        """The shard's samples in order, read one ahead (to mark the last): two decoded images at a time, not the shard."""
        pipeline = wds.DataPipeline(wds.SimpleShardList([self.urls[index]]), wds.tarfile_to_samples(),
                                    wds.decode("pil", handler=wds.warn_and_continue))
        previous: dict[str, Any] | None = None
        count = 0
        for sample in pipeline:
            if previous is not None:
                yield self._sample(index, previous, -1)
            previous, count = sample, count + 1
        if previous is None:
            yield Item(index, "", None, -1, None, 0, bad="empty shard"), None
        else:
            yield self._sample(index, previous, count)

    def _sample(self, index: int, s: dict[str, Any], last: int) -> tuple[Item, torch.Tensor | None]:
        item = Item(index, str(s.get("__key__")), s.get("txt"), int(s.get("cls", -1)), s.get("json"), last)
        if "jpg" not in s:
            return replace(item, bad="no jpg"), None
        return item, self._image(s["jpg"], item.key)


def _collate(pending: list[tuple[Item, torch.Tensor | None]]) -> dict[str, Any]:
    images = [img for _, img in pending if img is not None]
    return {"items": [item for item, _ in pending], "images": torch.stack(images) if images else None}


def _write_shard(out: Path, url: str, rows: list[tuple[Item, np.ndarray | None]]) -> dict[str, Any]:
    """One embedding shard, atomically; returns its manifest entry."""
    bad = [{"key": it.key, "shard": Path(url).name, "reason": it.bad} for it, _ in rows if it.bad and it.key]
    count = 0
    with atomic_file(out) as stream:
        writer = wds.TarWriter(stream, encoder=True, mtime=0.0)
        for it, feat in rows:
            if feat is not None:
                writer.write({"__key__": it.key, "npy": feat, "txt": it.txt, "cls": it.cls, "json": it.meta})
                count += 1
        writer.close()
    return {"name": out.name, "samples": count, "sha256": file_sha256(out), "source": Path(url).name, "skipped": bad}


def view_spec(cfg: Config) -> dict[str, Any]:
    """What a cache's views depend on (recorded in its manifest and in each shard's record)."""
    views = cfg.data.views
    return {"views": views, "view_policy": cfg.data.view_policy if views > 1 else "", "view_seed": cfg.data.view_seed if views > 1 else 0}


def _progress(disable: bool) -> Progress:
    return Progress(TextColumn("[bold]embed"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console, disable=disable)


def embed_folder(cfg: Config, source: str | Path, out: str | Path, batch_size: int = 64,
                 dtype: str = "float16", device: str = "auto", *, workers: int | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict[str, Any] | None:
    """Embed every shard of `source` into `out`; rank 0 returns the manifest, others None.

    `workers` DataLoader processes per rank decode and preprocess (default: data.workers).
    `should_stop` is asked after each batch: once it says so, every rank finishes the shards in
    flight (and starts no other), and `{"stopped": True, ...}` is returned (a re-run goes on).
    """
    if dtype not in DTYPES:
        raise ConfigError("", "dtype", f"{dtype!r} is not one of {list(DTYPES)}")
    info = dist.resolve()
    dev = dist.pick_device(info, device)
    dist.init(info, dev)
    workers = cfg.data.workers if workers is None else workers
    threads = torch.get_num_threads()
    if dev.type == "cpu" and workers > 0:
        # the workers decode on their own cores: a tower forward with a thread per core would fight them
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - workers))
    try:
        return _embed(cfg, open_folder(source, "source"), Path(out), batch_size, dtype, dev, info, workers,
                      should_stop or (lambda: False))
    finally:
        torch.set_num_threads(threads)
        dist.shutdown()


def _embed(cfg: Config, folder: ShardFolder, out: Path, batch_size: int, dtype: str, dev: torch.device,
           info: dist.DistInfo, workers: int, should_stop: Callable[[], bool]) -> dict[str, Any] | None:
    built = build_model(cfg.model, dev, seed=cfg.train.seed)
    if not image_tower_locked(built.model):
        raise ConfigError("", "model.lock_image", "cached embeddings need a fully locked image tower (model.lock_image=true, model.unlocked_groups=0)")
    # the tower in half precision on GPUs, as training runs it (train.precision); fp32 stays exact on the CPU
    amp = AMP_DTYPES.get(cfg.train.precision) if dev.type == "cuda" else None
    model = clip_api(built.model.eval())
    tower_fp = fingerprint(built.model, built.preprocess_val)
    out.mkdir(parents=True, exist_ok=True)
    spec = view_spec(cfg)
    done = _complete_parts(out, tower_fp, dtype, spec)
    entries = folder.manifest["shards"]
    mine = [i for i in range(len(folder.urls)) if i % info.world_size == info.rank]
    urls = [folder.urls[i] for i in mine]
    counts = [int(entries[i]["samples"]) for i in mine]
    skip = {k for k, u in enumerate(urls) if "emb-" + Path(u).name in done}
    workers = max(0, min(workers, len(urls) - len(skip)))
    views = cfg.data.views
    train_tf = train_transform(cfg.data.view_policy, preprocess_cfg(built.model)) if views > 1 else None
    data = ShardImages(urls, counts, skip, built.preprocess_val, batch_size, views, cfg.data.view_seed, train_tf)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, pin_memory=dev.type == "cuda",
                                         prefetch_factor=4 if workers else None)
    buffers: dict[int, list[tuple[Item, np.ndarray | None]]] = {}
    total, seen, written = sum(counts[k] for k in range(len(urls)) if k not in skip), 0, 0
    finishing: set[int] | None = None  # after a stop request: the shards in flight, finished before stopping
    autocast = torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    started = time.perf_counter()
    with _progress(disable=not info.is_main) as progress:
        task = progress.add_task("embed", total=total, rate="")
        for batch in loader if total else []:
            feats: Iterator[np.ndarray] = iter(())
            if batch["images"] is not None:
                with torch.no_grad(), autocast:
                    images = batch["images"].to(dev, non_blocking=True)
                    n = images.shape[0]
                    out_feats = model.encode_image(images.flatten(0, 1) if views > 1 else images, normalize=False)
                    arr = out_feats.float().cpu().numpy().astype(DTYPES[dtype])
                    feats = iter(arr.reshape(n, views, -1) if views > 1 else arr)
            for item in batch["items"]:
                feat = None if item.bad else next(feats)
                if finishing is not None and item.shard not in finishing:
                    continue  # started after the stop request: the next run embeds it
                buffers.setdefault(item.shard, []).append((item, feat))
                if item.last >= 0:
                    rows = buffers.pop(item.shard)
                    name = "emb-" + Path(urls[item.shard]).name
                    entry = _write_shard(out / name, urls[item.shard], rows)
                    entry.update(fingerprint=tower_fp, dtype=dtype, **spec)
                    write_json(out / f".{name}.json", entry, indent=None)
                    written += 1
            seen += len(batch["items"])
            progress.update(task, completed=seen, rate=f"{seen / max(time.perf_counter() - started, 1e-9):,.0f}/s")
            if finishing is None and should_stop():
                finishing = set(buffers)
                logger.warning("stop requested: finishing %d shard(s) in flight", len(finishing))
            if finishing is not None and not buffers:
                break
    del loader
    stopped = dist.any_rank(written + len(skip) < len(urls), dev)  # some rank left shards for the next run
    dist.barrier()
    if stopped:
        left = len(folder.urls) - len(_complete_parts(out, tower_fp, dtype, spec))
        logger.warning("embedding stopped on request: %d shards left for the next run", left)
        return {"stopped": True, "shards_left": left}
    return _write_manifest(out, folder, tower_fp, dtype, cfg) if info.is_main else None


def _complete_parts(out: Path, tower_fp: str, dtype: str, spec: dict[str, Any]) -> set[str]:
    """Shards already embedded with this tower, dtype and views whose bytes still match."""
    done = set()
    for part in out.glob(".emb-*.json"):
        entry = json.loads(part.read_text())
        shard = out / entry["name"]
        same = entry.get("fingerprint") == tower_fp and entry.get("dtype") == dtype and all(
            entry.get(k, 1 if k == "views" else "" if k == "view_policy" else 0) == v for k, v in spec.items())
        if same and shard.is_file() and file_sha256(shard) == entry["sha256"]:
            done.add(entry["name"])
    return done


def _write_manifest(out: Path, folder: ShardFolder, tower_fp: str, dtype: str, cfg: Config) -> dict[str, Any]:
    entries = [json.loads((out / f".emb-{Path(u).name}.json").read_text()) for u in folder.urls]
    skipped = [s for e in entries for s in e.pop("skipped")]
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": "embeddings",
        "fingerprint": tower_fp,
        "model": cfg.model.name,
        "dtype": dtype,
        **view_spec(cfg),
        "source": str(folder.path.resolve()),
        "source_manifest_sha256": file_sha256(folder.path / "manifest.json"),
        "shards": entries,
        "total_samples": sum(e["samples"] for e in entries),
        "skipped": skipped,
    }
    if folder.categories_file.is_file():
        shutil.copyfile(folder.categories_file, out / "categories.json")
    write_json(out / "manifest.json", manifest)
    logger.info("embedded %d samples into %d shards in %s (%s)", manifest["total_samples"], len(entries), out, dtype)
    return manifest
