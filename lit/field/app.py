"""The web app of `lit serve`: a page to drop a photo on, and `POST /predict` (multipart field `file`) answering JSON.

Uploads are bounded in bytes (413) and pixels (a decompression bomb is refused, 400); a body
that is not an image is a 415; a missing field a 400: every refusal is a 4xx with a message,
never a 500. Memory is bounded too: at most `decode_slots` requests hold an upload's bytes and
its decoded image at once (a 60-megapixel PNG decodes to 240 MB, 4 bytes a pixel); the others
wait for a slot, their upload spooled to disk beyond 1 MiB. A request keeps its slot from reading
the bytes to the end of its model call, which holds a lock: concurrent requests never share a
forward pass. Preprocessing holds little whatever the aspect ratio (lit.field.images).
`GET /health` describes the model and the limits.

Where and when: the optional form fields `lat`, `lon` (decimal degrees) and `date` (YYYY-MM-DD)
win over the upload's EXIF (GPS, time of capture) field by field (lit.field.exif.merge); a wrong
value is a 400 naming it. The answer carries the place used and, when the model's location prior
weighed it, the image-only answer (`image_only`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import FormData, UploadFile

from lit.errors import UsageError
from lit.field.engines import Predictor
from lit.field.exif import PlaceUsed, exif_place, given_place, merge
from lit.field.images import MAX_PIXELS, BadImage, open_image
from lit.field.scoring import Scorer

STATIC = Path(__file__).resolve().parent / "static"
MAX_BYTES = 20 * 2**20
"""Largest upload accepted (20 MiB: a full-size camera JPEG is well below)."""
DECODE_SLOTS = 2
"""Requests that may hold an upload and its decoded image at once: one in the model call, one decoding."""


@dataclass
class Service:
    """The model, its scoring and the upload limits; `predict` is safe to call from many threads."""

    predictor: Predictor
    scorer: Scorer
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    decode_slots: int = DECODE_SLOTS
    lock: threading.Lock = field(default_factory=threading.Lock)
    served: int = 0
    slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.decode_slots < 1:
            raise ValueError(f"decode_slots must be >= 1, got {self.decode_slots}")
        self.slots = threading.BoundedSemaphore(self.decode_slots)

    @cached_property
    def has_prior(self) -> bool:
        """Whether located uploads are weighed by a location prior (asked of the scorer's prior once)."""
        return self.scorer.prior is not None and self.scorer.prior(np.array([[0.0, 0.0, np.nan]], np.float32)) is not None

    def predict(self, data: bytes | IO[bytes], name: str, place: PlaceUsed | None = None) -> dict[str, Any]:
        """The answer for the bytes of an upload (or its spooled file, read once a slot is free); HTTPException for a 4xx.

        `place` (the form's fields) wins over the upload's EXIF.
        """
        start = time.perf_counter()
        with self.slots:  # the upload's bytes and the decoded image live until the model call returns
            if not isinstance(data, bytes):
                data = data.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise HTTPException(413, f"the upload is larger than the limit of {self.max_bytes:,} bytes")
            if not data:
                raise HTTPException(400, "the field `file` is empty")
            try:
                image = open_image(data, self.max_pixels)
            except BadImage as err:
                bomb = "decompression bomb" in str(err)
                raise HTTPException(400 if bomb else 415, f"{name or 'the upload'}: {err}") from err
            size = list(image.size)
            place = merge(place, exif_place(data))
            try:
                with self.lock:
                    logits = self.predictor.logits_of([image])
                    self.served += 1
            except BadImage as err:  # refused by the model's preprocessing (lit.field.torch_model.BoundedTransform)
                raise HTTPException(400, f"{name or 'the upload'}: {err}") from err
            del image, data
        prediction = self.scorer.score([name], logits, [place])[0]
        return {**prediction.to_json(), "size": size, "seconds": round(time.perf_counter() - start, 4)}


def _bounded(request: Request, limit: int) -> Request:
    """The request with a body that stops at `limit` bytes (413), also when it comes chunked without a length."""
    received = 0

    async def receive() -> Any:
        nonlocal received
        message = await request.receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"the upload is larger than the limit of {limit - FORM_OVERHEAD:,} bytes")
        return message

    return Request(request.scope, receive)


FORM_OVERHEAD = 64 * 1024
"""Bytes of multipart headers and boundaries allowed on top of the file's limit."""


async def _upload(request: Request, service: Service) -> tuple[FormData, UploadFile]:
    """The form and its multipart field `file` (spooled to disk beyond 1 MiB), within the byte limit."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > service.max_bytes + FORM_OVERHEAD:
        raise HTTPException(413, f"the upload is {int(declared):,} bytes; the limit is {service.max_bytes:,}")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(400, "send the photo as multipart/form-data in the field `file`")
    try:
        form = await _bounded(request, service.max_bytes + FORM_OVERHEAD).form(max_files=1, max_fields=8)
    except HTTPException:
        raise
    except Exception as err:  # noqa: BLE001 - starlette raises several kinds for a malformed body
        raise HTTPException(400, f"cannot read the form: {err}") from err
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise HTTPException(400, "no file in the multipart field `file`")
    return form, upload


PLACE_FIELDS = ("lat", "lon", "date")


def form_place(form: FormData) -> PlaceUsed | None:
    """The place in the form's fields `lat`, `lon`, `date` (None: none given); HTTPException 400 naming a wrong value."""
    values = {}
    for key in PLACE_FIELDS:
        value = form.get(key)
        if value is not None and not isinstance(value, str):
            raise HTTPException(400, f"the field `{key}` must be text, not a file")
        values[key] = value
    try:
        return given_place(values["lat"], values["lon"], values["date"], "form", lat_name="lat", lon_name="lon",
                           date_name="date")
    except UsageError as err:
        raise HTTPException(400, str(err)) from err


def create_app(service: Service) -> FastAPI:
    """The FastAPI app over a Service."""
    app = FastAPI(title="lit serve", docs_url=None, redoc_url=None, openapi_url=None)
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.predictor.describe(), "served": service.served,
                "min_confidence": service.scorer.min_confidence, "temperature": service.scorer.temperature,
                "prior": service.has_prior, "prior_weight": service.scorer.prior_weight if service.has_prior else None,
                "max_bytes": service.max_bytes, "max_pixels": service.max_pixels, "decode_slots": service.decode_slots}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        form, upload = await _upload(request, service)
        try:  # the bytes are read in the worker thread, once a decode slot is free
            place = form_place(form)
            return await run_in_threadpool(service.predict, upload.file, upload.filename or "", place)
        finally:
            await form.close()

    return app


__all__ = ["DECODE_SLOTS", "MAX_BYTES", "PLACE_FIELDS", "Service", "create_app", "form_place"]
