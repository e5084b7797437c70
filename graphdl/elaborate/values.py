"""What a name can stand for while a graph is being built."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphdl.dims import TensorType
from graphdl.errors import Span
from graphdl.parse import ast as A


@dataclass
class Tensor:
    node: int
    type: TensorType
    origin: str = ""  # "`skip`, bound at 12:5" — used in notes of shape errors


@dataclass
class Const:
    value: object  # int, float, bool, str, Dim, or a list of those


@dataclass
class ListV:
    items: list


@dataclass
class Record:
    fields: dict[str, object]


@dataclass
class TupleV:
    items: list


@dataclass
class OpRef:
    name: str


@dataclass
class GraphRef:
    gdef: A.GraphDef
    consts: dict[str, object] = field(default_factory=dict)
    instance: str | None = None  # a fixed parameter prefix: a `layer` or a trained instance


@dataclass
class Partial:
    """`layer embed = embedding(vocab = V, dim = E)`: a call waiting for its data."""

    callee: object
    args: list
    kwargs: dict
    instance: str
    span: Span


@dataclass
class DistV:
    family: str
    params: dict[str, Tensor]
    type: TensorType  # the type of one sample


@dataclass
class SourceRef:
    name: str
    source: object  # graphdl.runtime.data.Source
    span: Span


@dataclass
class SplitRef:
    source: SourceRef
    split: str


@dataclass
class Setting:
    """A compile-time value with a call shape: `adam(lr = 1e-3)`, `cosine(...)`."""

    kind: str
    name: str
    kwargs: dict
    span: Span


@dataclass
class Special:
    """A built-in form that is not a plain op: scan, distributions, optimizers, ...
    (its handler is `b.forms.calls[name]`)."""

    name: str


@dataclass
class Poison:
    """The value of an expression that already failed: suppresses follow-on errors."""


def describe(value) -> str:
    kinds = {Tensor: "a tensor", Const: "a constant", ListV: "a list", Record: "a record",
             TupleV: "a tuple", OpRef: "an operation", GraphRef: "a graph", Partial: "a layer",
             DistV: "a distribution", SourceRef: "a data source", SplitRef: "a data split",
             Setting: "a setting"}
    if isinstance(value, Tensor):
        return f"a tensor {value.type}"
    if isinstance(value, GraphRef) and value.gdef.kind == "cell":
        return "a cell"
    return kinds.get(type(value), "a value")
