"""`lit`: a thin command line over the library. Each subcommand lives beside the code it drives.

A subcommand module exposes `add_arguments(parser)` and `run(args) -> int`; it is imported
only when used, so `lit --help` stays fast. Options and positionals (`section.key=value`
overrides included) may come in any order (`parse_intermixed`, which `python -m launcher` uses too).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from lit.errors import UserError
from lit.log import console, setup_logging

# name → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "toy-inat": ("lit.data.cli_toy", "write the embedded toy dataset in the official iNat2021 layout"),
    "captions": ("lit.data.cli_captions", "show captions and score metadata column subsets (--select)"),
    "shards": ("lit.data.cli_shards", "write captioned webdataset shards from a dataset split"),
    "embed": ("lit.data.cli_embed", "cache the frozen image tower's embeddings of a set of shards"),
    "train": ("lit.train.cli", "LiT-train a model from a job YAML"),
    "prior": ("lit.prior.cli", "learn where and when each species is seen (a location prior), or map one species' range"),
    "export": ("lit.field.cli_export", "export a checkpoint as weights open_clip loads directly, or with --onnx for onnxruntime"),
    "eval": ("lit.eval.cli", "zero-shot top-1/top-5 and per-rank accuracy of a checkpoint"),
    "probe": ("lit.eval.cli_probe", "a linear probe (supervised ceiling) on a job's cached embeddings, reported as zero-shot is"),
    "predict": ("lit.field.cli_predict", "top-k species of images, folders or lists with their taxonomy (CSV/JSONL, subsets, back-off)"),
    "calibrate": ("lit.field.cli_calibrate", "fit the prediction temperature on the validation set and store it with the run"),
    "serve": ("lit.field.cli_serve", "a web page and JSON endpoint that name the species in a photo"),
    "models": ("lit.models.cli", "prepare the towers a job names on a login node (download, check, sha256 sums); verify them"),
    "doctor": ("lit.doctor", "check the runtime: torch, CUDA, GPUs, cuDNN, NCCL, job paths"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def parse_intermixed(parser: argparse.ArgumentParser, argv: Sequence[str],
                     namespace: argparse.Namespace | None = None) -> argparse.Namespace:
    """`parser.parse_intermixed_args(argv)`: options before, between or after positionals such as overrides.

    argparse's own refuses a parser with subcommands; for one, the subcommand's name comes first and
    the rest is parsed by the subcommand's parser, intermixed in turn.
    """
    # argparse lists a parser's subcommands only in private attributes; `_actions` is what
    # parse_intermixed_args itself inspects to refuse them.
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        return parser.parse_intermixed_args(argv, namespace)
    action = subcommands[0]
    choices: dict[str, argparse.ArgumentParser] = action.choices  # name → parser
    if not argv or argv[0] not in choices:
        return parser.parse_args(argv, namespace)  # --help, or argparse's error naming the choices
    namespace = namespace if namespace is not None else argparse.Namespace()
    setattr(namespace, action.dest, argv[0])
    return parse_intermixed(choices[argv[0]], argv[1:], namespace)


def would_submit(out: Console, check: Callable[[], object]) -> int:
    """A dry run's verdict: the checks a submission runs first, their report, and the exit code the submission would have."""
    try:
        check()
    except UserError as err:
        out.print("[yellow]submit would stop here:[/yellow]")
        err.render(out)
        return err.exit_code
    out.print("[green]preflight passed: a submission would go ahead[/green]")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"lit {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parse_intermixed(parser, rest)
    setup_logging()
    return guarded(lambda: int(module.run(args) or 0))


def guarded(call: Callable[[], int]) -> int:
    """Run a command; a UserError (any kind, lit.errors) is rendered without a traceback and gives its exit code.

    Both command lines (`lit`, `python -m launcher`) run every command through here: one error table.
    """
    try:
        return call()
    except UserError as err:
        err.render(console)
        return err.exit_code
