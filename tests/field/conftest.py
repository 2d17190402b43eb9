"""Fixtures of the field tests: a tiny run on toy validation shards, its ONNX export, photos, and `lit serve` on loopback.

The run is the tiny random model (tests/eval/conftest.py's helpers) with a checkpoint as
training writes it; its classes are the 32 toy species, its validation set 128 images.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.eval.conftest import TINY, make_config, save_tiny_checkpoint

ARTIFACTS = REPO / "tests" / "artifacts"
"""Where the browser test keeps its screenshot (ignored by git)."""


@dataclass(frozen=True)
class FieldRun:
    root: Path
    run: Path
    val_shards: Path
    images: list[Path]  # the 128 validation JPEGs, sorted


@pytest.fixture(scope="session")
def field_run(tmp_path_factory: pytest.TempPathFactory) -> FieldRun:
    from lit.config import CaptionConfig, ShardConfig
    from lit.data.shards import build_shards
    from lit.data.toy import write_toy_inat
    from lit.model import build_model

    root = tmp_path_factory.mktemp("field")
    write_toy_inat(root / "toy", seed=0, train_per_class=1, val_per_class=4, image_size=48, test_per_class=0)
    build_shards(root / "toy", "val", root / "val", ShardConfig(samples_per_shard=32, workers=1, shuffle=False),
                 CaptionConfig(), progress=False)
    built = build_model(TINY)
    built.model.eval()
    cfg = make_config(root / "run", root / "val")
    save_tiny_checkpoint(cfg, built, step=7)
    return FieldRun(root, root / "run", root / "val", sorted((root / "toy" / "val").rglob("*.jpg")))


@pytest.fixture(scope="session")
def field_export(field_run: FieldRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The ONNX export of the run, verified on its whole validation set."""
    from lit.field.onnx_export import export_onnx

    return export_onnx(field_run.run, tmp_path_factory.mktemp("export") / "model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def multipart(data: bytes, filename: str = "photo.jpg", field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its content type."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(port: int, body: bytes, content_type: str, path: str = "/predict", timeout: float = 30,
         chunked: bool = False) -> tuple[int, dict]:
    """POST a body; `chunked` sends it in 64 KiB chunks without a Content-Length."""
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if chunked:
            pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
            conn.request("POST", path, body=pieces, headers={"Content-Type": content_type}, encode_chunked=True)
        else:
            conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        res = conn.getresponse()
        return res.status, json.loads(res.read() or b"{}")
    finally:
        conn.close()


def post_file(port: int, data: bytes, filename: str = "photo.jpg") -> tuple[int, dict]:
    return post(port, *multipart(data, filename))


@dataclass(frozen=True)
class Server:
    port: int
    process: subprocess.Popen


def start_server(target: Path, *extra: str, timeout: float = 60) -> Server:
    """`lit serve TARGET --port P ...` in a subprocess, once it answers /health."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "lit", "serve", str(target), "--port", str(port), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lit serve exited {proc.returncode}: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return Server(port, proc)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("lit serve did not answer within the timeout")


@pytest.fixture(scope="session")
def server(field_export: tuple[Path, dict]) -> Iterator[Server]:
    """`lit serve` on the ONNX export, with small limits (256 KiB uploads, 1 megapixel) to test the refusals."""
    srv = start_server(field_export[0], "--max-mb", "0.25", "--max-megapixels", "1", "--min-confidence", "0.2")
    yield srv
    stop_server(srv)


def stop_server(srv: Server) -> None:
    """Terminate `lit serve`, killing it after 10 s."""
    srv.process.terminate()
    try:
        srv.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.process.kill()
