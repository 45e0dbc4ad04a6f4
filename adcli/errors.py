"""Errors a user can cause, and the exit codes they map to.

Every problem the tool reports is an ``AdError``: one sentence, an exit code,
and where the problem has a place in a file, that place (file, line, column,
the source line and a caret). The CLI turns these into text or JSON; the
library raises them.
"""
from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_INPUT = 1      # the expression file's contents or its input values
EXIT_USAGE = 2      # bad options, a missing file
EXIT_INTERNAL = 3   # a bug in adcli


@dataclass
class SourceLocation:
    file: str
    line: int
    column: int
    source_line: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def caret(self) -> str:
        """The source line with a caret under the column."""
        if not self.source_line:
            return ""
        text = self.source_line.rstrip("\n").expandtabs(1)
        return f"  {text}\n  {' ' * max(self.column - 1, 0)}^"


class AdError(Exception):
    """A problem with the user's file, values or options."""

    kind = "input"
    exit_code = EXIT_INPUT

    def __init__(self, message: str, location: SourceLocation | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def to_json(self) -> dict:
        data: dict = {"kind": self.kind, "message": self.message,
                      "exit_code": self.exit_code}
        if self.location is not None:
            data["file"] = self.location.file
            data["line"] = self.location.line
            data["column"] = self.location.column
        if self.hint:
            data["hint"] = self.hint
        return data

    def render(self) -> str:
        """Text for a terminal: 'file:line:col: error: message' and a caret."""
        head = f"{self.location}: " if self.location else ""
        lines = [f"{head}error: {self.message}"]
        if self.location is not None and self.location.source_line:
            lines.append(self.location.caret())
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class SyntaxProblem(AdError):
    kind = "syntax"


class ShapeProblem(AdError):
    kind = "shape"


class NameProblem(AdError):
    kind = "name"


class ValueProblem(AdError):
    kind = "value"


class ResourceProblem(AdError):
    kind = "resource"


class UsageProblem(AdError):
    kind = "usage"
    exit_code = EXIT_USAGE
