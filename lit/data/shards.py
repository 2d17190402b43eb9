"""Captioned webdataset shards from a dataset split, written in parallel and resumable.

All shards are planned up front from the validated split (seeded shuffle, size limits by
sample count and bytes), so any worker can write any shard and a re-run knows what each
must hold. A worker writes `{name}.tmp`, renames it and records the shard's fingerprint
and sha256 in `.progress/`; a re-run keeps shards whose record and hash match and
rewrites the rest. Members get a fixed mtime and owner: the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import multiprocessing as mp
import os
import random
import re
import stat
import tarfile
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from queue import Empty
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lit.config import CaptionConfig, ShardConfig
from lit.data.captions import CaptionMaker, caption
from lit.data.inat import DatasetError, Split, load_split
from lit.data.tario import FastTarWriter, HashingFile, file_sha256
from lit.log import console, logger

FORMAT = "lit-shards/1"
KEY_DIGITS = 8
MTIME = 0  # every member's mtime: a re-run must give the same bytes
EOI_WINDOW = 64  # a JPEG's end-of-image marker must lie this close to the end of the file
RESIZE_QUALITY = 90


class Sample(NamedTuple):
    """One planned sample, encoded by the parent: all a worker needs."""

    key: str
    path: str
    caption: bytes
    cls: int
    meta: bytes
    size: int
    mtime_ns: int
    image_id: int
    file_name: str


class ShardTask(NamedTuple):
    """One shard to write (or keep): its samples and the completion record of an earlier write."""

    index: int
    name: str
    out_dir: str
    samples: tuple[Sample, ...]
    resize: int
    fingerprint: str
    done: dict[str, Any] | None


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
                head = '{"image_id": %d, "file_name": %s, "category_id": %d, "recipe": "%s", ' % (
                    img.id, quote(img.file_name), img.category_id, recipe)
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


def check_image(data: bytes, resize: int = 0) -> tuple[bytes | None, str]:
    """The bytes to store for one image, or None and why it is skipped.

    Without resizing, a JPEG is checked by its signature and end-of-image marker (what
    truncated downloads and error pages fail; decoding would cost 20x the rest of the
    build) and kept as is; other formats are decoded and re-encoded as JPEG. With resizing
    the image is decoded, scaled so its short side is `resize` (never up) and re-encoded.
    """
    if not data:
        return None, "empty file"
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    if is_jpeg and data.rfind(b"\xff\xd9", max(0, len(data) - EOI_WINDOW)) < 0:
        return None, "corrupt: truncated JPEG (no end-of-image marker)"
    if is_jpeg and resize == 0:
        return data, ""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG" and min(im.size) <= resize:
                im.load()
                return data, ""
            if resize and min(im.size) > resize:
                scale = resize / min(im.size)
                target = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                im.draft("RGB", target)  # libjpeg decodes at a reduced scale first
                rgb = im.convert("RGB").resize(target, Image.Resampling.BICUBIC)
            else:
                rgb = im.convert("RGB")
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=RESIZE_QUALITY)
        return out.getvalue(), ""
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return None, f"corrupt: {type(err).__name__}: {err}"


def read_file(path: str, size: int) -> bytes:
    """A whole file that had `size` bytes when planned: one system call unless it has changed since."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, size + 1)
        if len(data) == size:  # a regular file's short read is its end
            return data
        chunks = [data]
        while chunk := os.read(fd, max(size, 1 << 16)):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_shard(task: ShardTask, report: Callable[[int], None]) -> dict[str, Any]:
    """Write one shard, or keep it when its completion record and hash match; returns its record."""
    out = Path(task.out_dir)
    path, done = out / task.name, task.done
    if done and done.get("fingerprint") == task.fingerprint and path.is_file() and file_sha256(path) == done.get("sha256"):
        report(len(task.samples))
        return {**done, "kept": True}
    tmp = out / f"{task.name}.tmp"
    skipped, count = [], 0
    with tmp.open("wb") as f:
        sink = HashingFile(f)
        writer = FastTarWriter(sink, user="lit", group="lit", mode=0o444, mtime=MTIME, encoder=False)
        for i, s in enumerate(task.samples, 1):
            try:
                data, reason = check_image(read_file(s.path, s.size), task.resize)
            except OSError as err:
                data, reason = None, f"unreadable: {err.strerror or err}"
            if data is None:
                skipped.append({"image_id": s.image_id, "category_id": s.cls, "file_name": s.file_name, "reason": reason})
            else:
                writer.write({"__key__": s.key, "jpg": data, "txt": s.caption, "cls": b"%d" % s.cls, "json": s.meta})
                count += 1
            if i % 64 == 0:
                report(64)
        writer.close()
    os.replace(tmp, path)
    record = {"name": task.name, "samples": count, "bytes": sink.size, "sha256": sink.sha.hexdigest(),
              "fingerprint": task.fingerprint, "skipped": skipped}
    (out / ".progress").mkdir(exist_ok=True)
    _write_json_atomic(out / ".progress" / f"{task.name}.json", record)
    report(len(task.samples) % 64)
    return {**record, "kept": False}


def _serve(tasks: Any, results: Any) -> None:
    """A worker process: write the shards handed out on `tasks` until None; report on `results`."""
    while (task := tasks.get()) is not None:
        try:
            results.put(("done", task.index, write_shard(task, lambda n: results.put(("progress", n, None)))))
        except BaseException:
            results.put(("error", task.index, traceback.format_exc()))
            raise


