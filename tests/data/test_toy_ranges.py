"""Toy ranges: each class's images are placed and dated from its range, and an image's bytes never depend on it."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lit.data.drawn import ClassStyle, write_drawn_inat
from lit.data.inat import load_split
from lit.data.toy import SPECIES, toy_categories, toy_range, write_toy_inat
from lit.data.toy_hard import GENERA, SPECIES_OF_GENUS, hard_categories, hard_range
from lit.data.toy_ranges import TOY_RANGES, Range, Region, Season, date_text, draw_place
from lit.data.toy_wide import wide_range, write_wide_inat

SMALL = dict(train_per_class=8, val_per_class=2, test_per_class=0, image_size=16)


def _points(root: Path, split: str = "train") -> dict[int, list[tuple[float, float, float]]]:
    """category id -> (lat, lon, day) of its images, read back through the real loader (NaN where unknown)."""
    out: dict[int, list[tuple[float, float, float]]] = {}
    for img in load_split(root, split).images:
        out.setdefault(img.category_id, []).append(img.place.row())
    return out


def _circular_spread(days: np.ndarray, peak: float) -> float:
    """Mean distance in days from `peak`, around the year."""
    d = np.abs(days - peak) % 365
    return float(np.minimum(d, 365 - d).mean())


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_inat(tmp_path_factory.mktemp("ranges") / "toy", seed=0, **SMALL)  # type: ignore[arg-type]


def test_every_toy_species_has_a_range_on_earth() -> None:
    assert set(TOY_RANGES) == {cid for cid, *_ in SPECIES}
    for r in TOY_RANGES.values():
        for box in r.regions:
            assert -90 <= box.south < box.north <= 90 and -180 <= box.west < box.east <= 180 and box.weight > 0


def test_written_places_follow_the_real_ranges(toy: Path) -> None:
    train, val = _points(toy, "train"), _points(toy, "val")
    located = unlocated = 0
    for index, cat in enumerate(toy_categories()):
        for lat, lon, day in train[cat.id] + val[cat.id]:
            assert 1 <= day <= 365  # every image is dated, located or not
            if math.isnan(lat):
                unlocated += 1
                continue
            located += 1
            assert toy_range(index).contains(lat, lon), (cat.common_name, lat, lon)
    assert 0.03 < unlocated / (located + unlocated) < 0.2  # about 10 % without coordinates, as before

    def located_points(cid: int) -> np.ndarray:
        return np.array([p[:2] for p in train[cid] + val[cid] if not math.isnan(p[0])])

    assert (located_points(4677)[:, 0] > 25).all()  # Red Fox: the northern hemisphere only
    coronet = located_points(3308)
    assert ((coronet[:, 0] > -8) & (coronet[:, 0] < 11) & (coronet[:, 1] > -80) & (coronet[:, 1] < -71)).all()  # the Andes
    pear = located_points(7399)
    assert ((pear[:, 0] > 23) & (pear[:, 0] < 36) & (pear[:, 1] > -115) & (pear[:, 1] < -95)).all()  # Texas, N Mexico
    urchin = located_points(5213)
    assert ((urchin[:, 0] > 27) & (urchin[:, 0] < 58) & (urchin[:, 1] < -113)).all()  # the Pacific coast
    rng = np.random.default_rng(0)
    fox_lons = np.array([TOY_RANGES[4677].draw_point(rng)[1] for _ in range(2000)])
    for west, east in ((-130, -60), (-10, 40), (40, 140)):  # North America, Europe, northern Asia
        assert ((fox_lons >= west) & (fox_lons <= east)).mean() > 0.2


def test_seasonal_species_are_seen_around_their_peak(toy: Path) -> None:
    """Days of a seasonal species sit near its peak; an all-year species' days spread over the year."""
    by_id = _points(toy, "train")
    for cid in (1832, 5494, 3062):  # Monarch (summer), Fly Agaric (autumn), Spotted Salamander (spring)
        season = TOY_RANGES[cid].season
        assert season is not None
        days = np.array([d for _, _, d in by_id[cid]])
        assert _circular_spread(days, season.peak) < 1.2 * season.width
    rng = np.random.default_rng(0)
    monarch = TOY_RANGES[1832]
    days = np.array([monarch.draw_day(rng) for _ in range(2000)])
    assert _circular_spread(days, 200) < 35 and ((days > 130) & (days < 270)).mean() > 0.95
    anywhen = np.array([TOY_RANGES[4987].draw_day(rng) for _ in range(2000)])
    assert _circular_spread(anywhen, 200) > 75 and anywhen.min() <= 10 and anywhen.max() >= 355


