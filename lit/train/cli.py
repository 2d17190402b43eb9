"""`lit train JOB.yaml [section.key=value ...]`: train in this process (or under torchrun/srun)."""

from __future__ import annotations

import argparse

from lit.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="job YAML (default: the embedded demo config)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")


def run(args: argparse.Namespace) -> int:
    from lit.train.run import run as train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    return train(load_config(config, overrides))
