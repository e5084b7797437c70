"""The syntax tree: plain dataclasses, each with the span it came from.

`a |> f(b)` is already `Call(f, [a, b])` here: both spellings are the same node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphdl.errors import Span


@dataclass
class Node:
    span: Span


# -- expressions -------------------------------------------------------------
@dataclass
class Name(Node):
    id: str


@dataclass
class Num(Node):
    value: int | float


@dataclass
class Str(Node):
    value: str


@dataclass
class Bool(Node):
    value: bool


@dataclass
class ListLit(Node):
    items: list[Node]


@dataclass
class RecordLit(Node):
    fields: list[tuple[str, Node]]


@dataclass
class Keyword(Node):
    name: str
    value: Node


@dataclass
class Call(Node):
    func: Node
    args: list[Node]
    kwargs: list[Keyword]
    piped: bool = False  # written as `a |> f(...)`
    stage: Span | None = None  # for a piped call, the `f(...)` part: where its errors point


@dataclass
class Slice(Node):
    start: Node | None
    stop: Node | None
    step: Node | None


@dataclass
class Index(Node):
    value: Node
    subs: list[Node]


@dataclass
class Field(Node):
    value: Node
    name: str


@dataclass
class BinOp(Node):
    op: str
    left: Node
    right: Node


@dataclass
class Neg(Node):
    operand: Node


# -- types -------------------------------------------------------------------
@dataclass
class TypeExpr(Node):
    dtype: str
    dims: list[Node]


# -- statements --------------------------------------------------------------
@dataclass
class Assign(Node):
    targets: list[str]
    value: Node


@dataclass
class Sample(Node):
    target: str
    dist: Node
    estimator: Call | None


@dataclass
class State(Node):
    name: str
    type: TypeExpr
    init: Node


@dataclass
class Param(Node):
    name: str
    type: TypeExpr
    init: Node
    frozen: bool
    # `shard [_, model]`: per axis of the type, the mesh axis it is split over ("_": none)
    shard: list[str] | None = None
    shard_span: Span | None = None


@dataclass
class Layer(Node):
    name: str
    value: Node


@dataclass
class Return(Node):
    values: list[Node]


@dataclass
class ExprStmt(Node):
    value: Node


@dataclass
class Over(Node):
    names: list[str]


@dataclass
class Checkpoint(Node):
    every: Node
    unit: str


@dataclass
class Step(Node):
    name: str
    body: list[Node]


@dataclass
class Evaluate(Node):
    source: Node
    every: Node | None
    unit: str | None
    body: list[Node]


# -- top level ---------------------------------------------------------------
@dataclass
class Use(Node):
    module: str | None  # `use std.nn`
    path: str | None  # `use "other.gdl"`


@dataclass
class Arg(Node):
    name: str
    type: TypeExpr


@dataclass
class ConstParam(Node):
    name: str
    default: Node | None


@dataclass
class GraphDef(Node):
    kind: str  # "graph" or "cell"
    name: str
    consts: list[ConstParam]
    args: list[Arg]
    returns: list[TypeExpr] | None
    body: list[Node]
    file: str = ""


@dataclass
class DataDef(Node):
    name: str
    value: Node


@dataclass
class TrainDef(Node):
    name: str | None
    body: list[Node]


@dataclass
class Module(Node):
    file: str
    source: str
    items: list[Node] = field(default_factory=list)
