"""Diagnostics: every user error is a `Diagnostic` rendered like a compiler message.

    models/mlp.gdl:4:36: error: unknown operation `relux`
     4 |     return x |> dense(H) |> relux |> dense(C)
       |                             ^^^^^
       = hint: did you mean `relu`?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

from graphdl.reading import is_gdl_name


@dataclass(frozen=True)
class Span:
    """A region of a source file: 1-based line and column, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def short(self) -> str:
        return f"{self.line}:{self.col}"


@dataclass
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: list[str] = field(default_factory=list)
    severity: str = "error"


class GdlError(Exception):
    """Raised by the public API for user errors; holds every diagnostic of the run."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = diagnostics
        self.sources = sources or {}
        super().__init__(render_all(diagnostics, self.sources))


class UserError(Exception):
    """Raised inside the compiler for one diagnostic; collected into a GdlError."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 notes: Iterable[str] = ()):
        super().__init__(message)
        self.diagnostic = Diagnostic(message, span, hint, list(notes))


def user_error(message: str, span: Span | None = None, hint: str | None = None) -> GdlError:
    """One located diagnostic as a raisable GdlError (the runtime's checks of a plan)."""
    return GdlError([UserError(message, span, hint).diagnostic])


class CliError(Exception):
    """A user error outside any .gdl source (a bad flag value, an unreadable file):
    printed as `error: ...` with exit status 2."""


def source_lines(text: str) -> list[str]:
    """The lines of a source as the parser counts them: only `\n` ends a line."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A `did you mean ...?` hint from the closest candidate, or None.

    Close spellings first (`relux` -> `relu`), then abbreviations: a candidate spelled by
    the word's initials (`learning_rate` -> `lr`) or one that differs only in case.
    """
    names = sorted(set(candidates))
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close:
        parts = [p for p in word.lower().split("_") if p]
        initials = "".join(p[0] for p in parts) if len(parts) > 1 else None
        close = [n for n in names if n == initials or n.lower() == word.lower()][:1]
    return f"did you mean `{close[0]}`?" if close else None


def render(diag: Diagnostic, sources: dict[str, str]) -> str:
    """Format one diagnostic with the source line and a caret under its span.

    Only GDL source is ever quoted: a span in a file whose name does not end in `.gdl`
    (nor a built-in `<...>` source) is shown by its location alone, so a diagnostic can
    never print the lines of another kind of file (/etc/passwd, /proc/self/environ).
    """
    span = diag.span
    head = f"{span}: {diag.severity}: {diag.message}" if span else f"{diag.severity}: {diag.message}"
    lines = [head]
    text = sources.get(span.file) if span and is_gdl_name(span.file) else None
    if span and text is not None:
        src_lines = source_lines(text)
        if 1 <= span.line <= len(src_lines):
            src = src_lines[span.line - 1].replace("\t", " ")
            num = str(span.line)
            pad = " " * len(num)
            end = span.end_col if span.end_line == span.line else len(src) + 1
            width = max(1, end - span.col)
            lines.append(f"{pad} |")
            lines.append(f"{num} | {src}")
            lines.append(f"{pad} | {' ' * (span.col - 1)}{'^' * width}")
    pad = " " * (len(str(span.line)) if span else 0)
    for note in diag.notes:
        lines.append(f"{pad} = note: {note}")
    if diag.hint:
        lines.append(f"{pad} = hint: {diag.hint}")
    return "\n".join(lines)


def render_all(diagnostics: list[Diagnostic], sources: dict[str, str]) -> str:
    parts = [render(d, sources) for d in diagnostics]
    n = sum(d.severity == "error" for d in diagnostics)
    if n > 1:
        parts.append(f"{n} errors")
    return "\n".join(parts)
