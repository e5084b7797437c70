"""Load the Lark grammar and turn source text into a `Module`, or a syntax error in words."""

from __future__ import annotations

import functools
import hashlib
import threading
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from graphdl.errors import Span, UserError
from graphdl.parse import ast as A
from graphdl.parse.layout import Layout, describe_opener, token_span
from graphdl.parse.transform import ToAst
from graphdl.reading import cache_root

# How each terminal is written, for "expected ..." messages (never a token name).
TERMINAL_WORDS = {
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a new line", "$END": "the end of the file", "COMPARE": "a comparison",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "DOT": "'.'",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'",
    "PERCENT": "'%'", "TILDE": "'~'", "MORETHAN": "'>'", "LESSTHAN": "'<'",
    "FROZEN": "`frozen`", "_SHARD": "`shard`",
}


# How deep a parse tree may nest; the passes after the parser recurse on it.
MAX_DEPTH = 100
STATEMENT_RULES = {"assign", "sample", "state", "param", "layer", "return_stmt", "expr_stmt",
                   "checkpoint", "evaluate", "step", "data_def", "graph_def", "cell_def"}


def grammar_text() -> str:
    """The grammar, from the installed package data or, in a checkout, `grammars/`."""
    packaged = resources.files("graphdl") / "grammars" / "graphdl.lark"
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parents[2] / "grammars" / "graphdl.lark").read_text()


def _tables_file(grammar: str) -> str | bool:
    """Where Lark keeps the grammar's LALR tables between processes (building them is
    0.3-0.4 s of every command's start): named by the grammar's and Lark's versions, so a
    changed grammar never reads old tables; False (build them) when the folder cannot
    be made."""
    folder = cache_root() / "lark"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    digest = hashlib.sha256(f"{lark.__version__}\n{grammar}".encode()).hexdigest()[:16]
    return str(folder / f"graphdl-{digest}.lark")


@functools.lru_cache(maxsize=1)
def _parser() -> tuple[Lark, Layout]:
    layout = Layout()
    grammar = grammar_text()
    parser = Lark(grammar, parser="lalr", lexer="basic", postlex=layout,
                  propagate_positions=True, maybe_placeholders=False,
                  cache=_tables_file(grammar))
    return parser, layout


