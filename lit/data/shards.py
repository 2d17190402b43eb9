"""Captioned webdataset shards from a dataset split, written in parallel and resumable.

All shards are planned up front from the validated split (seeded shuffle, size limits by
sample count and bytes), so any shard can be written by any worker and a re-run knows
what each shard must hold. A worker writes `{name}.tmp`, renames it and records the
shard's fingerprint and sha256 in `.progress/`; a re-run keeps shards whose record and
hash match and rewrites the rest. Tar members get a fixed mtime and owner, so the same
inputs give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import random
import re
import tarfile
import stat as stat_mod
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Empty
from typing import Any, Callable, NamedTuple, Sequence

from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from webdataset import TarWriter

from lit.config import CaptionConfig, ShardConfig
from lit.data.captions import CaptionMaker, caption
from lit.data.inat import RANKS, Category, DatasetError, Split, load_split
from lit.log import console, logger

FORMAT = "lit-shards/1"
KEY_DIGITS = 8
MTIME = 0  # every tar member's mtime: a re-run must give the same bytes
BLOCK, RECORD = 512, 10240  # tar block and record sizes (tarfile.RECORDSIZE)
EOI_WINDOW = 64  # the JPEG end-of-image marker must lie this close to the end of the file
RESIZE_QUALITY = 90


class Sample(NamedTuple):
    """One planned sample: everything a worker needs, encoded by the parent."""

    key: str
    path: str
    caption: bytes
    cls: int
    meta: bytes
    size: int
    image_id: int
    file_name: str


@dataclass(frozen=True)
class ShardTask:
    """One shard to write (or keep): its samples and the record of a previous complete write."""

    index: int
    name: str
    out_dir: str
    samples: tuple[Sample, ...]
    resize: int
    fingerprint: str
    done: dict[str, Any] | None


def _tar_size(n: int) -> int:
    return BLOCK + -(-n // BLOCK) * BLOCK


def taxonomy(cat: Category) -> dict[str, str]:
    """The taxonomy fields of a sample's `json` member."""
    return {"name": cat.name, "common_name": cat.common_name, "supercategory": cat.supercategory,
            **{rank: cat.taxon(rank) for rank in RANKS}}


def sample_json(cat: Category, image_id: int, file_name: str, recipe: str) -> bytes:
    """The `json` member: ids, file name, the caption's recipe and the taxonomy."""
    meta = {"image_id": image_id, "file_name": file_name, "category_id": cat.id, "recipe": recipe, **taxonomy(cat)}
    return json.dumps(meta, ensure_ascii=False).encode("utf-8")


def plan_samples(split: Split, shard_cfg: ShardConfig, caption_cfg: CaptionConfig) -> tuple[list[Sample], list[dict[str, Any]], str]:
    """Samples in shard order, images skipped up front (missing, empty) and a digest of the files' state."""
    paths = [split.root / img.file_name for img in split.images]

    def stat(chunk: Sequence[Path]) -> list[os.stat_result | None]:
        out: list[os.stat_result | None] = []
        for p in chunk:
            try:
                out.append(p.stat())
            except OSError:
                out.append(None)
        return out

    chunks = [paths[i : i + 4096] for i in range(0, len(paths), 4096)]
    with ThreadPoolExecutor(min(16, len(chunks) or 1)) as pool:  # stat is I/O bound: threads hide network FS latency
        stats = [st for part in pool.map(stat, chunks) for st in part]
    make_caption = CaptionMaker(caption_cfg, shard_cfg.seed)
    # Per class and recipe, the caption and the taxonomy's JSON are the same: encode them once.
    texts: dict[tuple[int, str], bytes] = {}
    tails = {c.id: json.dumps(taxonomy(c), ensure_ascii=False)[1:].encode("utf-8") for c in split.categories}
    samples, skipped, state = [], [], hashlib.sha256()
    for img, path, st in zip(split.images, paths, stats):
        if st is None or not stat_mod.S_ISREG(st.st_mode) or st.st_size == 0:
            reason = "empty file" if st is not None and st.st_size == 0 else "missing: file not found"
            skipped.append({"image_id": img.id, "file_name": img.file_name, "reason": reason})
            continue
        state.update(f"{img.id}:{st.st_size}:{st.st_mtime_ns};".encode())
        key = f"{img.id:0{KEY_DIGITS}d}"
        recipe = make_caption.recipe_for(key)
        if (img.category_id, recipe) not in texts:
            texts[img.category_id, recipe] = caption(split.category_by_id[img.category_id], recipe, caption_cfg.prefix).encode("utf-8")
        head = json.dumps({"image_id": img.id, "file_name": img.file_name, "category_id": img.category_id, "recipe": recipe},
                          ensure_ascii=False)[:-1].encode("utf-8")
        samples.append(Sample(key, str(path), texts[img.category_id, recipe], img.category_id,
                              head + b", " + tails[img.category_id], st.st_size, img.id, img.file_name))
    if shard_cfg.shuffle:
        random.Random(shard_cfg.seed).shuffle(samples)
    return samples, skipped, state.hexdigest()


