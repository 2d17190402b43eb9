"""Where and when a photo was taken, as prediction uses it: from its EXIF, or given (flags, form fields, arguments).

`exif_place` reads the GPS position (GPS IFD 0x8825: GPSLatitude and GPSLongitude, each one to
three rationals, degrees minutes seconds, with GPSLatitudeRef N/S and GPSLongitudeRef E/W) and
the time of capture (DateTimeOriginal 0x9003 in the Exif IFD 0x8769, else DateTime 0x0132) with
Pillow alone. GPS that is present but malformed (a missing reference, a zero denominator, a value
out of range, a wrong type) leaves the photo unlocated and says why in `PlaceUsed.problem`: the
photo is answered from the image alone and counted. An unparseable date (cameras write
"0000:00:00 00:00:00" when their clock was never set) is no date.

A place given by a person wins over EXIF field by field (`merge`): `--lat/--lon` replace the
photo's GPS, `--date` its date, and what is not given still comes from EXIF.
"""

from __future__ import annotations

import io
import math
import numbers
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image

from lit.data.places import NOWHERE, Place, day_of_year, user_place

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
DATE_TIME_ORIGINAL = 0x9003
DATE_TIME = 0x0132
LAT_REF, LAT, LON_REF, LON = 1, 2, 3, 4
SOURCES = ("flags", "exif", "form", "given")
"""Where a place came from: `lit predict` flags, a photo's EXIF, `lit serve`'s form fields, `Classifier.predict(places=)`."""

_DATE = re.compile(r"^\s*(\d{4})[-:/](\d{1,2})[-:/](\d{1,2})")


@dataclass(frozen=True)
class PlaceUsed:
    """The place and date a prediction used, where each came from, and why EXIF GPS was not used ("" when it was fine)."""

    place: Place
    source: str
    date: str | None = None
    date_source: str | None = None
    problem: str = ""

    @property
    def located(self) -> bool:
        return self.place.located

    def to_json(self) -> dict[str, Any]:
        p = self.place
        return {"lat": None if math.isnan(p.lat) else p.lat, "lon": None if math.isnan(p.lon) else p.lon,
                "date": self.date, "day": None if math.isnan(p.day) else int(p.day), "source": self.source,
                "date_source": self.date_source, "problem": self.problem or None}


def iso_date(text: str) -> str | None:
    """YYYY-MM-DD of a date text day_of_year accepts (ISO, EXIF, iNat), else None."""
    m = _DATE.match(text)
    if m is None or day_of_year(text) is None:
        return None
    return f"{int(m[1]):04d}-{int(m[2]):02d}-{int(m[3]):02d}"


def given_place(lat: Any, lon: Any, date: Any, source: str, *, lat_name: str = "--lat", lon_name: str = "--lon",
                date_name: str = "--date") -> PlaceUsed | None:
    """A place a person gave (None when nothing was); UsageError naming the flag or field and the value when it is wrong."""
    place = user_place(lat, lon, date, lat_name=lat_name, lon_name=lon_name, date_name=date_name)
    if not place.located and math.isnan(place.day):
        return None
    dated = not math.isnan(place.day)
    return PlaceUsed(place, source, iso_date(str(date)) if dated else None, source if dated else None)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.strip("\x00 ").upper() if isinstance(value, str) else None


def _degrees(value: Any, name: str) -> tuple[float | None, str]:
    """Decimal degrees of a GPS (degrees, minutes, seconds) value, or None and why it is malformed."""
    parts = value if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(parts) <= 3:
        return None, f"{name} has {len(parts)} values (want degrees, minutes, seconds)"
    numbers_: list[float] = []
    for x in parts:
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            return None, f"{name} holds {x!r} ({type(x).__name__}), not a number"
        if getattr(x, "denominator", 1) == 0:
            return None, f"{name} has a zero denominator"
        f = float(x)
        if not math.isfinite(f) or f < 0:
            return None, f"{name} holds {f!r}"
        numbers_.append(f)
    if any(v >= 60 for v in numbers_[1:]):
        return None, f"{name} has minutes or seconds of 60 or more ({numbers_})"
    return sum(v / 60**i for i, v in enumerate(numbers_)), ""


