"""Load the Lark grammar and turn source text into a `Module`, or a syntax error in words."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from graphdl.errors import Span, UserError
from graphdl.parse import ast as A
from graphdl.parse.layout import Layout, describe_opener, token_span
from graphdl.parse.transform import ToAst

# How each terminal is written, for "expected ..." messages (never a token name).
TERMINAL_WORDS = {
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a new line", "$END": "the end of the file", "COMPARE": "a comparison",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "DOT": "'.'",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'",
    "PERCENT": "'%'", "TILDE": "'~'", "MORETHAN": "'>'", "LESSTHAN": "'<'",
    "FROZEN": "`frozen`",
}


def grammar_text() -> str:
    """The grammar, from the installed package data or, in a checkout, `grammars/`."""
    packaged = resources.files("graphdl") / "grammars" / "graphdl.lark"
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parents[2] / "grammars" / "graphdl.lark").read_text()


@functools.lru_cache(maxsize=1)
def _parser() -> tuple[Lark, Layout]:
    layout = Layout()
    lark = Lark(grammar_text(), parser="lalr", lexer="basic", postlex=layout,
                propagate_positions=True,
                maybe_placeholders=False)
    return lark, layout


def parse_source(text: str, file: str = "<input>") -> A.Module:
    """Parse GDL source text. Raises `UserError` with the first syntax error."""
    lark, layout = _parser()
    layout.file = file
    if not text.endswith("\n"):
        text += "\n"
    try:
        tree = lark.parse(text)
    except UserError:
        raise
    except UnexpectedInput as err:
        raise _syntax_error(err, layout, lark, file, text) from None
    try:
        items = ToAst(file).transform(tree)
    except Exception as err:  # a UserError raised inside a transformer method is wrapped
        inner = getattr(err, "orig_exc", err)
        if isinstance(inner, UserError):
            raise inner from None
        raise
    return A.Module(Span(file, 1, 1, 1, 2), file, text, items)


def _words(expected: set[str], lark: Lark) -> list[str]:
    words = set()
    for name in expected:
        if name.startswith("_") and name[1:].isalpha() and name[1:].isupper():
            words.add(f"`{name[1:].lower()}`")
            continue
        if name in TERMINAL_WORDS:
            words.add(TERMINAL_WORDS[name])
            continue
        try:
            pattern = lark.get_terminal(name).pattern
        except KeyError:
            continue
        if pattern.type == "str":
            words.add(f"'{pattern.value}'" if not pattern.value.isalpha() else f"`{pattern.value}`")
        else:
            words.add(name.lower())
    return sorted(words)


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return words[0] if words else "something else"
    if len(words) > 6:
        return ", ".join(words[:6]) + ", or another token"
    return ", ".join(words[:-1]) + " or " + words[-1]


def _eof_error(layout: Layout, file: str, text: str) -> UserError:
    lines = text.rstrip("\n").splitlines() or [""]
    end = Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
    stack = layout.open_brackets(None)
    if stack:
        opener, what = stack[-1]
        close = {"(": ")", "[": "]", "{": "}"}[opener.value]
        return UserError(
            f"the file ended inside the {describe_opener(opener, what)} opened at "
            f"{opener.line}:{opener.column}; a '{close}' is missing", end)
    return UserError("the file ended in the middle of a statement", end)


def _syntax_error(err: UnexpectedInput, layout: Layout, lark: Lark, file: str, text: str) -> UserError:
    if isinstance(err, UnexpectedEOF) or (
            isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        return _eof_error(layout, file, text)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else "?"
        span = Span(file, err.line, err.column, err.line, err.column + 1)
        hint = "strings use double quotes" if ch == "'" else None
        if ch == ";":
            hint = "statements are separated by new lines, not semicolons"
        return UserError(f"unexpected character {ch!r}", span, hint=hint)
    assert isinstance(err, UnexpectedToken)
    tok: Token = err.token
    span = token_span(tok, file)
    found = "the end of the line" if tok.type == "_NL" else f"'{tok.value}'"
    if tok.type == "_NL":
        span = Span(file, tok.line, tok.column, tok.line, tok.column + 1)
    words = _words(set(err.expected), lark)
    closing = layout.open_brackets(tok)
    if closing and tok.type != "_NL":
        opener, what = closing[-1]
        close = {"(": ")", "[": "]", "{": "}"}[opener.value]
        if f"'{close}'" in words and opener.value != "{":
            return UserError(
                f"expected '{close}' to close the {describe_opener(opener, what)} opened at "
                f"{opener.line}:{opener.column}, found {found}", span,
                hint=_hint_for(tok, words))
    return UserError(f"expected {_join(words)}, found {found}", span, hint=_hint_for(tok, words))


def _hint_for(tok: Token, words: list[str]) -> str | None:
    if tok.value == "=" and "'='" not in words:
        return "`=` binds a name; to compare, write `==`"
    if tok.type == "_NL" and any(w in ("')'", "']'") for w in words):
        return "a bracket is still open here"
    if tok.type in ("INT", "FLOAT", "NAME") and "','" in words:
        return "is a ',' missing between two arguments?"
    return None