def plan_shards(samples: Sequence[Sample], samples_per_shard: int, max_bytes: int) -> list[list[Sample]]:
    """Cut samples into shards of at most `samples_per_shard` samples and about `max_bytes` bytes.

    Bytes count tar headers and padding; with resizing, the original image size is used
    (an upper bound when images are scaled down).
    """
    shards: list[list[Sample]] = [[]]
    size = 2 * BLOCK + RECORD  # end-of-archive blocks and the last record's padding
    for s in samples:
        n = _tar_size(s.size) + _tar_size(len(s.caption)) + _tar_size(len(str(s.cls))) + _tar_size(len(s.meta))
        if shards[-1] and (len(shards[-1]) >= samples_per_shard or size + n > max_bytes):
            shards.append([])
            size = 2 * BLOCK + RECORD
        shards[-1].append(s)
        size += n
    return [s for s in shards if s]


def check_image(data: bytes, resize: int = 0) -> tuple[bytes | None, str]:
    """The bytes to store for one image, or None and why it is skipped.

    Without resizing a JPEG is checked by signature and end-of-image marker only (what
    truncated downloads and error pages fail; a full decode would cost 20x the rest of the
    build) and stored as is; other formats are decoded and re-encoded as JPEG. With resizing
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
                im.verify()
                return data, ""
            if resize and min(im.size) > resize:
                scale = resize / min(im.size)
                target = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                im.draft("RGB", target)  # let libjpeg decode at a reduced scale first
                rgb = im.convert("RGB").resize(target, Image.Resampling.BICUBIC)
            else:
                rgb = im.convert("RGB")
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=RESIZE_QUALITY)
        return out.getvalue(), ""
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return None, f"corrupt: {type(err).__name__}: {err}"


class _Headers:
    """tarfile's ustar headers for members that differ only in name and size, about 10x faster.

    Members that TarWriter writes share mode, owner, mtime and type: a header tarfile built
    once gets each member's name and size patched in and its checksum adjusted. A name that
    is not ASCII or longer than 100 bytes, or a size of 8 GiB or more, takes tarfile's path.
    """

    def __init__(self) -> None:
        self.templates: dict[tuple[Any, ...], tuple[bytes, int]] = {}

    def __call__(self, info: tarfile.TarInfo) -> bytes:
        shared = (info.mode, info.uid, info.gid, info.mtime, info.uname, info.gname, info.type)
        try:
            name = info.name.encode("ascii")
        except UnicodeEncodeError:
            name = b""
        if not name or len(name) > 100 or info.size >= 8**11 or info.linkname or info.devmajor or info.devminor:
            return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
        if shared not in self.templates:
            blank = tarfile.TarInfo("")
            blank.mode, blank.uid, blank.gid, blank.mtime, blank.uname, blank.gname, blank.type = shared
            base = blank.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
            # The checksum counts its own 8-byte field as spaces, and our name and size fields are patched in.
            self.templates[shared] = base, 256 + sum(base[100:124]) + sum(base[136:148]) + sum(base[156:])
        base, partial = self.templates[shared]
        size = b"%011o\0" % info.size
        checksum = partial + sum(name) + sum(size)
        return b"".join((name, bytes(100 - len(name)), base[100:124], size, base[136:148], b"%06o\0" % checksum, base[155:]))


class _TarFile(tarfile.TarFile):
    """tarfile's regular writer, one write per member: no per-member `copy.copy` or chunked copy (same bytes)."""

    headers = _Headers()
    zeros = bytes(tarfile.BLOCKSIZE)

    def addfile(self, tarinfo: tarfile.TarInfo, fileobj: Any = None) -> None:
        header = self.headers(tarinfo)
        data = fileobj.getvalue() if fileobj is not None else b""  # TarWriter passes a BytesIO: no copy
        pad = -len(data) % tarfile.BLOCKSIZE
        self.fileobj.write(b"".join((header, data, self.zeros[:pad])))
        self.offset += len(header) + len(data) + pad
        self.members.append(tarinfo)


