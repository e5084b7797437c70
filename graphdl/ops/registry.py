"""The op registry: every built-in op is one `Op` entry.

An entry holds the op's name, its signature (parsed from a short text such as
`"x, units: int, bias: bool = true"`), its shape/dtype rule, its JAX lowering and, for
layers, the parameters and statistics it owns. The front end uses the signature and the
shape rule; `graphdl.lower` uses the lowering. Adding an op touches only its entry.
"""

from __future__ import annotations

import ast as pyast
from collections.abc import Callable
from dataclasses import dataclass, field

from graphdl.dims import Dim, TensorType, float_problem, int_problem

REQUIRED = object()

# Argument kinds: tensors are graph values; every other kind is a compile-time constant.
TENSOR_KINDS = ("tensor", "tensors")
CONST_KINDS = ("int", "float", "bool", "str", "ints", "dims", "any")


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str = "tensor"
    default: object = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Weight:
    """A parameter or statistic owned by a layer call: local name, shape, dtype, initializer."""

    shape: tuple
    init: tuple = ("glorot",)  # (initializer name, *arguments)
    dtype: str = "f32"


class ShapeError(Exception):
    """Raised by a shape rule; `arg` names the argument at fault, if one is."""

    def __init__(self, message: str, arg: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message, self.arg, self.hint = message, arg, hint


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[Arg, ...]
    infer: Callable[..., TensorType | tuple[TensorType, ...]]
    lower: Callable[..., object]
    weights: Callable[..., dict[str, Weight]] | None = None
    stats: Callable[..., dict[str, Weight]] | None = None
    random: bool = False  # draws random numbers (in train mode at least)
    doc: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def keywords(self) -> list[str]:
        return [a.name for a in self.args]


REGISTRY: dict[str, Op] = {}


def parse_signature(text: str) -> tuple[Arg, ...]:
    """`"x, units: int, bias: bool = true"` -> Args. Defaults are GDL literals."""
    args = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        default: object = REQUIRED
        if "=" in part:
            part, raw = (s.strip() for s in part.split("=", 1))
            raw = {"true": "True", "false": "False", "none": "None"}.get(raw, raw)
            default = pyast.literal_eval(raw)
        name, _, kind = (s.strip() for s in part.partition(":"))
        kind = kind or "tensor"
        assert kind in TENSOR_KINDS + CONST_KINDS, kind
        args.append(Arg(name, kind, default))
    return tuple(args)


def register(name: str, signature: str, infer, lower, **kwargs) -> Op:
    """Add one op to the registry (the only way ops come to exist)."""
    op = Op(name, parse_signature(signature), infer, lower, **kwargs)
    assert name not in REGISTRY, f"op {name} registered twice"
    REGISTRY[name] = op
    return op


# Size-like constants: a concrete value below 1 is an error before any shape rule runs.
POSITIVE_ARGS = {"units", "filters", "kernel", "stride", "dilation", "window", "factor",
                 "sections", "classes", "vocab", "dim", "size"}
KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false",
              "str": "a string", "ints": "an integer or a list of integers",
              "dims": "a list of dims like [B, -1]"}


def show(v) -> str:
    """A constant as GDL writes it, for messages: true, "same", [B, 3]."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(show(x) for x in v) + "]"
    return "none" if v is None else str(v)


def _is_int(v) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, Dim)


def check_constant(op: Op, arg: Arg, value) -> str | None:
    """Why a compile-time argument does not fit its kind, or None when it does."""
    if arg.kind in ("any", *TENSOR_KINDS):
        return None
    if value is None and arg.default is None:
        return None
    items = value if arg.kind in ("ints", "dims") and isinstance(value, list) else [value]
    if arg.kind == "dims" and not isinstance(value, list):
        items = [None]
    ok = {"int": _is_int, "ints": _is_int, "dims": _is_int,
          "float": lambda v: _is_int(v) or isinstance(v, float),
          "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str)}[arg.kind]
    if not items or not all(ok(v) for v in items):
        return f"`{arg.name}` of {op.name}() must be {KIND_WORDS[arg.kind]}, got {show(value)}"
    if arg.kind == "float" and any(isinstance(v, Dim) and not v.is_const() for v in items):
        return f"`{arg.name}` of {op.name}() must be a known number, got {value}"
    for v in items:
        if isinstance(v, Dim) and v.is_const() and not v.is_int():
            return f"`{arg.name}` of {op.name}() must be a whole number, got {v}"
        v = int(v) if isinstance(v, Dim) and v.is_int() else v
        # sizes, axes and counts are int32 in every backend; a float must be finite
        problem = (int_problem(v, f"`{arg.name}` of {op.name}()", int32=True)
                   if arg.kind in ("int", "ints", "dims") else
                   float_problem(v, f"`{arg.name}` of {op.name}()") if arg.kind == "float"
                   else None)
        if problem:
            return problem
    if arg.name in POSITIVE_ARGS and arg.kind in ("int", "ints"):
        for v in items:
            if Dim.of(v).is_const() and Dim.of(v).const() < 1:
                return f"`{arg.name}` of {op.name}() must be at least 1, got {v}"
    return None


# -- shape helpers shared by the rules ---------------------------------------
def norm_axis(axis: int, rank: int, arg: str = "axis") -> int:
    if isinstance(axis, Dim) and axis.is_int():
        axis = int(axis)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ShapeError(f"`{arg}` must be a known integer, got {axis}", arg)
    if not -rank <= axis < rank:
        raise ShapeError(f"axis {axis} is out of range for a tensor of rank {rank}", arg)
    return axis % rank


def broadcast(a: TensorType, b: TensorType, what: str = "combine") -> tuple[Dim, ...]:
    """NumPy broadcasting on symbolic shapes: equal dims or 1 in each axis."""
    out = []
    sa, sb = a.shape, b.shape
    n = max(len(sa), len(sb))
    sa = (Dim(1),) * (n - len(sa)) + sa
    sb = (Dim(1),) * (n - len(sb)) + sb
    for da, db in zip(sa, sb):
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(f"cannot {what} {a} and {b}",
                             hint="broadcasting needs equal sizes or 1 in each axis")
    return tuple(out)


def require_float(t: TensorType, op: str, arg: str = "x") -> None:
    if not t.is_float():
        raise ShapeError(f"{op} needs a floating-point tensor, got {t}", arg,
                         hint="convert with cast(x, \"f32\")")


def as_int(value, arg: str) -> int:
    if isinstance(value, Dim):
        if value.is_int():
            return int(value)
        raise ShapeError(f"`{arg}` must be a known integer here, got {value}", arg)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShapeError(f"`{arg}` must be an integer, got {value!r}", arg)
    return value


def as_size(value, arg: str) -> Dim:
    """A size that becomes a dim: an int, or a symbolic constant while checking generically."""
    if isinstance(value, Dim):
        return value
    return Dim(as_int(value, arg))


def as_ints(value, arg: str, n: int | None = None) -> tuple[int, ...]:
    vals = value if isinstance(value, (list, tuple)) else [value] * (n or 1)
    out = tuple(as_int(v, arg) for v in vals)
    if n is not None and len(out) != n:
        raise ShapeError(f"`{arg}` needs {n} values, got {len(out)}", arg)
    return out
