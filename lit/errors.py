"""The errors a user can act on, below every other module of `lit` (it imports only rich).

`UserError` is the base both command lines catch (`lit` and `python -m launcher`, through
`lit.cli.guarded`): they print `LABEL: message` (or the error's own report) without a traceback
and exit with `exit_code` (2). Its kinds say what went wrong:

| kind | label | what to fix |
|---|---|---|
| `lit.configlib.ConfigError` | config error | a configuration value, named by file and dotted key |
| `UsageError` | usage error | a command-line argument, named by its flag |
| `lit.data.inat.DatasetError` (a `DataError`) | data error | a dataset file, record or field |
| `lit.checkpoint.CheckpointError` | checkpoint error | a checkpoint this run cannot continue from |
| `VerificationError` | verification failed | a product that failed the check guarding its use (an ONNX export) |
| `launcher.preflight.PreflightFailed` | lit doctor failed | the runtime or the job's paths (prints the doctor's table; exit 1) |
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


class UserError(Exception):
    """An error whose message tells the user what to fix; the CLIs print it (`render`) and exit with `exit_code`."""

    label = "error"
    exit_code = 2

    def render(self, console: Console) -> None:
        """What a command line prints for it: `label: message`, the message whole (paths stay greppable)."""
        console.print(f"[red]{self.label}:[/red] {escape(str(self))}", soft_wrap=True)


class UsageError(UserError):
    """A command-line argument that cannot be used: names the flag, the value and the fix."""

    label = "usage error"

    def __init__(self, flag: str, message: str) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {message}")


class DataError(UserError):
    """Input data a user must fix (a dataset file, a record, a field)."""

    label = "data error"


class VerificationError(UserError):
    """A product failed the check that guards its use: names what failed, by how much, and what to do."""

    label = "verification failed"

    def __init__(self, target: str, message: str) -> None:
        self.target = target
        super().__init__(f"{target}: {message}")


__all__ = ["DataError", "UsageError", "UserError", "VerificationError"]
