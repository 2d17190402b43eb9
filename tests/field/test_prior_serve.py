"""`lit serve` with a place: form fields `lat`, `lon`, `date` over the upload's EXIF, wrong values as 400s naming them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL.TiffImagePlugin import IFDRational

from tests.field.conftest import FieldRun, Server, post, start_server, stop_server
from tests.field.test_prior_predict import core, deg, jpeg_with_gps, make_prior_run


def serve_with_prior(field_run: FieldRun, root: Path) -> Server:
    """`lit serve` on a new run with a location prior (the torch engine), once it answers."""
    return start_server(make_prior_run(field_run, root), "--device", "cpu", "--min-confidence", "0.2")


@pytest.fixture(scope="module")
def prior_server(field_run: FieldRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = serve_with_prior(field_run, tmp_path_factory.mktemp("prior-serve"))
    yield srv
    stop_server(srv)


def form(data: bytes, filename: str = "photo.jpg", **fields: str) -> tuple[bytes, str]:
    """multipart/form-data with the photo in `file` and text fields."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
             "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_form_fields_weigh_the_answer_and_keep_the_image_only_one(prior_server: Server, field_run: FieldRun) -> None:
    photo = field_run.images[11].read_bytes()
    status, bare = post(prior_server.port, *form(photo))
    assert status == 200 and bare["place"] is None and bare["image_only"] is None and bare["prior_weight"] is None
    status, placed = post(prior_server.port, *form(photo, lat="51.5", lon="-0.12", date="2021-06-14"))
    assert status == 200, placed
    assert placed["place"] == {"lat": 51.5, "lon": -0.12, "date": "2021-06-14", "day": 165, "source": "form",
                               "date_source": "form", "problem": None}
    assert placed["prior_weight"] == 1.0 and core(placed["image_only"]) == core(bare)
    assert [g["probability"] for g in placed["guesses"]] != [g["probability"] for g in bare["guesses"]]
    status, empty = post(prior_server.port, *form(photo, lat="", lon="", date=""))  # the page's empty inputs
    assert status == 200 and empty["place"] is None and json.dumps(empty["guesses"]) == json.dumps(bare["guesses"])
    health = post_health(prior_server)
    assert health["prior"] is True and health["prior_weight"] == 1.0 and health["model"]["prior"].endswith("prior.pt")


def post_health(server: Server) -> dict:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_the_uploads_exif_places_it_unless_the_form_does(prior_server: Server, field_run: FieldRun, tmp_path: Path) -> None:
    photo = jpeg_with_gps(field_run.images[12], tmp_path / "gps.jpg", {1: "S", 2: deg(33.87), 3: "E", 4: deg(151.21)})
    status, body = post(prior_server.port, *form(photo.read_bytes()))
    assert status == 200 and body["place"]["source"] == "exif" and body["place"]["lat"] == pytest.approx(-33.87)
    assert body["image_only"] is not None
    status, body = post(prior_server.port, *form(photo.read_bytes(), lat="10", lon="20"))
    assert status == 200 and (body["place"]["lat"], body["place"]["lon"], body["place"]["source"]) == (10.0, 20.0, "form")
    broken = jpeg_with_gps(field_run.images[12], tmp_path / "broken.jpg",
                           {1: "N", 2: (IFDRational(5, 0), IFDRational(0, 1), IFDRational(0, 1)), 3: "E", 4: deg(10)})
    status, body = post(prior_server.port, *form(broken.read_bytes()))
    assert status == 200 and body["image_only"] is None and body["place"]["lat"] is None
    assert body["place"]["problem"] == "GPSLatitude has a zero denominator"


@pytest.mark.parametrize(("fields", "message"), [
    ({"lat": "95", "lon": "10"}, "lat/lon: latitude 95.0 is outside -90..90"),
    ({"lat": "10", "lon": "-181"}, "lat/lon: longitude -181.0 is outside -180..180"),
    ({"lat": "abc", "lon": "10"}, "latitude 'abc' and longitude '10' must both be numbers"),
    ({"lat": "NaN", "lon": "10"}, "latitude 'NaN' or longitude '10' is NaN"),
    ({"date": "2021-13-45"}, "date: '2021-13-45' is not a date"),
    ({"lat": "10"}, "give both"),
])
def test_wrong_values_are_400_naming_them(prior_server: Server, field_run: FieldRun, fields: dict[str, str],
                                         message: str) -> None:
    status, body = post(prior_server.port, *form(field_run.images[3].read_bytes(), **fields))
    assert status == 400 and message in body["error"], body
    ok, _ = post(prior_server.port, *form(field_run.images[3].read_bytes()))
    assert ok == 200  # the server is still fine


def test_an_export_without_a_prior_records_the_place(server: Server, field_run: FieldRun) -> None:
    status, body = post(server.port, *form(field_run.images[4].read_bytes(), lat="51.5", lon="-0.12"))
    assert status == 200 and body["place"]["source"] == "form" and body["image_only"] is None
    status, bare = post(server.port, *form(field_run.images[4].read_bytes()))
    assert status == 200 and core(bare) == core(body)
