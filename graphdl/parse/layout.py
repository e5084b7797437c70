"""The post-lexer: which newlines end a statement, and which words are keywords.

A newline ends a statement except inside () and [], after a binary operator, `,`, `=`
or `~`, and before a line that starts with `|>`.

Most GDL keywords are soft: `data`, `step` or `state` are also good binding names
(`data = digits.train(...)`, `data.x`). A statement-start word is a keyword only when a
name, a string or `{` follows it (`data digits = ...`, `train {`); `by`, `on`, `every`,
`shard` and `frozen` are keywords only where their statement puts them.
"""

from __future__ import annotations

from collections.abc import Iterator

from lark import Token

from graphdl.errors import Span, UserError

# A newline right after one of these tokens continues the statement.
CONTINUES = {
    "+", "-", "*", "/", "@", "%", "**", "==", "!=", "<", "<=", ">", ">=",
    "|>", ",", "=", "~", "->", "(", "[", "{", ":",
}
OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
STATEMENT_KEYWORDS = {"use", "graph", "cell", "data", "train", "state", "param", "layer",
                      "step", "evaluate", "over", "checkpoint"}
TOP_KEYWORDS = {"use", "graph", "cell", "data", "train"}
# How deep brackets may nest: refused while lexing, before a parse tree is built.
MAX_BRACKET_DEPTH = 100
VALUE_TYPES = ("NAME", "INT", "FLOAT", "STRING")


def token_span(tok: Token, file: str) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line or tok.line,
                tok.end_column or tok.column + 1)


