"""`lit serve` on loopback: the page, POST /predict, refusals as 4xx with a message, and 200 requests 8 at a time."""

from __future__ import annotations

import http.client
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi import HTTPException
from PIL import Image

from lit.field.app import Service
from lit.field.classifier import Classifier
from lit.field.images import MAX_ASPECT, open_image
from lit.field.scoring import Scorer
from tests.field.conftest import FieldRun, Server, multipart, post, post_file


def expected(field_export: tuple[Path, dict], image: Path, min_confidence: float = 0.2) -> dict:
    predictor = Classifier.load(field_export[0]).predictor
    scorer = Scorer.of(predictor.categories, temperature=predictor.temperature(), min_confidence=min_confidence)
    return scorer.score([image.name], predictor.logits_of([open_image(image)]))[0].to_json()


def test_page_health_and_a_prediction(server: Server, field_run: FieldRun, field_export: tuple[Path, dict]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/")
    page = conn.getresponse()
    assert page.status == 200 and b'id="file"' in page.read()
    conn.request("GET", "/health")
    health = json.loads(conn.getresponse().read())
    assert health["model"]["kind"] == "onnx" and health["model"]["classes"] == 32 and health["min_confidence"] == 0.2
    assert health["decode_slots"] == 2 and health["max_pixels"] == 1_000_000
    image = field_run.images[5]
    status, body = post_file(server.port, image.read_bytes(), image.name)
    assert status == 200, body
    want = expected(field_export, image)
    assert [g["species"] for g in body["guesses"]] == [g["species"] for g in want["guesses"]] and len(body["guesses"]) == 5
    assert [g["probability"] for g in body["guesses"]] == pytest.approx([g["probability"] for g in want["guesses"]], abs=1e-6)
    assert body["answer"] == want["answer"] and body["image"] == image.name
    assert all(g["common_name"] and len(g["lineage"]) == 7 for g in body["guesses"])


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


REFUSALS = {  # name: (body and content type, status, part of the message)
    "not an image": (lambda: multipart(b"GIF89a but not really", "x.gif"), 415, "not a readable image"),
    "decompression bomb": (lambda: multipart(png((1200, 1000), "1")), 400, "decompression bomb"),  # 1.2 MP > the 1 MP limit
    "too large": (lambda: multipart(b"\xff" * 300_000), 413, "limit"),  # > 256 KiB
    "too large, chunked": (lambda: multipart(b"\xff" * 400_000), 413, "limit"),  # no Content-Length to refuse it early
    "empty": (lambda: multipart(b""), 400, "empty"),
    "other field": (lambda: multipart(b"x", field="photo"), 400, "field `file`"),
    "not a form": (lambda: (b"{}", "application/json"), 400, "multipart/form-data"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_4xx_with_a_message(server: Server, case: str) -> None:
    make, status, message = REFUSALS[case]
    got, body = post(server.port, *make(), chunked=case.endswith("chunked"))
    assert got == status and message in body["error"]
    ok, _ = post_file(server.port, png((64, 48)), "small.png")
    assert ok == 200  # the server is still fine


def test_the_torch_engine_serves_the_same_answer(field_run: FieldRun, field_export: tuple[Path, dict]) -> None:
    predictor = Classifier.load(field_run.run, device="cpu").predictor
    service = Service(predictor, Scorer.of(predictor.categories, min_confidence=0.2))
    image = field_run.images[9]
    got = service.predict(image.read_bytes(), image.name)
    want = expected(field_export, image)
    assert [g["species"] for g in got["guesses"]] == [g["species"] for g in want["guesses"]]
    assert got["answer"]["taxon"] == want["answer"]["taxon"]


def test_thin_uploads_are_answered(server: Server) -> None:
    """1 x 30,000 is 30,000 pixels, under the 1 MP limit: answered, by cropping before resizing (lit.field.images)."""
    for size in [(1, 30_000), (30_000, 1)]:
        status, body = post_file(server.port, png(size), "thin.png")
        assert status == 200 and body["size"] == list(size) and len(body["guesses"]) == 5


def test_a_refusal_by_the_models_preprocessing_is_a_400(field_run: FieldRun) -> None:
    """A tower whose preprocessing the bounded resize does not implement refuses extreme aspect ratios: a 400, not a 500."""
    from lit.field.torch_model import BoundedTransform, CheckpointModel

    predictor = Classifier.load(field_run.run, device="cpu").predictor
    assert isinstance(predictor, CheckpointModel) and predictor.preprocess.reduction is not None
    predictor.preprocess = BoundedTransform(predictor.built.preprocess_val, None, MAX_ASPECT)  # as for a non-square tower
    service = Service(predictor, Scorer.of(predictor.categories), decode_slots=1)
    with pytest.raises(HTTPException) as refused:
        service.predict(png((1, 30_000)), "thin.png")
    assert refused.value.status_code == 400 and "aspect ratio over 4:1" in refused.value.detail
    assert service.slots.acquire(blocking=False)  # the refusal gave its decode slot back
    service.slots.release()
    assert service.predict(png((64, 48)), "ok.png")["guesses"]
    with pytest.raises(ValueError, match="decode_slots"):
        Service(predictor, service.scorer, decode_slots=0)


def test_two_hundred_requests_eight_at_a_time(server: Server, field_run: FieldRun, field_export: tuple[Path, dict]) -> None:
    """A bounded load test: every request answered, none lost, each with its own photo's answer (latency is in the bench)."""
    photos = field_run.images[::16][:8]
    want = {p.name: expected(field_export, p)["guesses"][0]["species"] for p in photos}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/health")
    before = json.loads(conn.getresponse().read())["served"]

    def one(i: int) -> tuple[str, int, str]:
        photo = photos[i % len(photos)]
        status, body = post_file(server.port, photo.read_bytes(), photo.name)
        return photo.name, status, body["guesses"][0]["species"] if status == 200 else body.get("error", "")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    assert len(results) == 200 and all(status == 200 for _, status, _ in results)
    assert all(species == want[name] for name, _, species in results)
    conn.request("GET", "/health")
    assert json.loads(conn.getresponse().read())["served"] - before == 200


def test_serve_listens_on_loopback_only(server: Server) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the address of the outward interface
            outward = s.getsockname()[0]
        except OSError:
            pytest.skip("no non-loopback interface on this machine")
    if outward.startswith("127."):
        pytest.skip("no non-loopback interface on this machine")
    with pytest.raises(OSError):
        socket.create_connection((outward, server.port), timeout=2).close()
