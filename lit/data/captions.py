"""Captions from class metadata, as the paper describes them, and the column selection behind them.

A caption is "A photo of the {concatenated metadata}": the recipe names the metadata
columns, a field that repeats an earlier one is dropped, white space is normalized and a
missing field is left out. `score_columns` makes "the columns that maximize inter-class
differences" measurable: unique captions first, then caption length in tokens.
"""

from __future__ import annotations

import hashlib
import itertools
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from lit.config import CaptionConfig
from lit.data.inat import Category

DEFAULT_PREFIX = "A photo of the"
# Metadata columns, in caption order (the paper's recipe is a subsequence).
COLUMNS = (
    "common_name", "supercategory", "kingdom", "phylum", "class", "order", "family", "genus",
    "specific_epithet", "name",
)
# Columns `score_columns` combines: an epithet alone names nothing (genus + epithet is `name`).
SELECT_COLUMNS = tuple(c for c in COLUMNS if c != "specific_epithet")
RECIPE_COLUMNS: dict[str, tuple[str, ...]] = {
    "paper": ("common_name", "supercategory", "name"),
    "taxonomic": ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet"),
    "scientific": ("name",),
    "common": ("common_name",),
}
Tokenizer = Callable[[str], Sequence[Any]]


def column_value(category: Category, column: str) -> str:
    """The metadata value of `column` (a COLUMNS name; `class` reads `class_`)."""
    if column not in COLUMNS:
        raise KeyError(f"unknown metadata column {column!r}; choose from {', '.join(COLUMNS)}")
    return getattr(category, "class_" if column == "class" else column)


def metadata_fields(values: Iterable[str]) -> list[str]:
    """Normalized non-empty fields, dropping any that repeats an earlier one (case-insensitive)."""
    kept: list[str] = []
    seen: set[str] = set()
    for value in values:
        text = " ".join(str(value).split())
        if text and text.lower() not in ("nan", "none", "null") and text.casefold() not in seen:
            kept.append(text)
            seen.add(text.casefold())
    return kept


def compose(prefix: str, values: Iterable[str]) -> str:
    """`prefix` followed by the concatenated metadata fields."""
    return " ".join([" ".join(prefix.split()), *metadata_fields(values)]).strip()


