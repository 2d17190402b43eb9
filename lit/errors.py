"""The errors a user can act on, below every other module of `lit` (it imports nothing of the project).

`UserError` is the base the command lines catch (exit 2, the message without a traceback);
each kind says what went wrong in its label. `lit.configlib.ConfigError` (a configuration value,
named by file and dotted key) is one; `VerificationError` (a result that failed its own check,
such as an ONNX export that disagrees with torch) is another.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to fix; the CLIs print `LABEL: message` and exit 2."""

    label = "error"


class VerificationError(UserError):
    """A product failed the check that guards its use: names what failed, by how much, and what to do."""

    label = "verification failed"

    def __init__(self, target: str, message: str) -> None:
        self.target = target
        super().__init__(f"{target}: {message}")


__all__ = ["UserError", "VerificationError"]
