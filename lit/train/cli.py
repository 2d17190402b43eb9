"""`lit train JOB.yaml [section.key=value ...]`: train in this process (or under torchrun/srun)."""

from __future__ import annotations

import argparse

from lit.cliargs import add_job, job_and_overrides
from lit.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job(parser)


def run(args: argparse.Namespace) -> int:
    from lit.train.run import run as train

    return train(load_config(*job_and_overrides(args)))