class _Writers:
    """Processes that write shards, started before planning so that their start overlaps it.

    fork (where available) reuses this process's imports; spawn works too, it only starts
    slower. Each task is pickled once, onto a queue. One worker means this process.
    """

    def __init__(self, workers: int, start_method: str | None) -> None:
        self.procs: list[Any] = []
        self.stopped = False
        if workers > 1:
            ctx = mp.get_context(start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn"))
            self.tasks, self.results = ctx.Queue(), ctx.Queue()
            self.procs = [ctx.Process(target=_serve, args=(self.tasks, self.results), daemon=True) for _ in range(workers)]
            for p in self.procs:
                p.start()

    def __enter__(self) -> _Writers:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if self.procs and exc_type is not None:
            self.tasks.cancel_join_thread()  # unsent tasks must not block this process's exit
            for p in self.procs:
                p.terminate()
        self._stop()
        for p in self.procs:
            p.join()

    def _stop(self) -> None:
        """One None per worker: each exits once the queue before it is done."""
        for _ in self.procs if not self.stopped else ():
            self.tasks.put(None)
        self.stopped = True

    def run(self, tasks: Iterable[ShardTask], bar: Progress, tid: Any) -> list[dict[str, Any]]:
        """Write every task (handed out as they come); the records in task order."""
        if not self.procs:
            return [write_shard(t, lambda n: bar.advance(tid, n)) for t in tasks]
        records: dict[int, dict[str, Any]] = {}
        names: list[str] = []
        for t in tasks:
            while len(names) - len(records) >= 4 * len(self.procs):  # a few tasks ahead, not the whole plan in memory
                self._collect(records, names, bar, tid, block=True)
            self.tasks.put(t)
            names.append(t.name)
            self._collect(records, names, bar, tid, block=False)
        self._stop()  # workers exit as they finish, while the rest completes
        while len(records) < len(names):
            self._collect(records, names, bar, tid, block=True)
        return [records[i] for i in range(len(names))]

    def _collect(self, records: dict[int, dict[str, Any]], names: list[str], bar: Progress, tid: Any, block: bool) -> None:
        """Take the workers' messages: progress, a shard's record, or a worker's error."""
        while True:
            try:
                kind, index, payload = self.results.get(timeout=1.0) if block else self.results.get_nowait()
            except Empty:
                if any(p.exitcode not in (None, 0) for p in self.procs):
                    raise RuntimeError("a shard writer process died (out of memory?); run again to resume") from None
                return
            if kind == "error":
                raise RuntimeError(f"writing {names[index]} failed in a worker:\n{payload}")
            if kind == "progress":
                bar.advance(tid, index)
            else:
                records[index] = payload
                if block:
                    return


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


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def build_shards(root: str | Path, split: str, out_dir: str | Path, shard_cfg: ShardConfig, caption_cfg: CaptionConfig,
                 progress: bool = True, start_method: str | None = None) -> dict[str, Any]:
    """Write `{split}-{index:06d}.tar` shards, `categories.json` and `manifest.json` into `out_dir`.

    The whole split is validated before anything is written. Returns the manifest.
    """
    data = load_split(root, split)
    workers = max(1, min(shard_cfg.workers, -(-len(data.images) // shard_cfg.samples_per_shard)))
    with _Writers(workers, start_method) as writers:
        return _build(data, Path(out_dir), shard_cfg, caption_cfg, writers, progress)


def _build(data: Split, out: Path, shard_cfg: ShardConfig, caption_cfg: CaptionConfig, writers: _Writers,
           progress: bool) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_records(out)
    (out / "manifest.json").unlink(missing_ok=True)  # a manifest always describes a finished build
    ours = re.compile(rf"^{re.escape(data.name)}-(\d{{6}})\.tar(\.tmp)?$")
    for p in out.iterdir():  # partial writes of an earlier run
        if ours.match(p.name) and p.suffix == ".tmp":
            p.unlink()
    settings = json.dumps({"format": FORMAT, "source_sha256": data.source_sha256, "resize": shard_cfg.resize}).encode()
    skipped: list[dict[str, Any]] = []
    classes: Counter[int] = Counter()

    def tasks() -> Iterator[ShardTask]:
        reported = 0
        for i, group in enumerate(plan(data, shard_cfg, caption_cfg, skipped)):
            classes.update(s.cls for s in group)
            bar.advance(tid, len(skipped) - reported)  # images skipped while planning count as done
            reported = len(skipped)
            name = f"{data.name}-{i:06d}.tar"
            yield ShardTask(i, name, str(out), tuple(group), shard_cfg.resize, _fingerprint(settings, group), previous.get(name))

    bar = Progress(TextColumn("[bold]writing shards"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress)
    logger.info("%s: %d images -> shards of up to %d samples in %s", data.name, len(data.images), shard_cfg.samples_per_shard, out)
    with bar:
        tid = bar.add_task("shards", total=len(data.images))
        records = writers.run(tasks(), bar, tid)
        bar.update(tid, completed=len(data.images))
    for p in out.iterdir():  # shards of an earlier plan that had more of them
        m = ours.match(p.name)
        if m and int(m.group(1)) >= len(records):
            p.unlink()
    manifest = _manifest(data, shard_cfg, caption_cfg, records, skipped, classes)
    _write_json_atomic(out / "categories.json", [c.to_json() for c in data.categories])
    _write_json_atomic(out / "manifest.json", manifest)
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
        raise DatasetError(path, "not found: the build has not finished; run `lit shards ROOT --out DIR` (it resumes)")
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


__all__ = ["FORMAT", "Sample", "ShardTask", "build_shards", "check_image", "plan", "read_manifest", "shard_urls",
           "write_shard"]