def normalize_source(text: str) -> str:
    """Drop a byte-order mark and make every line end `\n` (also a lone `\r`)."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


# The parser and its post-lexer keep per-parse state (the tokens, for error messages):
# one parse at a time, so several threads may call parse_source.
_PARSE_LOCK = threading.Lock()


def parse_source(text: str, file: str = "<input>") -> A.Module:
    """Parse GDL source text. Raises `UserError` with the first syntax error.

    Safe to call from several threads (they take turns on the one parser)."""
    with _PARSE_LOCK:
        return _parse_locked(text, file)


def _parse_locked(text: str, file: str) -> A.Module:
    lark, layout = _parser()
    layout.file = file
    text = normalize_source(text)
    if not text.endswith("\n"):
        text += "\n"
    try:
        tree = lark.parse(text)
    except UserError:
        raise
    except UnexpectedInput as err:
        raise _syntax_error(err, layout, lark, file, text) from None
    _check_depth(tree, file)
    try:
        items = ToAst(file).transform(tree)
    except Exception as err:  # a UserError raised inside a transformer method is wrapped
        inner = getattr(err, "orig_exc", err)
        if isinstance(inner, UserError):
            raise inner from None
        raise
    return A.Module(Span(file, 1, 1, 1, 2), file, text, items)


def _check_depth(tree: Tree, file: str) -> None:
    """Refuse trees nested deeper than MAX_DEPTH (the later passes recurse on them)."""
    stack: list[tuple[Tree, int, Tree]] = [(tree, 1, tree)]
    while stack:
        node, depth, stmt = stack.pop()
        if node.data in STATEMENT_RULES:
            stmt = node
        if depth > MAX_DEPTH:
            meta = stmt.meta
            span = Span(file, meta.line, meta.column, meta.end_line, meta.end_column) \
                if not getattr(meta, "empty", True) else Span(file, 1, 1, 1, 2)
            raise UserError(f"this is nested too deeply (more than {MAX_DEPTH} levels)", span,
                            hint="split the expression into several named bindings")
        stack.extend((c, depth + 1, stmt) for c in node.children if isinstance(c, Tree))


EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "LBRACE", "MINUS", "TRUE", "FALSE"}
OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "AT", "PERCENT", "COMPARE", "__ANON_1", "__ANON_2"}
TOP_LEVEL = {"_USE", "_GRAPH", "_CELL", "_DATA", "_TRAIN"}
STATEMENT_START = {"_STATE", "_PARAM", "_LAYER", "_STEP", "_EVALUATE", "_OVER", "_CHECKPOINT",
                   "RETURN"}


def _word(name: str, lark: Lark) -> str | None:
    if name in TERMINAL_WORDS:
        return TERMINAL_WORDS[name]
    if name.startswith("_") and name[1:].isalpha() and name[1:].isupper():
        return f"`{name[1:].lower()}`"
    try:
        pattern = lark.get_terminal(name).pattern
    except KeyError:
        return None
    if pattern.type == "str":
        return f"'{pattern.value}'" if not pattern.value.isalpha() else f"`{pattern.value}`"
    return name.lower()


def _words(expected: set[str], lark: Lark) -> list[str]:
    """What the parser expected, in words: groups first, then single tokens."""
    expected = set(expected)
    groups = []
    if expected & TOP_LEVEL:
        groups.append("a definition (`graph`, `cell`, `data`, `train` or `use`)")
        expected -= TOP_LEVEL | {"_NL"}
    if expected & STATEMENT_START and "NAME" in expected:
        groups.append("a statement")
        expected -= STATEMENT_START | EXPR_START | {"_NL"}
    elif {"NAME", "INT"} <= expected:
        groups.append("an expression")
        expected -= EXPR_START
    if len(expected & OPERATORS) >= 4:
        groups.append("an operator")
        expected -= OPERATORS
    words = sorted({w for w in (_word(n, lark) for n in expected) if w})
    return groups + words


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return words[0] if words else "something else"
    if len(words) > 8:
        return ", ".join(words[:8]) + ", or another token"
    return ", ".join(words[:-1]) + " or " + words[-1]


def _eof_error(layout: Layout, file: str, text: str) -> UserError:
    lines = text.rstrip("\n").split("\n")
    end = Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
    stack = layout.open_brackets(None)
    if stack:
        opener, what = stack[-1]
        close = {"(": ")", "[": "]", "{": "}"}[opener.value]
        return UserError(
            f"the file ended inside the {describe_opener(opener, what)} opened at "
            f"{layout.where(opener)}; a '{close}' is missing", end)
    return UserError("the file ended in the middle of a statement", end)


def _syntax_error(err: UnexpectedInput, layout: Layout, lark: Lark, file: str, text: str) -> UserError:
    if isinstance(err, UnexpectedEOF) or (
            isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        return _eof_error(layout, file, text)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else "?"
        span = Span(file, err.line, err.column, err.line, err.column + 1)
        if ch == '"':
            return UserError("this string is not closed on its line", span,
                             hint='a string ends with " on the line where it starts')
        hint = "strings use double quotes" if ch == "'" else None
        if ch == ";":
            hint = "statements are separated by new lines, not semicolons"
        elif not ch.isascii():
            hint = "names are ASCII letters, digits and `_`; other text belongs in a string " \
                   "or a comment"
        return UserError(f"unexpected character {ch!r}", span, hint=hint)
    assert isinstance(err, UnexpectedToken)
    tok: Token = err.token
    span = token_span(tok, file)
    found = "the end of the line" if tok.type == "_NL" else f"'{tok.value}'"
    if tok.type == "_NL":
        span = Span(file, tok.line, tok.column, tok.line, tok.column + 1)
    closing = layout.open_brackets(tok)
    special = _special_case(tok, set(err.expected), span, closing, layout)
    if special is not None:
        return special
    expected = set(err.expected)
    if not any(o.value in "([" for o, _ in closing):
        expected -= {"RPAR", "RSQB"}  # an LALR state shared with bracketed forms
    words = _words(expected, lark)
    if closing and tok.type != "_NL":
        opener, what = closing[-1]
        close = {"(": ")", "[": "]", "{": "}"}[opener.value]
        if f"'{close}'" in words and opener.value != "{":
            message = (f"expected '{close}' to close the {describe_opener(opener, what)} "
                       f"opened at {layout.where(opener)}")
            prev = layout.previous(tok)
            if prev is not None and prev.end_line is not None and prev.end_line < tok.line:
                # the bracket was most likely left open at the end of the earlier line
                at = Span(file, prev.end_line, prev.end_column, prev.end_line,
                          prev.end_column + 1)
                return UserError(message, at, hint=f"the next line starts with `{tok.value}`; a "
                                 "new line inside brackets does not end the statement")
            return UserError(f"{message}, found {found}", span,
                             hint=_hint_for(tok, words, closing, _statement_before(layout, tok)))
    return UserError(f"expected {_join(words)}, found {found}", span,
                     hint=_hint_for(tok, words, closing, _statement_before(layout, tok)))


NOT_GDL = {
    "if": "GDL has no `if`: select with where(cond, a, b)",
    "for": "GDL has no loops: run a cell over a sequence with scan(xs, cell)",
    "while": "GDL has no loops: run a cell over a sequence with scan(xs, cell)",
    "def": "define a graph with `graph name(x: f32[B, D]) -> f32[B, H] { ... }`",
    "let": "bind a name with `name = value`", "var": "bind a name with `name = value`",
    "import": "import with `use std.nn` or `use \"file.gdl\"`",
}


def _statement_before(layout: Layout, tok: Token) -> list[Token]:
    """The tokens of tok's statement before it."""
    out = []
    prev = layout.previous(tok)
    while prev is not None and prev.type != "_NL" and prev.value not in ("{", "}"):
        out.append(prev)
        prev = layout.previous(prev)
    return out[::-1]


