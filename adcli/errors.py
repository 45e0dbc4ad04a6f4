"""Errors a user can cause, and the exit codes they map to.

Every problem the tool reports is an ``AdError``: one sentence, an exit code,
and where the problem has a place in a file, that place (file, line, column,
the source line and a caret). The CLI turns these into text or JSON; the
library raises them. Messages stay one line: option values they quote go through
``shown`` and every message through ``one_line``.
"""
from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_INPUT = 1      # the expression file's contents or its input values
EXIT_USAGE = 2      # bad options, a file that does not exist
EXIT_INTERNAL = 3   # a bug in adcli
EXIT_ENVIRONMENT = 4   # the machine, not the user: a full disk, a permission, an I/O error
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143    # SIGTERM (128 + 15)
EXIT_BROKEN_PIPE = 141   # the reader of standard output went away (128 + SIGPIPE), as cat does

CARET_WINDOW = 100   # the most characters of a source line an error echoes (a window around the caret)


@dataclass
class SourceLocation:
    """A place in a source file (1-based line and column), with its line's text for a caret."""

    file: str
    line: int
    column: int
    source_line: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def caret(self) -> str:
        """The source line with a caret under the column; a line longer than CARET_WINDOW
        characters is shown as a window of that many around the column, its cut ends
        marked …, so that a 200 KB line is not echoed whole."""
        if not self.source_line:
            return ""
        text = self.source_line.rstrip("\n").expandtabs(1)
        column = max(self.column - 1, 0)
        if len(text) > CARET_WINDOW:
            start = max(0, min(column - CARET_WINDOW // 2, len(text) - CARET_WINDOW))
            end = start + CARET_WINDOW
            head = "…" if start > 0 else ""
            text = head + text[start:end] + ("…" if end < len(text) else "")
            column = column - start + len(head)
        return f"  {text}\n  {' ' * column}^"


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
        data: dict = {"kind": self.kind, "message": one_line(self.message),
                      "exit_code": self.exit_code}
        if self.location is not None:
            data["file"] = self.location.file
            data["line"] = self.location.line
            data["column"] = self.location.column
        if self.hint:
            data["hint"] = one_line(self.hint)
        return data

    def render(self) -> str:
        """Text for a terminal: 'file:line:col: error: message' and a caret."""
        head = f"{self.location}: " if self.location else ""
        lines = [f"{head}error: {one_line(self.message)}"]
        if self.location is not None and self.location.source_line:
            lines.append(self.location.caret())
        if self.hint:
            lines.append(f"hint: {one_line(self.hint)}")
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
    """A run refused before it starts. `over_time_limit`: for a refusal by the time limit,
    why, as a clause ("it is predicted to take about 12.5 h (…), over the time limit of 1
    h"), for callers that say it in their own sentence (compare's recommendation)."""
    kind = "resource"
    over_time_limit: str | None = None


class UsageProblem(AdError):
    kind = "usage"
    exit_code = EXIT_USAGE


class EnvironmentProblem(AdError):
    """The machine refused: a full disk, a permission, an I/O error (exit 4)."""
    kind = "environment"
    exit_code = EXIT_ENVIRONMENT


# -- option values in messages -----------------------------------------------------------------

def one_line(text: str) -> str:
    """A message kept on one line: control characters (a newline in an option value that a
    message echoes) are written as escapes, \\n, \\t, \\x1b."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: str, limit: int = 200, quote: bool = False) -> str:
    """An option value as a message quotes it: as typed when it is short and printable (quoted
    with `quote`), else repr-like (quoted, escaped: '3\\n4') and shortened in the middle:
    '999…999' (400 characters). The message stays one line and short."""
    value = str(value)
    if len(value) > limit:
        half = (limit - 1) // 2
        return repr(value[:half] + "…" + value[-half:]) + f" ({len(value):,} characters)"
    return repr(value) if quote or not value.isprintable() else value


def os_problem(exc: OSError, what: str) -> AdError:
    """An OSError as one sentence: a path that does not exist (or is a directory) is a usage
    mistake, exit 2; anything else (permissions, a full disk, I/O) is the environment's, exit 4."""
    import errno

    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG):
        return UsageProblem(f"{what} ({reason})")
    return EnvironmentProblem(f"{what} ({reason})")
