"""The one way files are written: atomically (temp file, fsync, rename, directory fsync), and JSON lines.

Every writer of the project goes through here: checkpoints, the resolved config, shard and
embedding parts and manifests, results, the classifier cache, the launcher's records.
A reader therefore sees either the old file or the new one, never a torn one, also after a
crash or a SIGKILL in the middle of a write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def temp_path(path: Path) -> Path:
    """The temporary name a write of `path` uses: hidden, beside it, unique per process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """Open a binary file that appears at `path` only when the block ends without an error.

    The data goes to a temporary file beside `path`, which is flushed, fsynced and renamed into
    place; the folder is fsynced too. On an error the temporary file is removed and `path`
    keeps what it had.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str | Callable[[IO[bytes]], Any]) -> Path:
    """Write bytes, text (UTF-8) or `data(file)`'s output to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_file(path) as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode() if isinstance(data, str) else data)
    return path


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB pieces."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    """`data` as JSON (UTF-8, non-ASCII kept), atomically."""
    return atomic_write(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any], sync: bool = True) -> None:
    """Append one JSON line in a single write (O_APPEND: lines of concurrent writers never interleave)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file; a missing file is empty, a torn line (a killed writer) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


__all__ = ["append_jsonl", "atomic_file", "atomic_write", "file_sha256", "fsync_dir", "read_jsonl", "temp_path", "write_json"]