def _special_case(tok: Token, expected: set[str], span: Span, closing: list,
                  layout: Layout) -> UserError | None:
    """Mistakes common enough to deserve their own sentence."""
    before = _statement_before(layout, tok)
    if tok.type == "_NL" and "LBRACE" in expected and not any(o.value in "([" for o, _ in closing) \
            and not expected & (EXPR_START | OPERATORS) - {"LBRACE"}:
        return UserError("expected '{' to start the body, found the end of the line", span,
                         hint="the body's '{' goes on the same line as its header")
    if len(before) == 1 and before[0].type == "NAME" and before[0].value in NOT_GDL:
        return UserError(f"`{before[0].value}` is not a GDL statement",
                         token_span(before[0], span.file), hint=NOT_GDL[before[0].value])
    if not before and tok.type == "NAME" and tok.value in NOT_GDL and expected & TOP_LEVEL:
        return UserError(f"`{tok.value}` is not GDL", span, hint=NOT_GDL[tok.value])
    if tok.type in OPERATORS and tok.type not in expected and any(t.value == "|>" for t in before):
        return UserError(f"`|>` binds loosest, so `{tok.value}` cannot follow its right side",
                         span, hint=f"put the pipe in parentheses: `(x |> f) {tok.value} 1`")
    if tok.type == "COMPARE" and "COMPARE" not in expected and \
            any(t.type == "COMPARE" for t in before):
        return UserError(f"comparisons do not chain: `a {tok.value} b {tok.value} c` is not allowed",
                         span, hint="compare two values at a time, with parentheses: (a == b) == c")
    if tok.type in TOP_LEVEL and not expected & TOP_LEVEL:
        word = tok.type[1:].lower()
        if word == "use":
            return UserError("`use` belongs at the top level of the file, not inside a body", span)
        what = {"graph": "a graph", "cell": "a cell", "data": "a data source",
                "train": "a train block"}[word]
        return UserError(f"{what} cannot be defined inside another body", span,
                         hint=f"move the `{word}` definition to the top level of the file")
    if tok.type in STATEMENT_START and tok.type != "RETURN" and expected & TOP_LEVEL:
        word = tok.type[1:].lower()
        return UserError(f"`{word}` is a statement of a body, not a definition", span,
                         hint="the top level of a file holds `graph`, `cell`, `data`, `train` "
                              "and `use`")
    return None


def _hint_for(tok: Token, words: list[str], closing: list, before: list[Token]) -> str | None:
    if tok.value == "=" and "'->'" in words:
        return "the result type follows `->`"
    if tok.value == "=" and "'='" not in words:
        return "`=` binds a name; to compare, write `==`"
    if tok.value == ":" and "'='" in words:
        return "a name is bound with `=`"
    if tok.value == "<" and "'['" in words:
        return "a tensor type is written dtype[dims], e.g. f32[B, D]"
    if tok.type == "_NL" and any(o.value in "([" for o, _ in closing):
        return "a bracket is still open here"
    if tok.type in ("INT", "FLOAT", "NAME", "STRING") and "','" in words and \
            any(o.value in "([" for o, _ in closing):
        return "is a ',' missing between two arguments?"
    if tok.type in ("INT", "FLOAT", "NAME", "STRING") and "a new line" in words:
        return "two values in a row: is an operator missing, or a new line?"
    return None