def caption(category: Category, recipe: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The caption of `category` under a fixed recipe (paper, taxonomic, scientific, common)."""
    if recipe not in RECIPE_COLUMNS:
        raise ValueError(f"unknown caption recipe {recipe!r}; choose from {', '.join(RECIPE_COLUMNS)} (or mixed via CaptionMaker)")
    return compose(prefix, (column_value(category, c) for c in RECIPE_COLUMNS[recipe]))


def class_texts(
    category: Category,
    recipe: str,
    mixed_recipes: Sequence[str] = tuple(RECIPE_COLUMNS),
    prefix: str = DEFAULT_PREFIX,
) -> list[str]:
    """Every caption a class can get under `recipe` (one, or one per recipe of `mixed`), without repeats."""
    recipes = mixed_recipes if recipe == "mixed" else (recipe,)
    return list(dict.fromkeys(caption(category, r, prefix) for r in recipes))


class CaptionMaker:
    """Captions per sample from a CaptionConfig; `mixed` draws a recipe per sample key, seeded."""

    def __init__(self, cfg: CaptionConfig, seed: int = 0) -> None:
        self.cfg, self.seed = cfg, seed

    def recipe_for(self, sample_key: str | int) -> str:
        """The recipe of one sample: fixed, or drawn from a seeded hash of the key (no global RNG)."""
        if self.cfg.recipe != "mixed":
            return self.cfg.recipe
        digest = hashlib.blake2b(f"{self.seed}\0{sample_key}".encode(), digest_size=8).digest()
        return self.cfg.mixed_recipes[int.from_bytes(digest, "little") % len(self.cfg.mixed_recipes)]

    def __call__(self, category: Category, sample_key: str | int) -> str:
        return caption(category, self.recipe_for(sample_key), self.cfg.prefix)


@dataclass(frozen=True)
class ColumnScore:
    """How well a column subset tells classes apart, and what it costs in tokens."""

    columns: tuple[str, ...]
    unique: int
    total: int
    mean_tokens: float
    max_tokens: int

    @property
    def identifies_all(self) -> bool:
        return self.unique == self.total


def whitespace_tokens(text: str) -> list[str]:
    """The fallback tokenizer: white-space separated words."""
    return text.split()


def score_columns(
    categories: Sequence[Category],
    tokenizer: Tokenizer | None = None,
    max_columns: int = 3,
    columns: Sequence[str] = SELECT_COLUMNS,
    include: Iterable[Sequence[str]] = RECIPE_COLUMNS.values(),
    prefix: str = DEFAULT_PREFIX,
    special_tokens: int = 0,
) -> list[ColumnScore]:
    """Score every subset of up to `max_columns` columns (plus `include`), best first.

    Best means most classes with a caption no other class has, then the fewest mean tokens.
    `tokenizer` returns the tokens of a text without special tokens (`special_tokens` are
    added once per caption). Each distinct value is tokenized once and lengths are summed,
    which is exact for tokenizers that split on white space first (WordPiece, CLIP BPE).
    """
    tokenizer = tokenizer or whitespace_tokens
    lengths: dict[str, int] = {}

    def n_tokens(text: str) -> int:
        if text not in lengths:
            lengths[text] = len(tokenizer(text)) if text else 0
        return lengths[text]

    prefix_len = n_tokens(" ".join(prefix.split())) + special_tokens
    names = list(dict.fromkeys([*columns, *(c for extra in include for c in extra)]))
    # Each cell once: (normalized text, its case-folded form for the repeat check, tokens).
    cells = []
    for c in categories:
        texts = [next(iter(metadata_fields([column_value(c, col)])), "") for col in names]
        cells.append([(t, t.casefold(), n_tokens(t)) for t in texts])
    subsets = [s for k in range(1, max_columns + 1) for s in itertools.combinations(range(len(columns)), k)]
    seen = {frozenset(s) for s in subsets}
    for extra in include:
        idx = tuple(names.index(c) for c in extra)
        if idx and frozenset(idx) not in seen:
            subsets.append(idx)
            seen.add(frozenset(idx))
    scores = []
    for subset in subsets:
        keys: list[tuple[str, ...]] = []
        sizes: list[int] = []
        for row in cells:
            kept: list[str] = []
            folds: set[str] = set()
            size = prefix_len
            for i in subset:
                text, fold, n = row[i]
                if text and fold not in folds:
                    kept.append(text)
                    folds.add(fold)
                    size += n
            keys.append(tuple(kept))
            sizes.append(size)
        counts = Counter(keys)
        unique = sum(1 for k in keys if counts[k] == 1)
        mean = statistics.fmean(sizes) if sizes else 0.0
        scores.append(ColumnScore(tuple(names[i] for i in subset), unique, len(keys), mean, max(sizes, default=0)))
    scores.sort(key=lambda s: (-s.unique, s.mean_tokens, len(s.columns), s.columns))
    return scores


def print_scores(scores: Sequence[ColumnScore], console: Console, top: int = 15, tokenizer_name: str = "white space") -> None:
    """A rich table of the `top` subsets, plus the rows of the named recipes wherever they rank."""
    recipes = {cols: name for name, cols in RECIPE_COLUMNS.items()}
    table = Table(title=f"Metadata columns ranked by unique captions, then tokens ({tokenizer_name})")
    for name, justify in (("rank", "right"), ("columns", "left"), ("recipe", "left"), ("unique classes", "right"),
                          ("mean tokens", "right"), ("max tokens", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for rank, s in enumerate(scores, 1):
        if rank > top and s.columns not in recipes:
            continue
        style = "bold green" if s.identifies_all else ""
        table.add_row(str(rank), " + ".join(s.columns), recipes.get(s.columns, ""),
                      f"{s.unique:,}/{s.total:,}", f"{s.mean_tokens:.1f}", str(s.max_tokens), style=style)
    console.print(table)


__all__ = [
    "COLUMNS", "DEFAULT_PREFIX", "RECIPE_COLUMNS", "SELECT_COLUMNS", "CaptionMaker", "ColumnScore", "caption", "class_texts",
    "column_value", "compose", "metadata_fields", "print_scores", "score_columns", "whitespace_tokens",
]
