"""Pooling by reshape: a `max_pool`/`avg_pool` whose windows tile the input becomes a
reshape and a `max_first`/`mean` over the window axes.

XLA:CPU computes the gradient of a window reduction (`reduce_window`) with
select-and-scatter, which is slow: in the deck's MNIST CNN it cost about a third of the
train step (issue 11: 98 -> 67 ms). When the window equals the stride, the windows do not
overlap, so the pool is a reshape `[B, H, W, C] -> [B, H/k, k, W/k, k, C]` and a reduction
over the two `k` axes, whose gradient is a broadcast and a select:

    ir g(%0)
      %0 = input(name="x") : f32[B, 4, 6, 3]
      %1 = max_pool(x=%0, window=2, stride=none, padding="valid", indices=false) : f32[B, 2, 3, 3]
      return %1
    ==>
    ir g(%0)
      %0 = input(name="x") : f32[B, 4, 6, 3]
      %2 = reshape(x=%0, shape=[B, 2, 2, 3, 2, 3]) : f32[B, 2, 2, 3, 2, 3]
      %3 = max_first(x=%2, axis=[2, 4], keepdims=false) : f32[B, 2, 3, 3]
      return %3

Where it applies: `stride` is the window (or left out), `indices = false`, the spatial
sizes are known numbers. A size the window does not divide keeps XLA's meaning: with
"valid" padding the last, partial window is dropped (an `index` slice first); with
"same" padding the partial window would be padded, so such a pool is left as it is.
The values and gradients are the same: `max_first` sends the gradient all to the first
maximum of a window, as select-and-scatter does (`max` would split it among ties, the
zeros after a `relu`; the split also costs a reduction: graphdl/ops/math.py: max_first).
"""

from __future__ import annotations

from graphdl.dims import Dim
from graphdl.ir.graph import IR, add_node, bodies, node, nodes, remove_node, replace_uses
from graphdl.ir.node import Node
from graphdl.ops import REGISTRY
from graphdl.ops.registry import as_ints

REDUCTION = {"max_pool": "max_first", "avg_pool": "mean"}


def run(g: IR) -> IR:
    for body in bodies(g):
        run(body)
    for nid, n in list(nodes(g)):
        if n.op in REDUCTION and tiles(n) is not None:
            rewrite(g, nid)
    return g


def tiles(n: Node) -> tuple[int, ...] | None:
    """The window of a pool whose windows tile its input (window = stride, no indices,
    known spatial sizes, no padded partial window), else None."""
    a = n.attrs
    if a.get("indices"):
        return None
    spatial = n.type.shape[1:-1] if n.type is not None else ()
    window = as_ints(a["window"], "window", len(spatial))
    stride = as_ints(a["stride"] if a["stride"] is not None else a["window"], "stride",
                     len(spatial))
    if window != stride:
        return None
    return window


def rewrite(g: IR, nid: int) -> int:
    """Replace the pool `nid` by [slice,] reshape and reduce; returns the reduction's id."""
    n = node(g, nid)
    x = n.inputs[n.args.index("x")]
    xt = node(g, x).type
    window = tiles(n)
    sizes = xt.shape[1:-1]
    if not all(d.is_int() for d in sizes):
        return nid
    outs = [int(d) // k for d, k in zip(sizes, window)]
    if any(o == 0 for o in outs):
        return nid
    if any(int(d) % k for d, k in zip(sizes, window)):
        if n.attrs["padding"] != "valid":
            return nid  # a padded partial window: reduce_window's meaning, kept
        subs = [("slice", None, None, None)] + [("slice", 0, o * k, 1)
                                                for o, k in zip(outs, window)]
        x = _add(g, n, "index", x, subs=subs)
    shape = [xt.shape[0]]
    for o, k in zip(outs, window):
        shape += [Dim(o), Dim(k)]
    shape.append(xt.shape[-1])
    x = _add(g, n, "reshape", x, shape=shape)
    axes = [2 + 2 * i for i in range(len(window))]
    y = _add(g, n, REDUCTION[n.op], x, axis=axes, keepdims=False)
    replace_uses(g, nid, y)
    remove_node(g, nid)
    return y


def _add(g: IR, at: Node, op: str, x: int, **attrs) -> int:
    type_ = REGISTRY[op].infer(node(g, x).type, **attrs)
    return add_node(g, op, [x], ["x"], attrs, type_, at.span, at.scope)
