"""`x[...]`: NumPy-style static indexing and slicing, and gathers with integer tensors."""

from __future__ import annotations

from graphdl.elaborate.values import Const, Poison, Tensor
from graphdl.parse import ast as A


def _static_int(b, node: A.Node | None, what: str):
    if node is None:
        return None
    v = b.expr(node)
    if isinstance(v, Const) and isinstance(v.value, int) and not isinstance(v.value, bool):
        return v.value
    if isinstance(v, Const) and hasattr(v.value, "is_int") and v.value.is_int():
        return int(v.value)
    if not isinstance(v, Poison):
        b.error(f"a slice {what} must be a constant integer", node.span)
    raise _Bad()


class _Bad(Exception):
    pass


def index_tensor(b, base: Tensor, node: A.Index):
    if len(node.subs) == 1 and not isinstance(node.subs[0], A.Slice):
        idx = b.expr(node.subs[0])
        if isinstance(idx, Tensor):  # a gather: v[i]
            return b.apply_op("take", [base, idx], {}, node.span, [node.value.span, node.subs[0].span])
    subs = []
    try:
        for sub in node.subs:
            if isinstance(sub, A.Slice):
                subs.append(("slice", _static_int(b, sub.start, "start"),
                             _static_int(b, sub.stop, "end"), _static_int(b, sub.step, "step")))
            elif isinstance(sub, A.Keyword):
                b.error("`name = value` is only allowed when indexing a graph's constants", sub.span)
                return Poison()
            else:
                v = b.expr(sub)
                if isinstance(v, Tensor):
                    b.error("a tensor index must be the only index: write take(x, i, axis)",
                            sub.span)
                    return Poison()
                subs.append(("int", _static_int(b, sub, "index")))
    except _Bad:
        return Poison()
    return b.apply_op("index", [base, Const(subs)], {}, node.span, [node.value.span, node.span])
