"""`x[...]`: NumPy-style static indexing and slicing, and gathers with integer tensors;
and `mlp[H = 256]`, a graph's constants given in brackets."""

from __future__ import annotations

from graphdl.elaborate.values import Const, GraphRef, Poison, Tensor, describe
from graphdl.errors import did_you_mean
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


def graph_constants(b, ref: GraphRef, node: A.Index) -> GraphRef | Poison:
    """`lstm[128]`, `mlp[H = 256]`: a graph with some of its constants given."""
    consts = dict(ref.consts)
    names = [c.name for c in ref.gdef.consts]
    given: set[str] = set()
    for i, sub in enumerate(node.subs):
        if isinstance(sub, A.Keyword):
            if sub.name not in names:
                return b.error(f"{ref.gdef.name} has no constant `{sub.name}`", sub.span,
                               did_you_mean(sub.name, names) or
                               f"its constants are {', '.join(names) or 'none'}")
            key, vnode = sub.name, sub.value
        else:
            if i >= len(names):
                return b.error(f"{ref.gdef.name} takes {len(names)} constant(s), got "
                               f"{len(node.subs)}", sub.span,
                               hint=f"its constants are {', '.join(names) or 'none'}")
            key, vnode = names[i], sub
        if key in given:
            return b.error(f"constant `{key}` of {ref.gdef.name} is given twice", sub.span)
        given.add(key)
        value = b.expr(vnode)
        if isinstance(value, Poison):
            return value
        if not isinstance(value, Const):
            return b.error(f"constant `{key}` of {ref.gdef.name} must be known at compile "
                           f"time, got {describe(value)}", vnode.span)
        consts[key] = value.value
    return GraphRef(ref.gdef, consts, ref.instance)
