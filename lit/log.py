"""The project's one logger, printed through rich."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler

logger = logging.getLogger("lit")
console = Console(stderr=True)


def setup_logging(level: int = logging.INFO, rank: int | None = None) -> logging.Logger:
    """Attach a rich handler once; ranks other than 0 log warnings and errors only."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level if rank == 0 else max(level, logging.WARNING))
    # open_clip logs through the root logger ("initialized partially" for every LiT model): keep errors only.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    return logger
