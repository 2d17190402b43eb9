"""Where and when a photo was taken: validated latitude, longitude and day of year.

iNat2021's `images` records carry `latitude`, `longitude` and `date` ("2019-05-03 12:00:00+00:00");
a few have null or NaN coordinates. Photos carry them in EXIF ("2019:05:03 12:00:00"), people type
them ("2019-05-03"). `Place` is the one form every consumer reads: the location prior's training and
its use in eval, predict and the server. Unknown parts are NaN, so a batch of places is one float
array ([N, 3]: latitude, longitude, day of year).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

from lit.errors import UsageError

_DATE = re.compile(r"^\s*(\d{4})[-:/](\d{1,2})[-:/](\d{1,2})(?:[ T].*)?$")


@dataclass(frozen=True)
class Place:
    """A latitude and longitude in degrees and a day of year (1-366); NaN where unknown."""

    lat: float = math.nan
    lon: float = math.nan
    day: float = math.nan

    @property
    def located(self) -> bool:
        """Whether the coordinates are known (a day alone does not place a photo)."""
        return not (math.isnan(self.lat) or math.isnan(self.lon))

    def row(self) -> tuple[float, float, float]:
        """(lat, lon, day), the row of a batch of places."""
        return (self.lat, self.lon, self.day)


NOWHERE = Place()
"""The place of a photo whose location is unknown."""


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def coordinates_problem(lat: Any, lon: Any) -> str:
    """Why (lat, lon) is not a place on Earth ("" when it is one)."""
    a, b = _number(lat), _number(lon)
    if a is None or b is None:
        return f"latitude {lat!r} and longitude {lon!r} must both be numbers"
    if math.isnan(a) or math.isnan(b):
        return f"latitude {lat!r} or longitude {lon!r} is NaN"
    if not -90.0 <= a <= 90.0:
        return f"latitude {a!r} is outside -90..90"
    if not -180.0 <= b <= 180.0:
        return f"longitude {b!r} is outside -180..180"
    return ""


def day_of_year(date: Any) -> float | None:
    """The day of year (1-366) of a date text: iNat's `2019-05-03 12:00:00+00:00`, EXIF's `2019:05:03 12:00:00`, ISO `2019-05-03`.

    None when it does not parse or names no real day.
    """
    if not isinstance(date, str):
        return None
    m = _DATE.match(date)
    if m is None:
        return None
    try:
        return float(dt.date(int(m[1]), int(m[2]), int(m[3])).timetuple().tm_yday)
    except ValueError:
        return None


def record_place(raw: Any) -> tuple[Place, str]:
    """The place of an annotation file's image record and, when its coordinates are unusable, why ("" when fine).

    A record without coordinates (null, NaN, out of range) is unplaced; its date is still kept.
    """
    if not isinstance(raw, dict):
        return NOWHERE, "not a record"
    day = day_of_year(raw.get("date"))
    lat, lon = raw.get("latitude"), raw.get("longitude")
    if _missing(lat) and _missing(lon):
        return Place(day=math.nan if day is None else day), "no coordinates"
    problem = coordinates_problem(lat, lon)
    if problem:
        return Place(day=math.nan if day is None else day), problem
    return Place(float(str(lat)), float(str(lon)), math.nan if day is None else day), ""


def user_place(lat: Any = None, lon: Any = None, date: Any = None, *, lat_name: str = "--lat", lon_name: str = "--lon",
               date_name: str = "--date") -> Place:
    """A place a person gave (flags, form fields): both coordinates or neither, an optional date; else UsageError naming the value."""
    given = [v for v in (lat, lon) if v is not None and str(v).strip() != ""]
    day = math.nan
    if date is not None and str(date).strip() != "":
        parsed = day_of_year(str(date))
        if parsed is None:
            raise UsageError(date_name, f"{date!r} is not a date: give YYYY-MM-DD (for example 2021-06-14)")
        day = parsed
    if not given:
        return Place(day=day)
    if len(given) == 1:
        raise UsageError(f"{lat_name}/{lon_name}", f"give both (got only {lat_name if lat not in (None, '') else lon_name})")
    problem = coordinates_problem(lat, lon)
    if problem:
        raise UsageError(f"{lat_name}/{lon_name}", f"{problem}; give decimal degrees, for example {lat_name} 51.5 {lon_name} -0.12")
    return Place(float(str(lat)), float(str(lon)), day)


__all__ = ["NOWHERE", "Place", "coordinates_problem", "day_of_year", "record_place", "user_place"]