class Layout:
    """Lark post-lexer. After a parse error, `open_brackets(token)` says what was open."""

    always_accept = ("_NL",)

    def __init__(self, file: str = "<input>"):
        self.file = file
        self.tokens: list[Token] = []
        self.position: dict[int, int] = {}
        self.headers: dict[int, Token] = {}  # body `{` -> first token of its header

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        self.tokens, self.position, self.headers = [], {}, {}  # nothing stale on a lexer error
        self.tokens = self._classify(self._newlines(stream))
        self.position = {id(tok): i for i, tok in enumerate(self.tokens)}
        self.headers = {}
        stack: list[tuple[Token, str]] = []
        for tok in self.tokens:
            self._track(stack, tok)
            yield tok

    # -- newlines ------------------------------------------------------------
    def _newlines(self, stream: Iterator[Token]) -> list[Token]:
        out: list[Token] = []
        depth = 0
        pending: Token | None = None
        for tok in stream:
            if tok.type == "_NL":
                pending = pending or tok
                continue
            if pending is not None:
                last = out[-1] if out else None
                continues = last is None or (last.type != "STRING" and last.value in CONTINUES)
                if depth == 0 and not continues and tok.value != "|>":
                    out.append(pending)
                pending = None
            if tok.type != "STRING":
                if tok.value in "([":
                    depth += 1
                    if depth > MAX_BRACKET_DEPTH:
                        raise UserError(
                            f"brackets are nested too deeply (more than {MAX_BRACKET_DEPTH} "
                            "levels)", token_span(tok, self.file),
                            hint="split the expression into several named bindings")
                elif tok.value in ")]":
                    depth = max(0, depth - 1)
            out.append(tok)
        if pending is not None and depth == 0 and out:
            out.append(pending)
        return out

    # -- soft keywords -------------------------------------------------------
    def _classify(self, toks: list[Token]) -> list[Token]:
        head: str | None = None  # the keyword that began the current statement
        braces = 0  # `{` depth: at 0 only definitions can start, so their words are keywords
        for i, tok in enumerate(toks):
            prev = toks[i - 1] if i else None
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            at_start = prev is None or prev.type == "_NL" or prev.value == "{"
            if at_start:
                head = None
            if tok.type != "NAME":
                if tok.type != "STRING" and tok.value in ("{", "}"):
                    braces = max(0, braces + (1 if tok.value == "{" else -1))
                continue
            word = tok.value
            keyword = False
            if at_start and braces == 0 and word in TOP_KEYWORDS:
                keyword = True
                head = word
            elif at_start and word in STATEMENT_KEYWORDS:
                keyword = nxt is not None and (nxt.type in ("NAME", "STRING") or nxt.value == "{")
                if keyword:
                    head = word
            elif word == "by" and nxt is not None and nxt.type == "NAME" and not at_start:
                keyword = prev is not None and (prev.type in VALUE_TYPES or prev.value in ")]")
            elif word == "on" and prev is not None and prev.type == "_EVALUATE":
                keyword = True
            elif word == "every" and head in ("evaluate", "checkpoint"):
                keyword = nxt is not None and nxt.value not in ("=", ".", "(", "[", ")", ",")
            elif word == "shard" and head == "param":
                keyword = nxt is not None and nxt.value == "["
            elif word == "frozen" and head == "param":
                keyword = nxt is None or nxt.type == "_NL" or nxt.value == "}"
            if keyword:
                kind = "FROZEN" if word == "frozen" else "_" + word.upper()
                toks[i] = Token.new_borrow_pos(kind, word, tok)
        return toks

    # -- brackets ------------------------------------------------------------
    def _track(self, stack: list[tuple[Token, str]], tok: Token) -> None:
        if tok.type == "STRING":
            return
        if tok.value in OPENERS:
            stack.append((tok, self._describe(tok)))
        elif tok.value in CLOSERS:
            if not stack:
                raise UserError(f"unmatched '{tok.value}'", token_span(tok, self.file),
                                hint="there is no open bracket for it to close")
            opener, what = stack[-1]
            if OPENERS[opener.value] != tok.value:
                raise UserError(
                    f"expected '{OPENERS[opener.value]}' to close the "
                    f"{describe_opener(opener, what)} opened at {self.where(opener)}, "
                    f"found '{tok.value}'", token_span(tok, self.file))
            stack.pop()

    def _describe(self, opener: Token) -> str:
        i = self.position[id(opener)]  # by identity: equal tokens compare equal as strings
        prev = self.tokens[i - 1] if i else None
        if opener.value == "(":
            before = self.tokens[i - 2] if i >= 2 else None
            if prev is not None and prev.type == "NAME" and before is not None and \
                    before.type in ("_GRAPH", "_CELL"):
                return "args"
            called = prev is not None and (prev.type == "NAME" or prev.value in (")", "]"))
            return "call" if called else ""
        if opener.value == "{":
            j = i
            while j > 0 and self.tokens[j - 1].type != "_NL" and self.tokens[j - 1].value != "{":
                j -= 1
            first = self.tokens[j]
            if first.type == "NAME" or j == i:
                return ""  # a record literal
            self.headers[id(opener)] = first
            name = self.tokens[j + 1]
            if name.type == "NAME" and first.type != "_EVALUATE" and j + 1 < i:
                return f"{first.value} {name.value}"
            return first.value
        return ""

    def previous(self, tok: Token) -> Token | None:
        """The token before `tok`, newlines included."""
        i = self.position.get(id(tok))
        return self.tokens[i - 1] if i else None

    def where(self, opener: Token) -> str:
        """`line:col` of an opener; a body is opened where its header starts (`graph g`)."""
        at = self.headers.get(id(opener), opener)
        return f"{at.line}:{at.column}"

    def open_brackets(self, upto: Token | None) -> list[tuple[Token, str]]:
        """The brackets open just before `upto` (after all tokens when None)."""
        stack: list[tuple[Token, str]] = []
        for tok in self.tokens:
            if tok is upto:
                break
            try:
                self._track(stack, tok)
            except UserError:
                break
        return stack


def describe_opener(opener: Token, what: str) -> str:
    if opener.value == "{":
        return f"`{what}` body" if what else "record"
    if opener.value == "(":
        return {"call": "call", "args": "argument list"}.get(what, "parenthesis")
    return "bracket"
