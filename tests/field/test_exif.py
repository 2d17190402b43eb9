"""EXIF places: real JPEGs written by Pillow with GPS and dates read back; malformed GPS says why; given places win."""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from lit.data.places import Place
from lit.errors import UsageError
from lit.field.exif import DATE_TIME, DATE_TIME_ORIGINAL, EXIF_IFD, GPS_IFD, PlaceUsed, exif_place, given_place, merge, place_finder


def jpeg_with_exif(path: Path | None = None, gps: dict[int, Any] | None = None, original: str | None = None,
                   plain: str | None = None) -> bytes:
    """A small JPEG whose EXIF holds `gps` (GPS IFD tags), DateTimeOriginal and DateTime; written to `path` too."""
    exif = Image.Exif()
    if plain is not None:
        exif[DATE_TIME] = plain
    if original is not None:
        exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = original
    if gps is not None:
        ifd = exif.get_ifd(GPS_IFD)
        for tag, value in gps.items():
            ifd[tag] = value
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 140, 60)).save(buf, "JPEG", exif=exif)
    data = buf.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def raw_gps_exif(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """EXIF bytes (little-endian TIFF) whose GPS IFD holds `entries` (tag, TIFF type, count, value bytes) as written:
    wrong types too, which Pillow's writer would refuse."""
    gps_at = 8 + 2 + 12 + 4
    data_at = gps_at + 2 + 12 * len(entries) + 4
    ifd, data = struct.pack("<H", len(entries)), b""
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, data_at + len(data))
            data += value
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<HHHII", 1, GPS_IFD, 4, 1, gps_at) + struct.pack("<I", 0)
    return b"Exif\0\0" + tiff + ifd + struct.pack("<I", 0) + data


