"""A check's result and the report of many: what `lit doctor`, `lit models verify` and the launcher's preflight print.

It sits below both the doctor (lit.doctor) and the prepared-model checks (lit.models.verify),
so each builds `Check`s without importing the other's module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.markup import escape
from rich.table import Table

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, and what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(checks: Sequence[Check]) -> bool:
    """True when no check failed (warnings pass)."""
    return all(c.status != "fail" for c in checks)


_STYLE = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[bold red]FAIL[/bold red]"}


def report(checks: Sequence[Check]) -> Table:
    """The checks as a rich table (details and fixes are printed literally, never as markup)."""
    table = Table(title="lit doctor")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(escape(c.name), _STYLE[c.status], escape(c.detail), escape(c.fix))
    return table


__all__ = ["Check", "Status", "ok", "report"]
