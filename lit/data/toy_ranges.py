"""Where and when the toy species are seen: a range per class, and draws of an image's place and date from it.

A `Range` is a few latitude/longitude boxes with weights (an image falls in a box chosen by
weight, uniformly inside it) and an optional `Season` (days of year around a peak, wrapping
around the year; none: all year). The 32 real species of lit.data.toy have their real ranges
(`TOY_RANGES`, coarse boxes); lit.data.toy_hard and lit.data.toy_wide generate theirs. The
location prior (issue 22) learns p(species | place) from what these draws write into the
annotation files, so it has something real to find.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

YEAR = 2019
"""The year of every toy date (365 days)."""
DAYS = 365


@dataclass(frozen=True)
class Region:
    """A latitude/longitude box in degrees (south..north, west..east) and its share of a species' sightings."""

    south: float
    north: float
    west: float
    east: float
    weight: float = 1.0

    def contains(self, lat: float, lon: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lon <= self.east


@dataclass(frozen=True)
class Season:
    """Days of year around `peak` (1-365), a normal spread of `width` days wrapped around the year."""

    peak: float
    width: float


@dataclass(frozen=True)
class Range:
    """Where (weighted boxes) and when (a season, or None for all year) a species is seen."""

    regions: tuple[Region, ...]
    season: Season | None = None

    def contains(self, lat: float, lon: float) -> bool:
        """Whether (lat, lon) lies in one of the boxes."""
        return any(r.contains(lat, lon) for r in self.regions)

    def draw_point(self, rng: np.random.Generator) -> tuple[float, float]:
        """A latitude and longitude: a box picked by weight, a uniform point inside it."""
        weights = np.array([r.weight for r in self.regions], np.float64)
        r = self.regions[int(rng.choice(len(self.regions), p=weights / weights.sum()))]
        return float(rng.uniform(r.south, r.north)), float(rng.uniform(r.west, r.east))

    def draw_day(self, rng: np.random.Generator) -> int:
        """A day of year (1-365): near the season's peak, else uniform."""
        if self.season is None:
            return int(rng.integers(1, DAYS + 1))
        day = round(self.season.peak + rng.normal(0.0, self.season.width))
        return (day - 1) % DAYS + 1


def date_text(day: int) -> str:
    """The iNat2021 date text of a day of the toy year ("2019-06-14 12:00:00+00:00" for day 165)."""
    return f"{dt.date(YEAR, 1, 1) + dt.timedelta(days=day - 1)} 12:00:00+00:00"


def draw_place(range_: Range, rng: np.random.Generator, located: bool) -> dict[str, object]:
    """An image record's latitude, longitude, date and location_uncertainty drawn from `range_` (null coordinates when not `located`).

    The draws are the same whether the image is located or not, so `located` changes nothing else.
    """
    lat, lon = range_.draw_point(rng)
    day = range_.draw_day(rng)
    uncertainty = int(rng.integers(1, 500))
    return {"date": date_text(day), "latitude": round(lat, 5) if located else None,
            "longitude": round(lon, 5) if located else None, "location_uncertainty": uncertainty if located else None}


def _range(boxes: tuple[tuple[float, float, float, float, float], ...], season: tuple[float, float] | None = None) -> Range:
    return Range(tuple(Region(*b) for b in boxes), None if season is None else Season(*season))


# iNat2021 id -> range: boxes (south, north, west, east, weight) and season (peak day, width in days) or None.
TOY_RANGES: dict[int, Range] = {
    2: _range(((34, 49, -125, -120, 3), (49, 58, -136, -125, 1))),  # Serpula columbiana: Pacific coast
    16: _range(((29, 45, -100, -72, 4), (18, 29, -106, -88, 1), (33, 42, -123, -115, 1)), (240, 30)),
    310: _range(((40, 60, -8, 35, 3), (35, 50, -105, -65, 2), (30, 55, 70, 140, 1)), (160, 50)),
    679: _range(((36, 58, -9, 30, 2), (28, 49, -123, -70, 3), (-35, -5, -70, -40, 1), (-34, 10, 15, 35, 1),
                 (-38, -25, 115, 153, 1), (22, 42, 100, 140, 1))),
    1832: _range(((25, 50, -120, -65, 5), (18, 21, -101, -99, 1)), (200, 35)),
    2087: _range(((37, 52, -124, -104, 1),), (215, 20)),
    2159: _range(((25, 43, -98, -70, 1),), (180, 25)),
    2738: _range(((25, 41, -82, -70, 2), (26, 31, -97, -82, 2), (-35, -5, -50, -35, 1))),
    2804: _range(((27, 47, -97, -70, 4), (33, 45, -122, -110, 1))),
    2900: _range(((36, 60, -125, -115, 3), (43, 60, -5, 25, 1), (-46, -36, 168, 178, 1), (-45, -35, -73, -68, 0.5))),
    3027: _range(((28, 46, -97, -70, 4), (33, 48, -123, -112, 1)), (170, 45)),
    3062: _range(((33, 47, -92, -65, 1),), (85, 20)),
    3308: _range(((1, 10, -77, -72, 3), (-4, 1, -79.5, -77.5, 2), (-7, -4, -79.5, -77.5, 0.5))),  # Buff-tailed Coronet: Andes
    3709: _range(((26, 45, -100, -68, 5), (15, 26, -105, -88, 1))),
    3773: _range(((35, 60, -125, -96, 4), (57, 64, -160, -135, 1))),
    4359: _range(((25, 55, -125, -65, 5), (10, 25, -100, -70, 1))),
    4677: _range(((30, 65, -130, -60, 3), (36, 70, -10, 40, 3), (40, 68, 40, 140, 2))),  # Red Fox: the north
    4719: _range(((25, 52, -123, -68, 5), (10, 25, -105, -85, 1), (49, 54, 7, 14, 0.5))),
    4987: _range(((25, 36, -98, -76, 1),)),  # Green Anole: the southeastern USA
    5135: _range(((25, 48, -100, -65, 1),), (160, 40)),
    5196: _range(((43, 60, -10, 12, 2), (31, 42, 129, 142, 1), (32, 48, -125, -120, 1), (30, 42, -77, -69, 1)), (200, 40)),
    5202: _range(((30, 49, -125, -117, 4), (49, 60, -138, -124, 1))),
    5213: _range(((28, 49, -125, -114, 4), (49, 57, -135, -124, 1))),
    5348: _range(((43, 60, -10, 20, 5), (39, 45, -80, -70, 1))),
    5349: _range(((36, 54, -10, 20, 3), (32, 40, -123, -116, 2), (-38, -30, 138, 153, 1), (-46, -35, 168, 178, 1),
                  (-35, -32, 18, 28, 0.5))),
    5407: _range(((40, 62, -10, 30, 4), (37, 50, -124, -120, 1))),
    5494: _range(((45, 65, -5, 40, 3), (35, 55, -125, -65, 2), (45, 60, 60, 140, 1)), (280, 25)),  # Fly Agaric: autumn
    5695: _range(((30, 50, -125, -65, 3), (40, 60, -10, 30, 2), (30, 45, 120, 142, 0.5), (-40, -28, 140, 153, 0.5))),
    6824: _range(((28, 48, -120, -90, 3), (40, 55, -5, 40, 1)), (215, 30)),
    7039: _range(((30, 55, -125, -65, 3), (40, 65, -10, 40, 3), (35, 60, 40, 140, 1), (-45, -30, 140, 178, 0.5)), (120, 50)),
    7399: _range(((26, 33, -104, -96, 3), (24, 30, -110, -100, 2), (31, 35, -114, -109, 1))),  # Texas, N Mexico, Arizona
    8168: _range(((30, 46, -96, -70, 1),)),
}


__all__ = ["DAYS", "TOY_RANGES", "YEAR", "Range", "Region", "Season", "date_text", "draw_place"]
