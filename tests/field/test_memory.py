"""What an upload can cost `lit serve`: the server's peak RSS under thin images and concurrent 60-megapixel uploads.

Each server (the ONNX export, and the checkpoint with torch) runs with the default limits (64 MP,
20 MiB, 2 decode slots). The peak RSS (VmHWM) is reset through /proc/PID/clear_refs before each
load and read after it. Measured before the bounds (tiny model, size 32): a 1 x 30,000 PNG of
204 bytes added 173 MB, a 1 x 100,000 one 530 MB; eight 60 MP PNGs sent at once added 5.4 GB.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from PIL import Image

from tests.field.conftest import FieldRun, Server, post_file, start_server, stop_server

T = TypeVar("T")
MB = 2**20
THIN_GROWTH = 40 * MB
"""Most the thin images may add to the peak RSS: their preprocessing holds a few hundred kB."""
LARGE = (10_000, 6_000)
DECODED = LARGE[0] * LARGE[1] * 4
"""Bytes of one decoded 60 MP image (PIL keeps RGB in 4 bytes a pixel): 240 MB."""
LARGE_GROWTH = 2 * DECODED + 120 * MB
"""Most eight concurrent large uploads may add: two decode slots, plus the uploads and the decoder's buffers."""


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 60)).save(buf, "PNG")
    return buf.getvalue()


def kib(pid: int, key: str) -> int:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(key + ":"))


def growth(server: Server, load: Callable[[], T]) -> tuple[int, T]:
    """Bytes the peak RSS rose above the RSS before `load()` ran, and what it returned."""
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from the current RSS
    before = kib(pid, "VmRSS")
    result = load()
    return (kib(pid, "VmHWM") - before) * 1024, result


@pytest.fixture(scope="module", params=["onnx", "torch"])
def default_server(request: pytest.FixtureRequest, field_run: FieldRun, field_export: tuple[Path, dict]) -> Iterator[Server]:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/PID/clear_refs to reset the server's peak RSS")
    srv = start_server(field_export[0] if request.param == "onnx" else field_run.run, "--device", "cpu")
    assert post_file(srv.port, png((64, 48)), "warm.png")[0] == 200
    yield srv
    stop_server(srv)


def test_thin_images_are_answered_in_bounded_memory(default_server: Server) -> None:
    uploads = {f"{w}x{h}.png": png((w, h)) for w, h in [(1, 30_000), (30_000, 1), (1, 100_000)]}
    assert all(len(data) < 1000 for data in uploads.values())
    grown, answers = growth(default_server, lambda: {name: post_file(default_server.port, data, name)
                                                     for name, data in uploads.items()})
    assert all(status == 200 and body["guesses"] for status, body in answers.values()), answers
    assert grown < THIN_GROWTH, f"thin images grew the server's peak RSS by {grown / MB:.0f} MB"


def test_concurrent_large_uploads_wait_for_a_decode_slot(default_server: Server) -> None:
    data = png(LARGE)

    def send_all() -> list[int]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda i: post_file(default_server.port, data, f"large{i}.png")[0], range(8)))

    grown, statuses = growth(default_server, send_all)
    assert statuses == [200] * 8
    assert grown < LARGE_GROWTH, f"8 uploads of 60 MP grew the server's peak RSS by {grown / MB:.0f} MB"