class _TarWriter(TarWriter):
    """webdataset's TarWriter on a regular (not streaming) tar file, in the ustar format it intends.

    TarWriter opens tarfile in stream mode ("w|"), whose buffer concatenates bytes: about
    0.3 ms per 60 KB image, more than all the rest of a sample. The archive bytes are the same.
    """

    def __init__(self, fileobj: Any, **kw: Any) -> None:
        super().__init__(fileobj, **kw)
        self.tarstream.fileobj.close()  # the unused stream: nothing buffered, the file stays open
        self.tarstream = _TarFile(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)


class _HashingFile:
    """A write-only file that hashes and counts what passes through."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.size


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def write_shard(task: ShardTask, report: Callable[[int], None]) -> dict[str, Any]:
    """Write one shard (or keep it when its completion record and hash match); returns its record."""
    out = Path(task.out_dir)
    path, progress_file = out / task.name, out / ".progress" / f"{task.name}.json"
    done = task.done
    if done and done.get("fingerprint") == task.fingerprint and path.is_file() and file_sha256(path) == done.get("sha256"):
        report(len(task.samples))
        return {**done, "kept": True}
    tmp = out / f"{task.name}.tmp"
    skipped, count, pending = [], 0, 0
    with tmp.open("wb") as f:
        sink = _HashingFile(f)
        writer = _TarWriter(sink, user="lit", group="lit", mode=0o444, mtime=MTIME, encoder=False)
        for s in task.samples:
            try:
                with open(s.path, "rb", buffering=0) as img:  # unbuffered: one read, no copy
                    data, reason = check_image(img.readall(), task.resize)
            except OSError as err:
                data, reason = None, f"unreadable: {err.strerror or err}"
            if data is None:
                skipped.append({"image_id": s.image_id, "file_name": s.file_name, "reason": reason})
            else:
                writer.write({"__key__": s.key, "jpg": data, "txt": s.caption, "cls": b"%d" % s.cls, "json": s.meta})
                count += 1
            pending += 1
            if pending == 64:
                report(pending)
                pending = 0
        writer.close()
    os.replace(tmp, path)
    record = {"name": task.name, "samples": count, "bytes": sink.size, "sha256": sink.sha.hexdigest(),
              "fingerprint": task.fingerprint, "skipped": skipped}
    progress_file.parent.mkdir(exist_ok=True)
    _write_json_atomic(progress_file, record)
    report(pending)
    return {**record, "kept": False}


_QUEUE: Any = None


def _init_worker(queue: Any) -> None:
    global _QUEUE
    _QUEUE = queue


def _worker(task: ShardTask) -> dict[str, Any]:
    return write_shard(task, _QUEUE.put)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _previous_records(out: Path) -> dict[str, dict[str, Any]]:
    """Completion records of an earlier run: the manifest's shards, then `.progress/` files."""
    records: dict[str, dict[str, Any]] = {}
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        if manifest.get("format") == FORMAT:
            for s in manifest["shards"]:
                records[s["name"]] = {**s, "skipped": [k for k in manifest["skipped"] if k.get("shard") == s["name"]]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for p in sorted((out / ".progress").glob("*.json")):
        try:
            records[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue  # a torn record: that shard is rewritten
    return records


def _run_tasks(tasks: list[ShardTask], workers: int, progress: bool, total: int, start_method: str | None) -> list[dict[str, Any]]:
    bar = Progress(TextColumn("[bold]writing shards"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress)
    if workers <= 1:
        with bar:
            tid = bar.add_task("shards", total=total)
            return [write_shard(t, lambda n: bar.advance(tid, n)) for t in tasks]
    # fork (where available) reuses this process's imports; spawn works too, it only starts slower.
    ctx = mp.get_context(start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn"))
    queue = ctx.Queue()
    with ctx.Pool(workers, initializer=_init_worker, initargs=(queue,)) as pool:  # workers start before any thread
        with bar:
            tid = bar.add_task("shards", total=total)
            result = pool.map_async(_worker, tasks, chunksize=1)
            while not result.ready():
                try:
                    bar.advance(tid, queue.get(timeout=0.1))
                except Empty:
                    pass
            records = result.get()  # re-raises a worker's error
            bar.update(tid, completed=total)
    return records


def _fingerprint(settings: bytes, group: Sequence[Sample]) -> str:
    """What a shard's bytes depend on: the settings and every planned sample (image size and mtime via settings)."""
    h = hashlib.sha256(settings)
    for s in group:
        h.update(b"\0".join((s.key.encode(), s.path.encode(), s.caption, b"%d" % s.cls, s.meta, b"%d" % s.size)) + b"\n")
    return h.hexdigest()


def build_shards(
    root: str | Path,
    split: str,
    out_dir: str | Path,
    shard_cfg: ShardConfig,
    caption_cfg: CaptionConfig,
    progress: bool = True,
    start_method: str | None = None,
) -> dict[str, Any]:
    """Write `{split}-{index:06d}.tar` shards, `categories.json` and `manifest.json` into `out_dir`.

    The whole split is validated before anything is written. Returns the manifest.
    """
    data = load_split(root, split)
    out = Path(out_dir)
    samples, skipped, files_state = plan_samples(data, shard_cfg, caption_cfg)
    shards = plan_shards(samples, shard_cfg.samples_per_shard, shard_cfg.max_bytes)
    settings = {"format": FORMAT, "source_sha256": data.source_sha256, "files": files_state, "resize": shard_cfg.resize}
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_records(out)
    (out / "manifest.json").unlink(missing_ok=True)  # a manifest always describes a finished build
    names = [f"{split}-{i:06d}.tar" for i in range(len(shards))]
    pattern = re.compile(rf"^{re.escape(split)}-\d{{6}}\.tar(\.tmp)?$")
    for p in out.iterdir():  # partial writes and shards of an older, longer plan
        if pattern.match(p.name) and (p.suffix == ".tmp" or p.name not in names):
            p.unlink()
    tasks = []
    for i, (name, group) in enumerate(zip(names, shards)):
        fingerprint = _fingerprint(json.dumps(settings).encode(), group)
        tasks.append(ShardTask(i, name, str(out), tuple(group), shard_cfg.resize, fingerprint, previous.get(name)))
    workers = max(1, min(shard_cfg.workers, len(tasks)))
    logger.info("%s: %d images -> %d shards in %s (%d workers)", split, len(samples), len(tasks), out, workers)
    records = _run_tasks(tasks, workers, progress, len(samples), start_method)
    manifest = _manifest(data, shard_cfg, caption_cfg, records, skipped, shards)
    _write_json_atomic(out / "categories.json", [c.to_json() for c in data.categories])
    _write_json_atomic(out / "manifest.json", manifest)
    if (out / ".progress").is_dir():  # the manifest now holds every completion record
        for p in (out / ".progress").iterdir():
            p.unlink()
        (out / ".progress").rmdir()
    _log_summary(manifest, sum(1 for r in records if r.get("kept")))
    return manifest


def _manifest(data: Split, shard_cfg: ShardConfig, caption_cfg: CaptionConfig, records: list[dict[str, Any]],
              skipped: list[dict[str, Any]], shards: list[list[Sample]]) -> dict[str, Any]:
    late = [{**k, "shard": r["name"]} for r in records for k in r["skipped"]]
    late_ids = {k["image_id"] for k in late}
    classes = Counter(s.cls for group in shards for s in group if s.image_id not in late_ids)
    return {
        "format": FORMAT, "split": data.name,
        "source": {"root": str(data.root.resolve()), "annotations": f"{data.name}.json", "sha256": data.source_sha256},
        "recipe": caption_cfg.recipe, "mixed_recipes": list(caption_cfg.mixed_recipes), "prefix": caption_cfg.prefix,
        **{k: v for k, v in asdict(shard_cfg).items() if k != "workers"},
        "shards": [{k: r[k] for k in ("name", "samples", "bytes", "sha256", "fingerprint")} for r in records],
        "totals": {"shards": len(records), "samples": sum(r["samples"] for r in records),
                   "bytes": sum(r["bytes"] for r in records), "images": len(data.images), "skipped": len(skipped) + len(late)},
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
        raise DatasetError(path, "not found: the shard build has not finished here; run `lit shards ROOT --out DIR` (it resumes)")
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


__all__ = ["FORMAT", "Sample", "build_shards", "check_image", "plan_samples", "plan_shards", "read_manifest",
           "sample_json", "shard_urls", "write_shard"]
