"""webdataset pipelines: training batches (raw images or cached embeddings) and evaluation batches.

Training: each (rank, worker) owns a disjoint slice of the shard list and resamples from it
with a seed fixed by (run seed, epoch, rank, worker); a seeded shuffle buffer follows. The
stream is a pure function of those seeds, so a resume at micro-batch k of an epoch rebuilds
the epoch's pipeline and drops the first samples before decoding: exactly the batches an
uninterrupted run would have seen next. Augmentation is seeded per sample for the same reason.
Batches carry each sample's place (`places`, [N, 3]: latitude, longitude, day of year; NaN where
unknown) for the location prior.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from lit.configlib import ConfigError
from lit.data.views import make_view, pick_view
from lit.log import logger


def _seed(*parts: int) -> int:
    """Process-independent seed from integers (Python's hash of str is salted per process)."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) & 0x7FFFFFFF


def sample_seed(key: str) -> int:
    return int(key) if key.isdigit() else zlib.crc32(key.encode())


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class _Errors:
    """Counts samples dropped in this worker (bad tar members, undecodable images) and logs each."""

    count = 0

    @classmethod
    def handler(cls, exn: Exception) -> bool:
        cls.count += 1
        logger.warning("skipped a bad sample (%d so far in this worker): %s", cls.count, exn)
        return True  # continue


class SplitResampledShards(IterableDataset):
    """Shard URLs split by rank and worker, then resampled with a seeded RNG (infinite)."""

    def __init__(self, urls: list[str], seed: int, epoch: int, rank: int, world: int) -> None:
        super().__init__()
        self.urls, self.seed, self.epoch, self.rank, self.world = urls, seed, epoch, rank, world

    def __iter__(self) -> Iterator[dict[str, str]]:
        worker, num_workers = _worker()
        slot, slots = self.rank * num_workers + worker, self.world * num_workers
        mine = self.urls[slot::slots]
        rng = random.Random(_seed(self.seed, self.epoch, slot))
        while True:
            yield {"url": rng.choice(mine)}


class SplitShards(IterableDataset):
    """Each shard once, split by rank and worker (evaluation, embedding)."""

    def __init__(self, urls: list[str], rank: int, world: int) -> None:
        super().__init__()
        self.urls, self.rank, self.world = urls, rank, world

    def __iter__(self) -> Iterator[dict[str, str]]:
        worker, num_workers = _worker()
        for url in self.urls[self.rank :: self.world][worker::num_workers]:
            yield {"url": url}


def _drop(src: Iterable[Any], n: int) -> Iterator[Any]:
    """Drop the first n items (a resume's already-trained samples, before any decoding)."""
    return itertools.islice(src, n, None)


@dataclass(frozen=True)
class Stream:
    """What a pipeline needs to know about its data and model."""

    urls: list[str]
    cached: bool
    preprocess: Callable[[Any], torch.Tensor] | None
    tokenizer: Callable[..., torch.Tensor] | None
    seed: int = 0
    views: int = 1
    """Views per image (`data.views`): one is picked per sample per epoch (`lit.data.views.pick_view`)."""
    view_seed: int = 0
    view_transform: Callable[[Any], torch.Tensor] | None = None
    """Raw path with views > 1: the transform of views 1..K-1 (view 0 is `preprocess`)."""


_UNKNOWN = (math.nan, math.nan, math.nan)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def sample_place(meta: Any) -> tuple[float, float, float]:
    """(latitude, longitude, day of year) of a sample's `json` meta (decoded or not); NaN where unknown.

    Shards written before places were recorded, and samples without a usable meta, give NaN.
    Coordinates come both or neither.
    """
    if isinstance(meta, (bytes, str)):
        try:
            meta = json.loads(meta)
        except ValueError:
            return _UNKNOWN
    if not isinstance(meta, dict):
        return _UNKNOWN
    lat, lon = _number(meta.get("latitude")), _number(meta.get("longitude"))
    if lat != lat or lon != lon:
        lat = lon = math.nan
    return lat, lon, _number(meta.get("day"))


@dataclass(frozen=True)
class ToTuple:
    """Decoded sample → (image or embedding, tokens, category id, key, place). A class, so spawn can pickle it."""

    stream: Stream
    epoch: int
    augment_seeded: bool

    def __call__(self, sample: dict[str, Any]) -> tuple:
        key = sample["__key__"]
        stream = self.stream
        if stream.cached:
            array = np.asarray(sample["npy"])
            if array.ndim == 2:  # a cache of K views: this epoch's view when training on views, else the plain one
                array = array[pick_view(stream.seed, self.epoch, key, array.shape[0]) if stream.views > 1 else 0]
            image = torch.from_numpy(array)
        elif stream.preprocess is None:
            raise TypeError("a stream of raw images (cached=False) needs a preprocess")
        elif stream.views > 1 and stream.view_transform is not None:
            view = pick_view(stream.seed, self.epoch, key, stream.views)
            image = make_view(sample["jpg"], key, view, stream.view_seed, stream.preprocess, stream.view_transform)
        elif self.augment_seeded:
            # Per-sample augmentation seed: identical whatever came before (exact resume).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(stream.seed, self.epoch, sample_seed(key)))
                image = stream.preprocess(sample["jpg"])
        else:
            image = stream.preprocess(sample["jpg"])
        text = sample["txt"]
        tokens = stream.tokenizer([text])[0] if stream.tokenizer is not None else text
        return image, tokens, int(sample["cls"]), key, sample_place(sample.get("json"))


def _collate(samples: list[tuple]) -> dict[str, Any]:
    worker, _ = _worker()
    images, tokens, labels, keys, places = zip(*samples)
    return {
        "images": torch.stack(images),
        "tokens": torch.stack(tokens) if isinstance(tokens[0], torch.Tensor) else list(tokens),
        "labels": torch.tensor(labels, dtype=torch.long),
        "keys": list(keys),
        "places": torch.tensor(places, dtype=torch.float32),
        "worker": worker,
        "bad_samples": _Errors.count,
    }


def _decode_stage(cached: bool) -> Any:
    return wds.decode(handler=_Errors.handler) if cached else wds.decode("pil", handler=_Errors.handler)


def train_pipeline(
    stream: Stream, *, epoch: int, rank: int, world: int, batch_size: int, shuffle_buffer: int,
    skip_micro_batches: int, workers: int,
) -> wds.DataPipeline:
    """Infinite training batches for one epoch of one rank, starting after `skip_micro_batches`.

    The DataLoader takes batches from its workers in turn, starting with worker 0, so a skip
    must be a multiple of the worker count: each worker drops the same number of batches.
    """
    num_workers = max(1, workers)
    if skip_micro_batches % num_workers:
        raise ValueError(f"skip {skip_micro_batches} is not a multiple of {num_workers} workers")

    stages: list[Any] = [
        SplitResampledShards(stream.urls, stream.seed, epoch, rank, world),
        wds.tarfile_to_samples(handler=_Errors.handler),
    ]
    if shuffle_buffer > 0:
        # One RNG per (epoch, rank): each worker gets its own copy of it through the fork.
        stages.append(wds.shuffle(shuffle_buffer, initial=shuffle_buffer, rng=random.Random(_seed(stream.seed, epoch, rank, 1))))
    stages += [
        partial(_drop, n=skip_micro_batches // num_workers * batch_size),
        _decode_stage(stream.cached),
        wds.map(ToTuple(stream, epoch, augment_seeded=not stream.cached), handler=_Errors.handler),
        wds.batched(batch_size, collation_fn=_collate, partial=False),
    ]
    return wds.DataPipeline(*stages)


def in_subset(sample: dict[str, Any], fraction: float) -> bool:
    """A fixed pseudo-random subset by key: the same samples whatever the ranks, workers or shard order."""
    return zlib.crc32(sample["__key__"].encode()) < fraction * 2**32


def eval_pipeline(stream: Stream, *, rank: int, world: int, batch_size: int, fraction: float = 1.0) -> wds.DataPipeline:
    """Every sample of this rank's share once, in order; `fraction` < 1 keeps a fixed subset (by key hash)."""
    stages: list[Any] = [SplitShards(stream.urls, rank, world), wds.tarfile_to_samples(handler=_Errors.handler)]
    if fraction < 1.0:
        stages.append(wds.select(partial(in_subset, fraction=fraction)))
    stages += [
        _decode_stage(stream.cached),
        wds.map(ToTuple(stream, 0, augment_seeded=False), handler=_Errors.handler),
        wds.batched(batch_size, collation_fn=_collate, partial=True),
    ]
    return wds.DataPipeline(*stages)


def make_loader(pipeline: wds.DataPipeline, workers: int, seed: int) -> wds.WebLoader:
    """A DataLoader over a batching pipeline (batches are formed in the workers)."""
    generator = torch.Generator().manual_seed(seed)
    return wds.WebLoader(
        pipeline, batch_size=None, num_workers=workers, generator=generator,
        persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
    )


def check_shard_count(n_shards: int, workers: int, world: int, folder: str | Path, key: str = "data.workers") -> None:
    """Each (rank, worker) needs at least one shard of its own."""
    slots = max(1, workers) * world
    if n_shards < slots:
        raise ConfigError(
            "", key,
            f"{folder} has {n_shards} shards but {max(1, workers)} workers x {world} ranks = {slots} readers need one each: "
            f"lower data.workers to {max(1, n_shards // world)} or rebuild with smaller shards (shards.samples_per_shard)",
        )


def batch_counts(batches: Iterator[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], int]]:
    """Yield each batch with this rank's total of bad samples so far (latest count of each worker)."""
    latest: dict[int, int] = {}
    for batch in batches:
        latest[batch["worker"]] = batch["bad_samples"]
        yield batch, sum(latest.values())
