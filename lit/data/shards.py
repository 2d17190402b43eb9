"""Captioned webdataset shards from a dataset split, written in parallel and resumable.

All shards are planned up front from the validated split (seeded shuffle, size limits by
sample count and bytes), so any worker can write any shard and a re-run knows what each
must hold. Writers (lit.data.shard_writer) write each shard atomically and record its
fingerprint and sha256 in `.progress/`; a re-run keeps shards whose record and hash match
and rewrites the rest. The manifest, written last, lists every shard and skipped image.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import stat
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lit.config import CaptionConfig, ShardConfig
from lit.data.captions import CaptionMaker, caption
from lit.data.inat import DatasetError, Split, load_split
from lit.data.shard_writer import Sample, ShardTask, ShardWriters
from lit.io import write_json
from lit.log import console, logger

FORMAT = "lit-shards/1"
KEY_DIGITS = 8
_NOWHERE = '"latitude": null, "longitude": null, '


def _stat_chunk(paths: Sequence[str]) -> list[os.stat_result | None]:
    out: list[os.stat_result | None] = []
    for p in paths:
        try:
            out.append(os.stat(p))
        except OSError:
            out.append(None)
    return out


def _tar_bytes(n: int) -> int:
    return tarfile.BLOCKSIZE + -(-n // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def plan(split: Split, shard_cfg: ShardConfig, caption_cfg: CaptionConfig, skipped: list[dict[str, Any]]) -> Iterator[list[Sample]]:
    """The shards' samples, one shard at a time, so that writing starts while planning goes on.

    Each sample's `json` holds its image id, file name, category id, caption recipe, place
    (`latitude`, `longitude` and `day`, the day of year; null where unknown) and taxonomy.

    Images are shuffled with the seed (or keep the file's order), missing and empty ones go
    to `skipped`, and a shard closes at `samples_per_shard` samples or `max_bytes` bytes
    (tar headers and padding included; with resizing the original size, an upper bound).
    On a slow (network) file system, files are stat'ed ahead in threads.
    """
    images = list(split.images)
    if shard_cfg.shuffle:
        random.Random(shard_cfg.seed).shuffle(images)
    make_caption = CaptionMaker(caption_cfg, shard_cfg.seed)
    texts: dict[tuple[int, str], bytes] = {}  # per class and recipe: encoded once
    tails = {c.id: json.dumps(c.taxonomy(), ensure_ascii=False)[1:].encode() for c in split.categories}
    quote = json.encoder.encode_basestring  # json.dumps(ensure_ascii=False) of a string
    empty = 2 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE  # end-of-archive blocks and the last record's padding
    shard: list[Sample] = []
    size = empty
    chunks = [images[i : i + 256] for i in range(0, len(images), 256)]
    base = os.path.join(split.root, "")
    paths = [[name if (name := img.file_name).startswith("/") else base + name for img in chunk] for chunk in chunks]
    start = time.perf_counter()
    first = _stat_chunk(paths[0] if paths else [])
    slow = time.perf_counter() - start > 200e-6 * len(first)  # a network file system: stat ahead in threads
    with ThreadPoolExecutor(16 if slow else 1) as pool:
        ahead = pool.map(_stat_chunk, paths[1:]) if slow else map(_stat_chunk, paths[1:])
        for chunk, chunk_paths, stats in zip(chunks, paths, itertools.chain([first], ahead)):
            for img, path, st in zip(chunk, chunk_paths, stats):
                if st is None or not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                    reason = ("missing: file not found" if st is None else "empty file" if stat.S_ISREG(st.st_mode)
                              else "missing: not a regular file")
                    skipped.append({"image_id": img.id, "category_id": img.category_id, "file_name": img.file_name,
                                    "reason": reason})
                    continue
                key = f"{img.id:0{KEY_DIGITS}d}"
                recipe = make_caption.recipe_for(key)
                text = texts.get((img.category_id, recipe))
                if text is None:
                    text = texts[img.category_id, recipe] = caption(
                        split.category_by_id[img.category_id], recipe, caption_cfg.prefix).encode()
                place = img.place  # NaN != NaN: unknown parts are null; repr round-trips a float
                lat, lon, day = place.lat, place.lon, place.day
                where = f'"latitude": {lat!r}, "longitude": {lon!r}, ' if lat == lat and lon == lon else _NOWHERE
                head = '{"image_id": %d, "file_name": %s, "category_id": %d, "recipe": "%s", %s"day": %s, ' % (  # noqa: UP031 (per-image hot path)
                    img.id, quote(img.file_name), img.category_id, recipe, where, "null" if day != day else int(day))
                sample = Sample(key, path, text, img.category_id, head.encode() + tails[img.category_id], st.st_size,
                                st.st_mtime_ns, img.id, img.file_name)
                n = sum(map(_tar_bytes, (st.st_size, len(text), len(str(img.category_id)), len(sample.meta))))
                if shard and (len(shard) >= shard_cfg.samples_per_shard or size + n > shard_cfg.max_bytes):
                    yield shard
                    shard, size = [], empty
                shard.append(sample)
                size += n
    if shard:
        yield shard


def _fingerprint(settings: bytes, group: Sequence[Sample]) -> str:
    """What a shard's bytes depend on: the settings and each sample with its file's size and mtime."""
    h = hashlib.sha256(settings)
    for s in group:
        h.update(b"\0".join((s.key.encode(), s.path.encode(), s.caption, b"%d" % s.cls, s.meta,
                             b"%d:%d" % (s.size, s.mtime_ns))) + b"\n")
    return h.hexdigest()


def _previous_records(out: Path) -> dict[str, dict[str, Any]]:
    """Completion records of an earlier run: the manifest's shards, then `.progress/` files."""
    records: dict[str, dict[str, Any]] = {}
    try:
        manifest = read_manifest(out)
        for s in manifest["shards"]:
            records[s["name"]] = {**s, "skipped": [k for k in manifest["skipped"] if k.get("shard") == s["name"]]}
    except (DatasetError, KeyError, TypeError):
        pass
    for p in sorted((out / ".progress").glob("*.json")):
        try:
            records[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue  # a torn record: that shard is rewritten
    return records


def build_shards(root: str | Path, split: str, out_dir: str | Path, shard_cfg: ShardConfig, caption_cfg: CaptionConfig,
                 progress: bool = True, start_method: str | None = None, *, part: tuple[int, int] = (0, 1),
                 should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Write `{split}-{index:06d}.tar` shards, `categories.json` and `manifest.json` into `out_dir`.

    The whole split is validated before anything is written. Returns the manifest.
    `part=(rank, tasks)`: this task writes every `tasks`-th shard (the plan is the same in every
    task); task 0 then waits for the others' completion records and writes the manifest, the
    others return `{"part_done": True}`. `should_stop` is asked before each shard is handed out:
    when it says so the shards in flight are finished and `{"stopped": True}` is returned.
    """
    data = load_split(root, split)
    workers = max(1, min(shard_cfg.workers, -(-len(data.images) // shard_cfg.samples_per_shard)))
    with ShardWriters(workers, start_method) as writers:
        return _build(data, Path(out_dir), shard_cfg, caption_cfg, writers, progress, part, should_stop or (lambda: False))


def _wait_for_records(out: Path, names: list[str], should_stop: Callable[[], bool]) -> dict[str, dict[str, Any]] | None:
    """The completion records of every named shard, once the other tasks wrote them (None: stop requested)."""
    while True:
        found = {}
        for name in names:
            try:
                found[name] = json.loads((out / ".progress" / f"{name}.json").read_text())
            except (OSError, ValueError):
                break
        if len(found) == len(names):
            return found
        if should_stop():
            return None
        time.sleep(0.5)


def _build(data: Split, out: Path, shard_cfg: ShardConfig, caption_cfg: CaptionConfig, writers: ShardWriters,
           progress: bool, part: tuple[int, int], should_stop: Callable[[], bool]) -> dict[str, Any]:
    rank, tasks_total = part
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_records(out)
    if rank == 0:
        (out / "manifest.json").unlink(missing_ok=True)  # a manifest always describes a finished build
    ours = re.compile(rf"^{re.escape(data.name)}-(\d{{6}})\.tar$")
    partial = re.compile(rf"^\.{re.escape(data.name)}-(\d{{6}})\.tar\.tmp-\d+$")
    for p in out.iterdir():  # partial writes of an earlier run (lit.io.atomic_file's temporary names)
        if partial.match(p.name):
            p.unlink()
    settings = json.dumps({"format": FORMAT, "source_sha256": data.source_sha256, "resize": shard_cfg.resize}).encode()
    skipped: list[dict[str, Any]] = []
    classes: Counter[int] = Counter()

    names: list[str] = []  # every shard of the plan, this task's or not
    stopped = False
    handed = itertools.count()  # positions among the shards this task writes (ShardWriters orders by them)

    def tasks() -> Iterator[ShardTask]:
        nonlocal stopped
        reported = 0
        for i, group in enumerate(plan(data, shard_cfg, caption_cfg, skipped)):
            classes.update(s.cls for s in group)
            bar.advance(tid, len(skipped) - reported)  # images skipped while planning count as done
            reported = len(skipped)
            name = f"{data.name}-{i:06d}.tar"
            names.append(name)
            if i % tasks_total != rank or stopped:
                bar.advance(tid, len(group))
                continue
            if should_stop():
                stopped = True
                logger.warning("%s: stop requested: finishing the shards in flight", data.name)
                continue
            yield ShardTask(next(handed), name, str(out), tuple(group), shard_cfg.resize, _fingerprint(settings, group),
                            previous.get(name))

    bar = Progress(TextColumn("[bold]writing shards"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress)
    logger.info("%s: %d images -> shards of up to %d samples in %s", data.name, len(data.images), shard_cfg.samples_per_shard, out)
    with bar:
        tid = bar.add_task("shards", total=len(data.images))
        mine = writers.run(tasks(), bar, tid)
        bar.update(tid, completed=len(data.images))
    if stopped:
        return {"stopped": True, "split": data.name}
    if rank != 0:
        return {"part_done": True, "split": data.name, "shards": len(mine)}
    found = {r["name"]: r for r in mine} if tasks_total == 1 else _wait_for_records(out, names, should_stop)
    if found is None:
        return {"stopped": True, "split": data.name}
    records = [found[n] for n in names]
    for p in out.iterdir():  # shards of an earlier plan that had more of them
        m = ours.match(p.name)
        if m and int(m.group(1)) >= len(records):
            p.unlink()
    manifest = _manifest(data, shard_cfg, caption_cfg, records, skipped, classes)
    write_json(out / "categories.json", [c.to_json() for c in data.categories])
    write_json(out / "manifest.json", manifest)
    for p in sorted((out / ".progress").glob("*")):  # the manifest now holds every completion record
        p.unlink()
    if (out / ".progress").is_dir():
        (out / ".progress").rmdir()
    _log_summary(manifest, sum(1 for r in records if r.get("kept")))
    return manifest


def _manifest(data: Split, shard_cfg: ShardConfig, caption_cfg: CaptionConfig, records: list[dict[str, Any]],
              skipped: list[dict[str, Any]], planned: Counter[int]) -> dict[str, Any]:
    late = [{**k, "shard": r["name"]} for r in records for k in r["skipped"]]
    classes = planned - Counter(k["category_id"] for k in late)  # drops classes left with no sample
    return {
        "format": FORMAT, "split": data.name,
        "source": {"root": str(data.root.resolve()), "annotations": f"{data.name}.json", "sha256": data.source_sha256},
        "recipe": caption_cfg.recipe, "mixed_recipes": list(caption_cfg.mixed_recipes), "prefix": caption_cfg.prefix,
        **{k: v for k, v in asdict(shard_cfg).items() if k != "workers"},
        "shards": [{k: r[k] for k in ("name", "samples", "bytes", "sha256", "fingerprint")} for r in records],
        "totals": {"shards": len(records), "samples": sum(r["samples"] for r in records), "bytes": sum(r["bytes"] for r in records),
                   "images": len(data.images), "skipped": len(skipped) + len(late)},
        "num_classes": len(classes), "num_categories": len(data.categories),
        "class_counts": {str(k): classes[k] for k in sorted(classes)},
        "skipped": sorted(skipped + late, key=lambda k: k["image_id"]),
    }


def _log_summary(manifest: dict[str, Any], kept: int) -> None:
    t = manifest["totals"]
    logger.info("%d shards (%d kept from an earlier run), %d samples, %.1f MB, %d classes",
                t["shards"], kept, t["samples"], t["bytes"] / 1e6, manifest["num_classes"])
    if manifest["skipped"]:
        reasons = Counter(k["reason"].split(":")[0] for k in manifest["skipped"])
        logger.warning("skipped %d images (%s); each is listed with its reason under 'skipped' in manifest.json",
                       len(manifest["skipped"]), ", ".join(f"{n} {r}" for r, n in reasons.most_common()))


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    """The manifest of a finished shard build."""
    path = Path(shard_dir) / "manifest.json"
    if not path.is_file():
        raise DatasetError(path, "not found: the build has not finished; run `lit shards JOB.yaml --split SPLIT` again (it resumes)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise DatasetError(path, f"malformed JSON: {err}; rebuild the shards") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(path, f"not a {FORMAT} manifest; rebuild the shards with this version", "", "format")
    return manifest


def shard_urls(shard_dir: str | Path) -> list[str]:
    """Absolute paths of the shards, in manifest order."""
    base = Path(shard_dir).resolve()
    return [str(base / s["name"]) for s in read_manifest(shard_dir)["shards"]]


__all__ = ["FORMAT", "build_shards", "plan", "read_manifest", "shard_urls"]