def test_a_season_wraps_around_the_new_year() -> None:
    winter = Range((Region(0, 1, 0, 1),), Season(peak=5, width=20))
    days = np.array([winter.draw_day(np.random.default_rng(i)) for i in range(500)])
    assert days.min() >= 1 and days.max() <= 365 and (days > 300).mean() > 0.2 and (days < 40).mean() > 0.5
    assert date_text(1) == "2019-01-01 12:00:00+00:00" and date_text(165) == "2019-06-14 12:00:00+00:00"
    assert date_text(365) == "2019-12-31 12:00:00+00:00"
    entry = draw_place(winter, np.random.default_rng(3), located=False)
    assert entry["latitude"] is None and entry["longitude"] is None and entry["location_uncertainty"] is None


def _sample(r: Range, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points of a range ([n, 2]: lat, lon), drawn like Range.draw_point but all at once."""
    weights = np.array([b.weight for b in r.regions])
    boxes = np.array([(b.south, b.north, b.west, b.east) for b in r.regions])[rng.choice(len(weights), n, p=weights / weights.sum())]
    return np.stack([rng.uniform(boxes[:, 0], boxes[:, 1]), rng.uniform(boxes[:, 2], boxes[:, 3])], 1)


def _overlap(a: Range, b: Range, n: int = 4000) -> float:
    """Share of a's sampled points that fall in b's range."""
    p = _sample(a, n, np.random.default_rng(1))
    inside = np.zeros(n, bool)
    for box in b.regions:
        inside |= (p[:, 0] >= box.south) & (p[:, 0] <= box.north) & (p[:, 1] >= box.west) & (p[:, 1] <= box.east)
    assert inside.tolist()[:20] == [b.contains(lat, lon) for lat, lon in p[:20]]  # the vectorized test is Range.contains
    return float(inside.mean())


def test_hard_genera_overlap_partly() -> None:
    """The four species of a genus: neighbours share about half their range, the outer two almost nothing."""
    assert [c.id for c in hard_categories()] == sorted(c.id for c in hard_categories())
    for g in range(len(GENERA)):
        ranges = [hard_range(4 * g + s) for s in range(len(SPECIES_OF_GENUS))]
        for s in range(3):
            assert 0.35 < _overlap(ranges[s], ranges[s + 1]) < 0.75, (g, s)
        assert _overlap(ranges[0], ranges[3]) < 0.05
        assert _overlap(ranges[0], ranges[2]) < _overlap(ranges[0], ranges[1])
        assert np.mean([_overlap(ranges[0], hard_range(4 * h)) for h in range(len(GENERA)) if h != g]) < 0.1  # genera apart
    assert hard_range(0) == hard_range(0) and hard_range(0) != hard_range(1)


def test_hard_set_places_follow_their_species(tmp_path: Path) -> None:
    root = write_toy_inat(tmp_path / "hard", seed=1, train_per_class=4, val_per_class=0, test_per_class=0, image_size=16,
                          hard=True)
    points = _points(root)
    for index, cat in enumerate(hard_categories()):
        for lat, lon, _ in points[cat.id]:
            assert math.isnan(lat) or hard_range(index).contains(lat, lon)
    fungus = hard_range([c.supercategory for c in hard_categories()].index("Fungi"))
    assert fungus.season is not None and hard_range(0).season is None  # fungi have a season, birds none


def test_wide_ranges_are_seeded_by_class(tmp_path: Path) -> None:
    assert wide_range(7) == wide_range(7) and wide_range(7) != wide_range(8)
    seasons = sum(wide_range(i).season is not None for i in range(300))
    assert 60 < seasons < 140
    root = write_wide_inat(tmp_path / "wide", classes=12, train_per_class=6, val_per_class=0, image_size=16)
    for cid, places in _points(root).items():
        assert all(math.isnan(lat) or wide_range(cid).contains(lat, lon) for lat, lon, _ in places)


def _jpeg_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.jpg"))}


def test_image_bytes_do_not_depend_on_the_ranges(tmp_path: Path) -> None:
    """With ranges or without (the worldwide draws of before), every image, name and id is the same; only places differ."""
    cats = toy_categories()
    kw = dict(seed=0, train_per_class=2, val_per_class=1, test_per_class=1, image_size=24)
    ranged = write_toy_inat(tmp_path / "ranged", **kw)  # type: ignore[arg-type]
    plain = write_drawn_inat(tmp_path / "plain", cats, ClassStyle.of, ("toy", "x"), **kw)  # type: ignore[arg-type]
    assert _jpeg_digests(ranged) == _jpeg_digests(plain) and len(_jpeg_digests(plain)) == 32 * 5
    place_keys = {"latitude", "longitude", "date", "location_uncertainty"}
    for split in ("train", "train_mini", "val", "public_test"):
        a, b = (json.loads((root / f"{split}.json").read_text())["images"] for root in (ranged, plain))
        assert [{k: v for k, v in i.items() if k not in place_keys} for i in a] == \
               [{k: v for k, v in i.items() if k not in place_keys} for i in b]
        assert [i["latitude"] is None for i in a] == [i["latitude"] is None for i in b]  # the same images unlocated
        assert [list(i) for i in a] == [list(i) for i in b]  # the same keys in the same order
    assert _points(ranged) != _points(plain)