def jpeg_raw(exif: bytes) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def dms(deg: int, minutes: int, seconds: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    return IFDRational(deg, 1), IFDRational(minutes, 1), IFDRational(round(seconds * 100), 100)


SYDNEY = {1: "S", 2: dms(33, 52, 4.5), 3: "E", 4: dms(151, 12, 30.0)}


def test_gps_and_the_time_of_capture_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sydney.jpg"
    jpeg_with_exif(path, SYDNEY, original="2021:06:14 10:30:00", plain="2022:01:01 00:00:00")
    got = exif_place(path)
    assert got is not None and got.source == "exif" and got.problem == "" and got.located
    assert got.place.lat == pytest.approx(-(33 + 52 / 60 + 4.5 / 3600), abs=1e-9)
    assert got.place.lon == pytest.approx(151 + 12 / 60 + 30 / 3600, abs=1e-9)
    assert got.date == "2021-06-14" and got.place.day == 165 and got.date_source == "exif"  # DateTimeOriginal first
    assert got.to_json() == {"lat": got.place.lat, "lon": got.place.lon, "date": "2021-06-14", "day": 165, "source": "exif",
                             "date_source": "exif", "problem": None}
    same = exif_place(path.read_bytes())
    assert same == got and exif_place(Image.open(path)) == got  # bytes and an opened image too


def test_north_west_plain_floats_datetime_fallback_and_nothing(tmp_path: Path) -> None:
    data = jpeg_with_exif(gps={1: "N", 2: (51.5,), 3: b"W\x00", 4: (0.0, 7.0, 12.0)}, plain="2019:05:03 12:00:00")
    got = exif_place(data)
    assert got is not None and got.place.lat == 51.5 and got.place.lon == pytest.approx(-(7 / 60 + 12 / 3600))
    assert got.date == "2019-05-03" and got.place.day == 123
    dated = exif_place(jpeg_with_exif(original="2020:02:29 08:00:00"))
    assert dated is not None and not dated.located and dated.place.day == 60 and dated.problem == ""
    assert exif_place(jpeg_with_exif()) is None  # no GPS, no date
    assert exif_place(jpeg_with_exif(original="0000:00:00 00:00:00")) is None  # an unset camera clock is no date
    assert exif_place(jpeg_with_exif(gps={5: 0, 6: IFDRational(120, 1)})) is None  # altitude only: no position, not malformed
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert exif_place(png.getvalue()) is None
    assert exif_place(tmp_path / "missing.jpg") is None


MALFORMED = {  # name: (GPS IFD, part of the problem)
    "latitude ref missing": ({2: dms(10, 0, 0), 3: "E", 4: dms(20, 0, 0)}, "GPSLatitudeRef is missing"),
    "longitude missing": ({1: "N", 2: dms(10, 0, 0), 3: "E"}, "GPSLongitude is missing"),
    "zero denominator": ({1: "N", 2: (IFDRational(10, 0), IFDRational(0, 1), IFDRational(0, 1)), 3: "E", 4: dms(20, 0, 0)},
                         "zero denominator"),
    "latitude 95": ({1: "N", 2: dms(95, 0, 0), 3: "E", 4: dms(20, 0, 0)}, "GPSLatitude 95 is beyond 90"),
    "longitude 181": ({1: "N", 2: dms(10, 0, 0), 3: "W", 4: dms(181, 0, 0)}, "GPSLongitude 181 is beyond 180"),
    "minutes 75": ({1: "N", 2: dms(10, 75, 0), 3: "E", 4: dms(20, 0, 0)}, "minutes or seconds of 60 or more"),
    "ref X": ({1: "X", 2: dms(10, 0, 0), 3: "E", 4: dms(20, 0, 0)}, "GPSLatitudeRef is 'X', not N or S"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_gps_is_unlocated_with_the_reason(case: str, tmp_path: Path) -> None:
    gps, problem = MALFORMED[case]
    path = tmp_path / "bad.jpg"
    jpeg_with_exif(path, gps, original="2021:06:14 10:30:00")
    got = exif_place(path)
    assert got is not None and not got.located and problem in got.problem, got
    assert got.place.day == 165 and got.to_json()["problem"] == got.problem  # the date is still used
    assert math.isnan(got.place.lat) and got.to_json()["lat"] is None


def test_a_png_is_never_decoded_for_its_exif(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's PNG getexif() decodes the whole image when no eXIf chunk precedes the pixels: a 60 MP upload twice."""
    from PIL import PngImagePlugin

    exif = Image.Exif()
    exif[DATE_TIME] = "2021:06:14 10:30:00"  # an Exif with no tag of its own is falsy: Pillow's PNG writer would drop it
    exif.get_ifd(GPS_IFD).update(SYDNEY)
    tagged, plain = tmp_path / "tagged.png", tmp_path / "plain.png"
    Image.new("RGB", (16, 16)).save(tagged, "PNG", exif=exif)
    Image.new("RGB", (16, 16)).save(plain, "PNG")

    def refuse(self: object) -> None:
        raise AssertionError("the PNG's pixels were decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", refuse)
    got = exif_place(tagged)
    assert got is not None and got.located and got.place.lon == pytest.approx(151 + 12 / 60 + 30 / 3600)
    assert got.date == "2021-06-14"
    assert exif_place(plain) is None and exif_place(plain.read_bytes()) is None


def test_gps_of_the_wrong_type_is_malformed() -> None:
    rational = struct.pack("<6I", 20, 1, 0, 1, 0, 1)
    text = raw_gps_exif([(1, 2, 2, b"N\0"), (2, 2, 5, b"51.5\0"), (3, 2, 2, b"E\0"), (4, 5, 3, rational)])
    got = exif_place(jpeg_raw(text))
    assert got is not None and not got.located and "GPSLatitude holds '51.5' (str), not a number" in got.problem
    number_ref = raw_gps_exif([(1, 3, 1, struct.pack("<H", 78)), (2, 5, 3, rational), (3, 2, 2, b"E\0"), (4, 5, 3, rational)])
    got = exif_place(jpeg_raw(number_ref))
    assert got is not None and not got.located and "GPSLatitudeRef holds 78 (int), not N or S" in got.problem
    fine = raw_gps_exif([(1, 2, 2, b"N\0"), (2, 5, 3, rational), (3, 2, 2, b"E\0"), (4, 5, 3, rational)])
    got = exif_place(jpeg_raw(fine))
    assert got is not None and (got.place.lat, got.place.lon) == (20.0, 20.0)  # the hand-written block is read right


def test_given_places_win_field_by_field(tmp_path: Path) -> None:
    photo = tmp_path / "sydney.jpg"
    jpeg_with_exif(photo, SYDNEY, original="2021:06:14 10:30:00")
    found = exif_place(photo)
    flags = given_place("51.5", "-0.12", None, "flags")
    assert flags == PlaceUsed(Place(51.5, -0.12), "flags")
    both = merge(flags, found)
    assert both is not None and (both.place.lat, both.place.lon, both.place.day) == (51.5, -0.12, 165.0)
    assert (both.source, both.date, both.date_source) == ("flags", "2021-06-14", "exif")
    dated = merge(given_place(None, None, "2020-01-10", "flags"), found)
    assert dated is not None and dated.source == "exif" and dated.place.lat == found.place.lat  # type: ignore[union-attr]
    assert (dated.place.day, dated.date, dated.date_source) == (10.0, "2020-01-10", "flags")
    bad = tmp_path / "bad.jpg"
    jpeg_with_exif(bad, MALFORMED["zero denominator"][0])
    fixed = place_finder(flags)(bad)
    assert fixed is not None and fixed.located and fixed.problem == ""  # the flags' position replaces the broken GPS
    kept = place_finder(given_place(None, None, "2020-01-10", "flags"))(bad)
    assert kept is not None and not kept.located and "zero denominator" in kept.problem and kept.source == "flags"
    assert place_finder(flags, exif=False)(photo) == flags and given_place(None, "", None, "flags") is None


@pytest.mark.parametrize(("lat", "lon", "date", "message"), [
    ("95", "10", None, "--lat/--lon: latitude 95.0 is outside -90..90"),
    ("10", "-181", None, "--lat/--lon: longitude -181.0 is outside -180..180"),
    ("abc", "10", None, "'abc'"),
    ("nan", "10", None, "NaN"),
    (None, None, "2021-13-45", "--date: '2021-13-45' is not a date"),
    ("10", None, None, "give both"),
])
def test_wrong_given_values_are_usage_errors_naming_them(lat: str | None, lon: str | None, date: str | None,
                                                        message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        given_place(lat, lon, date, "flags")
