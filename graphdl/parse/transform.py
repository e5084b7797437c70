"""Lark parse tree -> `graphdl.parse.ast`: one method per grammar alias."""

from __future__ import annotations

import math

from lark import Token, Transformer, v_args

from graphdl.errors import Span, UserError
from graphdl.parse import ast as A

MAX_INT_DIGITS = 1000
ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def unescape(token: Token, span: Span) -> str:
    r"""The value of a string literal: `\\ \" \n \t \r` are its escapes."""
    raw = str(token)[1:-1]
    out, i = [], 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            if nxt not in ESCAPES:
                col = span.col + 1 + i
                raise UserError(f"unknown escape `\\{nxt}` in a string",
                                Span(span.file, span.line, col, span.line, col + 2),
                                hint="the escapes are \\\\ \\\" \\n \\t \\r; write \\\\ for a backslash")
            out.append(ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _tokens(children, kind: str = "NAME") -> list[str]:
    return [str(c) for c in children if isinstance(c, Token) and c.type == kind]


def _nodes(children) -> list:
    return [c for c in children if isinstance(c, A.Node)]


@v_args(meta=True)
class ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def span(self, meta) -> Span:
        if getattr(meta, "empty", False):
            return Span(self.file, 1, 1, 1, 2)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # -- literals and names --------------------------------------------------
    def name(self, meta, c):
        return A.Name(self.span(meta), str(c[0]))

    def int_lit(self, meta, c):
        text = str(c[0])
        if len(text.lstrip("0")) > MAX_INT_DIGITS:
            raise UserError(f"this number is too large (more than {MAX_INT_DIGITS} digits)",
                            self.span(meta))
        return A.Num(self.span(meta), int(text))

    def float_lit(self, meta, c):
        value = float(c[0])
        if math.isinf(value):
            raise UserError("this number is too large for a float", self.span(meta))
        return A.Num(self.span(meta), value)

    def string_lit(self, meta, c):
        return A.Str(self.span(meta), unescape(c[0], self.span(meta)))

    def true_lit(self, meta, c):
        return A.Bool(self.span(meta), True)

    def false_lit(self, meta, c):
        return A.Bool(self.span(meta), False)

    def list_lit(self, meta, c):
        return A.ListLit(self.span(meta), _nodes(c))

    def field_init(self, meta, c):
        return (str(c[0]), c[1])

    def record_lit(self, meta, c):
        return A.RecordLit(self.span(meta), [x for x in c if isinstance(x, tuple)])

    # -- operators -----------------------------------------------------------
    def _bin(op):  # noqa: N805 - a method factory
        def method(self, meta, c):
            left, right = _nodes(c)
            return A.BinOp(self.span(meta), op, left, right)
        return method

    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")
    matmul, mod, pow = _bin("@"), _bin("%"), _bin("**")

    def compare(self, meta, c):
        return A.BinOp(self.span(meta), str(c[1]), c[0], c[2])

    def neg(self, meta, c):
        (operand,) = _nodes(c)
        if isinstance(operand, A.Num):  # fold `-1` so it is a static int where one is needed
            return A.Num(self.span(meta), -operand.value)
        return A.Neg(self.span(meta), operand)

    def kwarg(self, meta, c):
        return A.Keyword(self.span(meta), str(c[0]), c[1])

    def call_args(self, meta, c):
        return list(c)

    def call(self, meta, c):
        func = c[0]
        items = c[1] if len(c) > 1 and isinstance(c[1], list) else []
        args = [x for x in items if not isinstance(x, A.Keyword)]
        kwargs = [x for x in items if isinstance(x, A.Keyword)]
        seen_kw = False
        for x in items:
            if isinstance(x, A.Keyword):
                seen_kw = True
            elif seen_kw:
                raise UserError("a positional argument cannot follow a keyword argument", x.span,
                                hint="put positional arguments first")
        return A.Call(self.span(meta), func, args, kwargs)

    def slice(self, meta, c):
        parts: list = [None, None, None]
        i = 0
        for x in c:
            if isinstance(x, Token) and x.value == ":":
                i += 1
            elif isinstance(x, A.Node):
                parts[i] = x
        return A.Slice(self.span(meta), *parts)

    def index(self, meta, c):
        return A.Index(self.span(meta), c[0], list(c[1:]))

    def field(self, meta, c):
        return A.Field(self.span(meta), c[0], str(c[1]))

    def pipe(self, meta, c):
        left, right = c
        span = self.span(meta)
        if isinstance(right, A.Call):
            return A.Call(span, right.func, [left, *right.args], right.kwargs, piped=True,
                          stage=right.span)
        if isinstance(right, (A.Name, A.Field, A.Index)):
            return A.Call(span, right, [left], [], piped=True, stage=right.span)
        raise UserError("the right side of `|>` must be a name or a call", right.span,
                        hint="write `x |> f` or `x |> f(a, b)`")

    # -- types ---------------------------------------------------------------
    def type(self, meta, c):
        return A.TypeExpr(self.span(meta), str(c[0]), _nodes(c))

    def arg(self, meta, c):
        return A.Arg(self.span(meta), str(c[0]), c[1])

    def arg_list(self, meta, c):
        return list(c)

    def const_param(self, meta, c):
        return A.ConstParam(self.span(meta), str(c[0]), c[1] if len(c) > 1 else None)

    def const_params(self, meta, c):
        return list(c)

    def ret_single(self, meta, c):
        return ("ret", [c[0]])

    def ret_tuple(self, meta, c):
        return ("ret", list(c))

    # -- statements ----------------------------------------------------------
    def block(self, meta, c):
        return ("block", _nodes(c))

    def assign(self, meta, c):
        return A.Assign(self.span(meta), _tokens(c[:-1]), c[-1])

    def estimator(self, meta, c):
        args = c[1] if len(c) > 1 and isinstance(c[1], list) else []
        name = A.Name(Span(self.file, c[0].line, c[0].column, c[0].end_line, c[0].end_column),
                      str(c[0]))
        return A.Call(self.span(meta), name, [x for x in args if not isinstance(x, A.Keyword)],
                      [x for x in args if isinstance(x, A.Keyword)])

    def sample(self, meta, c):
        return A.Sample(self.span(meta), str(c[0]), c[1], c[2] if len(c) > 2 else None)

    def state(self, meta, c):
        return A.State(self.span(meta), str(c[0]), c[1], c[2])

    def param(self, meta, c):
        frozen = any(isinstance(x, Token) and x.type == "FROZEN" for x in c)
        shard = next((x for x in c[3:] if isinstance(x, tuple)), None)
        return A.Param(self.span(meta), str(c[0]), c[1], c[2], frozen,
                       *(shard if shard else (None, None)))

    def shard(self, meta, c):
        return ([str(x) for x in c], self.span(meta))

    def layer(self, meta, c):
        return A.Layer(self.span(meta), str(c[0]), c[1])

    def return_stmt(self, meta, c):
        return A.Return(self.span(meta), _nodes(c))

    def expr_stmt(self, meta, c):
        return A.ExprStmt(self.span(meta), c[0])

    def over(self, meta, c):
        return A.Over(self.span(meta), _tokens(c))

    def checkpoint(self, meta, c):
        return A.Checkpoint(self.span(meta), c[0], str(c[1]))

    def step(self, meta, c):
        return A.Step(self.span(meta), str(c[0]), c[1][1])

    def evaluate(self, meta, c):
        source = c[0]
        body = c[-1][1]
        if len(c) == 4:
            return A.Evaluate(self.span(meta), source, c[1], str(c[2]), body)
        return A.Evaluate(self.span(meta), source, None, None, body)

    # -- top level -----------------------------------------------------------
    def dotted(self, meta, c):
        return ".".join(str(x) for x in c)

    def use_module(self, meta, c):
        return A.Use(self.span(meta), c[0], None)

    def use_file(self, meta, c):
        tok = c[0]
        at = Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)
        return A.Use(self.span(meta), None, unescape(tok, at))

    def _graph(self, kind, meta, c):
        name = str(c[0])
        consts, args, returns, body = [], [], None, []
        for x in c[1:]:
            if isinstance(x, tuple) and x[0] == "ret":
                returns = x[1]
            elif isinstance(x, tuple) and x[0] == "block":
                body = x[1]
            elif isinstance(x, list) and x and isinstance(x[0], A.ConstParam):
                consts = x
            elif isinstance(x, list):
                args = x
        return A.GraphDef(self.span(meta), kind, name, consts, args, returns, body, self.file)

    def graph_def(self, meta, c):
        return self._graph("graph", meta, c)

    def cell_def(self, meta, c):
        return self._graph("cell", meta, c)

    def data_def(self, meta, c):
        return A.DataDef(self.span(meta), str(c[0]), c[1])

    def train_def(self, meta, c):
        name = str(c[0]) if isinstance(c[0], Token) else None
        return A.TrainDef(self.span(meta), name, c[-1][1])

    def start(self, meta, c):
        return list(_nodes(c))