def gps_position(gps: dict[int, Any]) -> tuple[tuple[float, float] | None, str]:
    """(latitude, longitude) of a GPS IFD, or None and why ("" when it holds no position at all)."""
    if not any(tag in gps for tag in (LAT_REF, LAT, LON_REF, LON)):
        return None, ""
    out: list[float] = []
    for ref_tag, tag, name, refs, limit in ((LAT_REF, LAT, "GPSLatitude", "NS", 90.0), (LON_REF, LON, "GPSLongitude", "EW", 180.0)):
        if tag not in gps:
            return None, f"{name} is missing"
        raw = gps.get(ref_tag)
        ref = _text(raw)
        if raw is None or ref == "":
            return None, f"{name}Ref is missing"
        if ref is None:
            return None, f"{name}Ref holds {raw!r} ({type(raw).__name__}), not {' or '.join(refs)}"
        if ref not in refs:
            return None, f"{name}Ref is {ref!r}, not {' or '.join(refs)}"
        value, problem = _degrees(gps[tag], name)
        if value is None:
            return None, problem
        if value > limit:
            return None, f"{name} {value:g} is beyond {limit:g} degrees"
        out.append(-value if ref in "SW" else value)
    return (out[0], out[1]), ""


def exif_date(exif: Image.Exif) -> str | None:
    """The capture date (DateTimeOriginal, else DateTime) as YYYY-MM-DD, or None."""
    for value in (exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL), exif.get(DATE_TIME)):
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        date = iso_date(value.strip("\x00 ")) if isinstance(value, str) else None
        if date is not None:
            return date
    return None


def place_of_exif(exif: Image.Exif) -> PlaceUsed | None:
    """The place an EXIF block gives (None when it has neither GPS nor a date)."""
    date = exif_date(exif)
    day = math.nan if date is None else float(day_of_year(date) or math.nan)
    position, problem = gps_position(dict(exif.get_ifd(GPS_IFD)))
    if position is None and date is None and not problem:
        return None
    place = Place(*position, day) if position is not None else Place(day=day)
    return PlaceUsed(place, "exif", date, "exif" if date else None, problem)


def exif_place(source: str | Path | bytes | IO[bytes] | Image.Image) -> PlaceUsed | None:
    """The place in an image's EXIF (a file, its bytes, or an opened image); None without one or when it cannot be read.

    A file is opened for its headers only: the pixels are not decoded (a PNG's eXIf chunk is read when it comes
    before the pixels, as Pillow writes it).
    """
    try:
        if isinstance(source, Image.Image):
            return place_of_exif(source.getexif())
        stream: Any = io.BytesIO(source) if isinstance(source, bytes) else source
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(stream) as im:
                if im.format == "PNG" and "exif" not in im.info:
                    return None  # Pillow would decode the whole image to look for an eXIf chunk after the pixels
                return place_of_exif(im.getexif())
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a broken EXIF block or a non-image
        if isinstance(source, (bytes, Image.Image)) or Path(str(source)).is_file():
            return PlaceUsed(NOWHERE, "exif", problem=f"the EXIF block cannot be read ({type(err).__name__}: {err})")
        return None


def merge(given: PlaceUsed | None, found: PlaceUsed | None) -> PlaceUsed | None:
    """`given` (flags, form, arguments) over `found` (EXIF), field by field: the position, then the date."""
    if given is None or found is None:
        return given or found
    g = given.place
    position = given if g.located else found
    dated = given if not math.isnan(g.day) else found
    place = Place(position.place.lat, position.place.lon, dated.place.day)
    source = position.source if place.located else (dated.date_source or given.source)
    return PlaceUsed(place, source, dated.date, dated.date_source, "" if g.located else found.problem)


def place_finder(given: PlaceUsed | None, exif: bool = True) -> Callable[[str | Path], PlaceUsed | None]:
    """The place of each file: `given` over its EXIF (or `given` alone)."""
    def where(path: str | Path) -> PlaceUsed | None:
        return merge(given, exif_place(path)) if exif else given

    return where


__all__ = ["SOURCES", "PlaceUsed", "exif_date", "exif_place", "given_place", "gps_position", "iso_date", "merge",
           "place_finder", "place_of_exif"]
