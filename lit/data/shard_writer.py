"""Writing one planned shard, in this process or in a pool of writer processes.

A shard is written to `{name}.tmp`, hashed as it goes, renamed into place, and its
completion record (sample count, bytes, sha256, fingerprint, skipped images) saved in
`.progress/`. Members get a fixed mtime and owner: the same inputs give the same bytes.
Images are kept as they are unless resizing is asked for; what cannot be stored is skipped
with its reason, never hidden.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from queue import Empty
from typing import Any, NamedTuple

from PIL import Image
from rich.progress import Progress

from lit.data.tario import FastTarWriter, HashingFile
from lit.io import atomic_file, file_sha256, write_json

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

    position: int  # in the plan (a field named index would shadow tuple.index)
    name: str
    out_dir: str
    samples: tuple[Sample, ...]
    resize: int
    fingerprint: str
    done: dict[str, Any] | None


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
        (out / ".progress").mkdir(exist_ok=True)  # every shard of a build has its record (tasks of a split build read them)
        write_json(out / ".progress" / f"{task.name}.json", {k: v for k, v in done.items() if k != "kept"})
        return {**done, "kept": True}
    skipped, count = [], 0
    with atomic_file(path) as f:
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
    record = {"name": task.name, "samples": count, "bytes": sink.size, "sha256": sink.sha.hexdigest(),
              "fingerprint": task.fingerprint, "skipped": skipped}
    (out / ".progress").mkdir(exist_ok=True)
    write_json(out / ".progress" / f"{task.name}.json", record)
    report(len(task.samples) % 64)
    return {**record, "kept": False}


def _serve(tasks: Any, results: Any) -> None:
    """A worker process: write the shards handed out on `tasks` until None; report on `results`."""
    while (task := tasks.get()) is not None:
        try:
            results.put(("done", task.position, write_shard(task, lambda n: results.put(("progress", n, None)))))
        except BaseException:
            results.put(("error", task.position, traceback.format_exc()))
            raise


class ShardWriters:
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
            # get_context(str) returns a concrete context (fork, spawn, forkserver); typeshed types it BaseContext, which has no Process.
            process = ctx.Process  # type: ignore[attr-defined]
            self.procs = [process(target=_serve, args=(self.tasks, self.results), daemon=True) for _ in range(workers)]
            for p in self.procs:
                p.start()

    def __enter__(self) -> ShardWriters:
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


__all__ = ["Sample", "ShardTask", "ShardWriters", "check_image", "read_file", "write_shard"]
