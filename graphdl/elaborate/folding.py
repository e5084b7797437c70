"""Compile-time constants: folding `2 * 8` or `D + H`, and showing values in messages.

    y = 2 ** 10 * H      ==>   Const(1024 * H), no node
    y = x * 2            ==>   (not constant: an op node, see build.Builder.apply_op)

Integers are kept exact (a Python int, or a `Dim` polynomial while a dim is symbolic);
a constant that would grow past MAX_INT_BITS is an error before it is computed.
"""

from __future__ import annotations

from graphdl.dims import Dim, DimTooLarge
from graphdl.elaborate.values import Const, describe
from graphdl.parse import ast as A


def is_number(v) -> bool:
    """An int, float or dim; true and false are not numbers here."""
    return isinstance(v, (int, float, Dim)) and not isinstance(v, bool)


def gdl_literal(v) -> str:
    """A constant as GDL writes it: true, "text", [1, 2], 2 * H."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(gdl_literal(x) for x in v) + "]"
    return str(v)


def describe_value(value) -> str:
    """Like `describe`, but a constant shows its value: the string "a", the list [1, 2]."""
    if isinstance(value, Const):
        v = value.value
        kind = ("" if isinstance(v, bool) else "the string " if isinstance(v, str) else
                "the list " if isinstance(v, (list, tuple)) else "the dim " if isinstance(v, Dim)
                and not v.is_int() else "the number " if is_number(v) else "the value ")
        return kind + gdl_literal(v)
    return describe(value)


MAX_INT_BITS = 4096  # constants beyond this are refused before they are computed


def too_large(op: str, a, b) -> bool:
    """Whether `a op b` on Python numbers would build a huge integer (or take long to)."""
    if not all(isinstance(v, (int, float)) for v in (a, b)):
        return False
    if op == "**":
        if abs(a) <= 1 or b <= 0:
            return False
        if isinstance(a, float) or isinstance(b, float):
            return b > 1e6  # floats overflow quickly; this only bounds the work
        return a.bit_length() * b > MAX_INT_BITS
    if op == "*" and isinstance(a, int) and isinstance(b, int):
        return a.bit_length() + b.bit_length() > MAX_INT_BITS
    return False


def plain(value):
    """A dim known to be an integer becomes that int (also inside lists)."""
    if isinstance(value, Dim) and value.is_int():
        return int(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value



def fold(builder, node: A.BinOp, a, b):
    import operator as o
    ops = {"+": o.add, "-": o.sub, "*": o.mul, "/": o.truediv, "**": o.pow, "%": o.mod,
           "==": o.eq, "!=": o.ne, "<": o.lt, "<=": o.le, ">": o.gt, ">=": o.ge}
    if node.op in ("==", "!=") and type(a) is type(b) and isinstance(a, (bool, str)):
        return Const((a == b) == (node.op == "=="))
    if node.op not in ops or not all(is_number(v) for v in (a, b)):
        return builder.error(f"cannot apply `{node.op}` to {describe_value(Const(a))} and "
                          f"{describe_value(Const(b))}", node.span,
                          hint="operators work on tensors and numbers")
    if too_large(node.op, a, b):
        return builder.error(f"cannot compute {builder.text(node.span)}: the result is too large",
                          node.span)
    a, b = (int(v) if isinstance(v, Dim) and v.is_int() else v for v in (a, b))
    if isinstance(a, Dim) or isinstance(b, Dim):
        try:
            return fold_dims(builder, node, a, b)
        except DimTooLarge as err:
            return builder.error(f"cannot compute {builder.text(node.span)}: {err.message}",
                                 node.span)
    try:
        if node.op == "/" and isinstance(a, int) and isinstance(b, int) and \
                not isinstance(a, bool) and b != 0 and a % b == 0:
            return Const(a // b)  # keeps `T / 2` an integer where it divides
        return Const(ops[node.op](a, b))
    except OverflowError:
        return builder.error(f"cannot compute {builder.text(node.span)}: the result is too large",
                          node.span)
    except (ZeroDivisionError, ValueError, TypeError) as err:
        return builder.error(f"cannot compute {builder.text(node.span)}: {err}", node.span)

def fold_dims(builder, node: A.BinOp, a, b):
    """Arithmetic on symbolic dims: + - * with integers and dims, `/` by a number."""
    ints = (int, Dim)
    both = isinstance(a, ints) and isinstance(b, ints) and not isinstance(a, bool) \
        and not isinstance(b, bool)
    if both and node.op in "+-*":
        return Const({"+": Dim.__add__, "-": Dim.__sub__, "*": Dim.__mul__}[node.op](
            Dim.of(a), Dim.of(b)))
    if both and node.op == "/" and isinstance(b, int) and b != 0:
        return Const(Dim.of(a) / b)
    if both and node.op == "**" and isinstance(b, int) and 0 <= b <= 8:
        out = Dim(1)
        for _ in range(b):
            out = out * a
        return Const(out)
    sym = next(v for v in (a, b) if isinstance(v, Dim))
    return builder.error(f"cannot compute {builder.text(node.span)} for a symbolic dim {sym}",
                      node.span, hint="on dims, only + - * ** and division by a number "
                      "are known before the dims are bound")

