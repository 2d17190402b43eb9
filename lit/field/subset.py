"""Candidate restriction: only the classes of some taxa are ranked (`--subset family=Felidae`, a regional list).

A spec is `RANK=NAME[,NAME...]` with RANK one of kingdom ... genus, species (the binomial) or
supercategory, or the path of a CSV of allowed taxa. The CSV has a header; each column named
after a rank (or `supercategory`, or `name` / `scientific_name` for species) gives allowed
taxa at that rank; a `taxon` column, with an optional `rank` column beside it, names taxa at
any rank. Several specs add up (their union). Names match case-insensitively. A name no
class has, or a subset without classes, is a ConfigError with the closest names (difflib).
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lit.configlib import ConfigError
from lit.data.inat import RANKS, Category

FIELDS = (*RANKS, "supercategory")
_ALIASES = {"name": "species", "scientific_name": "species", "scientificname": "species"}
KEY = "--subset"


def _value(category: Category, field: str) -> str:
    return category.supercategory if field == "supercategory" else category.taxon(field)


def _names(categories: Sequence[Category], field: str | None) -> dict[str, str]:
    """Lower-cased name → name, of every taxon at `field` (None: at any rank)."""
    fields = FIELDS if field is None else (field,)
    return {_value(c, f).lower(): _value(c, f) for c in categories for f in fields}


def _unknown(value: str, field: str | None, categories: Sequence[Category], source: str) -> ConfigError:
    names = _names(categories, field)
    close = difflib.get_close_matches(value.lower(), list(names), n=5, cutoff=0.5)
    where = f"at rank {field}" if field else "at any rank"
    hint = f"closest: {', '.join(names[c] for c in close)}" if close else f"no close name among the {len(names)} taxa {where}"
    return ConfigError(source, KEY, f"no class has {field or 'a taxon'} {value!r} ({where}); {hint}")


def _match(categories: Sequence[Category], field: str | None, value: str, source: str) -> np.ndarray:
    wanted = value.strip().lower()
    fields = FIELDS if field is None else (field,)
    mask = np.array([any(_value(c, f).lower() == wanted for f in fields) for c in categories], dtype=bool)
    if not mask.any():
        raise _unknown(value, field, categories, source)
    return mask


def _field(name: str, source: str) -> str:
    field = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if field not in FIELDS:
        close = difflib.get_close_matches(field, FIELDS, n=3)
        raise ConfigError(source, KEY, f"unknown rank {name!r}; choose from {', '.join(FIELDS)}"
                                       + (f" (closest: {', '.join(close)})" if close else ""))
    return field


def _from_csv(path: Path, categories: Sequence[Category]) -> np.ndarray:
    source = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(source, KEY, f"cannot read the CSV of allowed taxa: {err}") from err
    header = [h for h in (rows[0].keys() if rows else []) if h]
    known = {h: _ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header}
    rank_cols = [h for h, f in known.items() if f in FIELDS]
    taxon_col = next((h for h, f in known.items() if f == "taxon"), None)
    rank_col = next((h for h, f in known.items() if f == "rank"), None)
    if not rank_cols and taxon_col is None:
        raise ConfigError(source, KEY, f"columns {header or '(none)'}: give a header with a rank ({', '.join(FIELDS)}), "
                                       "`scientific_name`, or `taxon` (and optionally `rank`)")
    mask = np.zeros(len(categories), dtype=bool)
    for i, row in enumerate(rows, start=2):
        where = f"{source}, line {i}"
        for col in rank_cols:
            value = (row.get(col) or "").strip()
            if value:
                mask |= _match(categories, known[col], value, where)
        if taxon_col is not None and (value := (row.get(taxon_col) or "").strip()):
            rank = (row.get(rank_col) or "").strip() if rank_col else ""
            mask |= _match(categories, _field(rank, where) if rank else None, value, where)
    return mask


def parse_subset(specs: Iterable[str], categories: Sequence[Category]) -> np.ndarray | None:
    """The allowed classes ([C] bool) of the specs, or None when there are none (every class)."""
    specs = [s for s in specs if s is not None]
    if not specs:
        return None
    mask = np.zeros(len(categories), dtype=bool)
    for spec in specs:
        if "=" in spec:
            name, _, values = spec.partition("=")
            field = _field(name, "")
            names = [v for v in values.split(",") if v.strip()]
            if not names:
                raise ConfigError("", KEY, f"{spec!r} names no taxon: write {name}=NAME[,NAME...]")
            for value in names:
                mask |= _match(categories, field, value, "")
        elif Path(spec).is_file():
            mask |= _from_csv(Path(spec), categories)
        else:
            raise ConfigError("", KEY, f"{spec!r} is neither RANK=NAME (e.g. family=Felidae, supercategory=Birds) "
                                       "nor a CSV file of allowed taxa")
    if not mask.any():
        raise ConfigError("", KEY, f"{', '.join(specs)} allows no class")
    return mask


__all__ = ["FIELDS", "parse_subset"]
