"""Writing predictions: one row per image as CSV or JSON lines (streamed into an atomic file), and the summary.

A CSV row holds the path, the confident answer (rank, taxon, probability, lineage), for each of
the top k: taxon, probability, common name of its most likely species, lineage; then the place
used (PLACE_COLUMNS: place_lat, place_lon, place_date, place_day, place_source, place_problem)
and, when the location prior weighed the answer, its weight and the image-only answer
(prior_weight, image_only_taxon, image_only_probability, image_only_answer_rank,
image_only_answer_taxon; empty otherwise). A JSON line is `Prediction.to_json()`: {"image",
"guesses": [...], "answer": {...}, "place": {...} or null, "prior_weight", "image_only":
{"guesses", "answer"} or null}. Skipped inputs go to OUT.skipped.txt (path, tab, reason) and the summary.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.table import Table

from lit.errors import UsageError
from lit.field.images import Skipped
from lit.field.scoring import Prediction
from lit.io import atomic_file

FORMATS = (".csv", ".jsonl")
PLACE_COLUMNS = ["place_lat", "place_lon", "place_date", "place_day", "place_source", "place_problem"]
PRIOR_COLUMNS = ["prior_weight", "image_only_taxon", "image_only_probability", "image_only_answer_rank",
                 "image_only_answer_taxon"]


def csv_header(k: int) -> list[str]:
    head = ["path", "answer_rank", "answer_taxon", "answer_probability", "answer_lineage"]
    for i in range(1, k + 1):
        head += [f"taxon_{i}", f"probability_{i}", f"common_name_{i}", f"lineage_{i}"]
    return head + PLACE_COLUMNS + PRIOR_COLUMNS


def _number(value: float, digits: int = 6) -> str:
    if math.isnan(value):
        return ""
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def place_cells(p: Prediction) -> list[str]:
    """The PLACE_COLUMNS and PRIOR_COLUMNS of a prediction (empty cells where unknown or not applied)."""
    cells = ["", "", "", "", "", ""]
    if p.place is not None:
        w = p.place.place
        cells = [_number(w.lat), _number(w.lon), p.place.date or "", _number(w.day, 0), p.place.source, p.place.problem]
    prior = ["", "", "", "", ""]
    if p.image_only is not None:
        top, a = p.image_only.guesses[0] if p.image_only.guesses else None, p.image_only.answer
        prior = [f"{p.prior_weight:g}" if p.prior_weight is not None else "", top.taxon if top else "",
                 f"{top.probability:.6f}" if top else "", a.rank or "", a.taxon]
    return cells + prior


def csv_row(p: Prediction, k: int) -> list[str]:
    a = p.answer
    row = [p.path, a.rank or "", a.taxon, f"{a.probability:.6f}", " > ".join(a.lineage)]
    for i in range(k):
        if i < len(p.guesses):
            g = p.guesses[i]
            row += [g.taxon, f"{g.probability:.6f}", g.species.common_name if g.rank == "species" else "", " > ".join(g.lineage)]
        else:
            row += ["", "", "", ""]
    return row + place_cells(p)


class RowWriter:
    """Rows of predictions into `out`, in the format of its suffix (.csv or .jsonl)."""

    def __init__(self, f: IO[bytes], suffix: str, k: int) -> None:
        self.text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        self.suffix, self.k, self.rows = suffix, k, 0
        self.csv = csv.writer(self.text) if suffix == ".csv" else None
        if self.csv is not None:
            self.csv.writerow(csv_header(k))

    def write(self, predictions: Sequence[Prediction]) -> None:
        for p in predictions:
            if self.csv is not None:
                self.csv.writerow(csv_row(p, self.k))
            else:
                self.text.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
            self.rows += 1


def check_out(out: str | Path) -> Path:
    path = Path(out)
    if path.suffix.lower() not in FORMATS:
        raise UsageError("out", f"{path}: name a .csv or .jsonl file")
    return path


@contextmanager
def row_writer(out: str | Path, k: int) -> Iterator[RowWriter]:
    """A RowWriter whose file appears at `out` only when the block ends without an error."""
    path = check_out(out)
    with atomic_file(path) as f:
        writer = RowWriter(f, path.suffix.lower(), k)
        yield writer
        writer.text.flush()
        writer.text.detach()


def skipped_lines(skipped: Sequence[Skipped]) -> list[str]:
    return [f"{s.path}\t{s.reason}" for s in skipped]


def write_skipped(out: str | Path, skipped: Sequence[Skipped]) -> Path:
    """Every skipped input and its reason, one a line (tab-separated), beside the predictions: OUT.skipped.txt."""
    path = Path(out).with_name(Path(out).name + ".skipped.txt")
    from lit.io import atomic_write

    return atomic_write(path, "".join(line + "\n" for line in skipped_lines(skipped)))


def prediction_table(p: Prediction) -> Table:
    """One image's top-k (names, probability, lineage) and its confident answer below."""
    rank = p.guesses[0].rank if p.guesses else "species"
    a = p.answer
    answer = "unknown (no rank reaches the threshold)" if a.rank is None else f"{a.rank} {a.taxon} ({100 * a.probability:.1f}%)"
    caption = f"answer at >= {100 * a.min_confidence:.0f}%: {answer}"
    if p.place is not None:
        caption += f"\nplace: {place_text(p)}"
    if p.image_only is not None and p.image_only.guesses:
        g = p.image_only.guesses[0]
        caption += f"\nfrom the image alone: {g.taxon} ({100 * g.probability:.1f}%)"
    table = Table(title=p.path, title_justify="left", caption=caption, caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("prob.", justify="right")
    names = ("common name", "species", "taxonomy") if rank == "species" else (rank, "taxonomy", "most likely species")
    for name in names:
        table.add_column(name)
    for i, g in enumerate(p.guesses, 1):
        if rank == "species":
            cells = (g.species.common_name, g.species.name, " > ".join(g.lineage[:-1]))
        else:
            cells = (g.taxon, " > ".join(g.lineage), f"{g.species.common_name} ({g.species.name}) {100 * g.species_probability:.1f}%")
        table.add_row(str(i), f"{100 * g.probability:.1f}%", *cells, style="bold" if i == 1 else "")
    return table


def place_text(p: Prediction) -> str:
    """The place a prediction used, in words: `51.5, -0.12, 2021-06-14 (flags)`, or why EXIF GPS was not used."""
    if p.place is None:
        return "none"
    w, parts = p.place.place, []
    if w.located:
        parts.append(f"{_number(w.lat, 5)}, {_number(w.lon, 5)}")
    if p.place.date or not math.isnan(w.day):
        parts.append(p.place.date or f"day {w.day:.0f}")
    text = ", ".join(parts) + f" ({p.place.source})"
    return text + (f"; GPS not used: {p.place.problem}" if p.place.problem else "")


class Tally:
    """What the summary says of the predictions, counted batch by batch (`lit predict` keeps no prediction: a folder of a
    million photos costs the rows in flight, not a million Predictions)."""

    def __init__(self, limit: int = 20) -> None:
        self.limit, self.predicted, self.unweighed = limit, 0, 0
        self.sources: Counter[str] = Counter()
        self.malformed: list[tuple[str, str]] = []  # the first `limit` (path, problem)
        self.malformed_count = 0

    def add(self, predictions: Sequence[Prediction]) -> None:
        for p in predictions:
            self.predicted += 1
            if p.place is None:
                continue
            if p.place.located:
                self.sources[p.place.source] += 1
                self.unweighed += p.image_only is None
            if p.place.problem:
                self.malformed_count += 1
                if len(self.malformed) < self.limit:
                    self.malformed.append((p.path, p.place.problem))

    @property
    def located(self) -> int:
        return sum(self.sources.values())


def print_places(tally: Tally, console: Console) -> None:
    """How many images were answered with a place (by source), from the image alone, with malformed EXIF GPS (the first
    `tally.limit` listed); and once, when places were known but the model has no prior."""
    limit = tally.limit
    by_source = ", ".join(f"{s} {n}" for s, n in sorted(tally.sources.items()))
    line = f"places: {tally.located} image(s) with a place{f' ({by_source})' if by_source else ''}, " \
           f"{tally.predicted - tally.located} image-only"
    if tally.malformed_count:
        line += f", {tally.malformed_count} of them with malformed EXIF GPS"
    console.print(line, highlight=False)
    for path, problem in tally.malformed:
        console.print(f"  malformed GPS in {path}: {problem}", soft_wrap=True, markup=False, highlight=False)
    if tally.malformed_count > limit:
        console.print(f"  ... and {tally.malformed_count - limit} more", highlight=False)
    if tally.unweighed:
        console.print(f"the model has no location prior: the place of {tally.unweighed} image(s) was recorded but changed "
                      "nothing (train one with `lit prior JOB.yaml`, then export again for an ONNX model)", highlight=False)


def print_summary(predicted: int, skipped: Sequence[Skipped], console: Console, limit: int = 50) -> None:
    """How many images were predicted and skipped, then each skipped input with its reason (the first `limit`), unwrapped."""
    console.print(f"{predicted} image(s) predicted, {len(skipped) or 'none'} skipped", highlight=False)
    for s in skipped[:limit]:
        console.print(f"  skipped {s.path}: {s.reason}", soft_wrap=True, markup=False, highlight=False)
    if len(skipped) > limit:
        console.print(f"  ... and {len(skipped) - limit} more", highlight=False)


__all__ = ["FORMATS", "PLACE_COLUMNS", "PRIOR_COLUMNS", "RowWriter", "Tally", "check_out", "csv_header", "csv_row", "place_cells",
           "place_text", "prediction_table", "print_places", "print_summary", "row_writer", "skipped_lines", "write_skipped"]
