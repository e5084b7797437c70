"""Fuse sibling dense layers: `dense` nodes that read the same input become one matmul.

An LSTM cell writes its four gates as four `dense(xh, H)` on the same `xh`; a JAX user
writes one `xh @ W[D + H, 4H]` and splits it, which XLA runs faster than four matmuls of
a quarter of the width on an otherwise idle 2-core CPU (a train step of the
adding-problem LSTM: 85 against 91 ms, benchmarks/README.md). This pass writes the first
as the second: the `dense` nodes that read the same input node, with the same `bias`
flag, result dtype and weight dtypes, inside the body of a `scan` or `generate` (a cell's
step, run at every time step), become one `dense_split` on their weights concatenated, and
each one's value is read back from it through a `getitem` (a body's IR):

    ir g(%0)
      %0 = input(name="x") : f32[B, 3]
      %1 = param(name="g.f.dense.w", ...) : f32[3, 4]
      %2 = param(name="g.f.dense.b", ...) : f32[4]
      %3 = dense(x=%0, w=%1, b=%2, units=4, bias=true) : f32[B, 4]
      %4 = param(name="g.r.dense.w", ...) : f32[3, 2]
      %5 = param(name="g.r.dense.b", ...) : f32[2]
      %6 = dense(x=%0, w=%4, b=%5, units=2, bias=true) : f32[B, 2]
      %7 = sum(x=%6, axis=-1, keepdims=true) : f32[B, 1]
      %8 = mul(x=%3, y=%7) : f32[B, 4]
      return %8
    ==>
    ir g(%0)
      %0 = input(name="x") : f32[B, 3]
      %1 = param(name="g.f.dense.w", ...) : f32[3, 4]
      %2 = param(name="g.f.dense.b", ...) : f32[4]
      %4 = param(name="g.r.dense.w", ...) : f32[3, 2]
      %5 = param(name="g.r.dense.b", ...) : f32[2]
      %9 = concat(xs.0=%1, xs.1=%4, axis=-1) : f32[3, 6]
      %10 = concat(xs.0=%2, xs.1=%5, axis=-1) : f32[6]
      %11 = dense_split(x=%0, w=%9, b=%10, units=[4, 2], bias=true) : (f32[B, 4], f32[B, 2])
      %12 = getitem(x=%11, index=0) : f32[B, 4]
      %13 = getitem(x=%11, index=1) : f32[B, 2]
      %7 = sum(x=%13, axis=-1, keepdims=true) : f32[B, 1]
      %8 = mul(x=%12, y=%7) : f32[B, 4]
      return %8

The parameters stay as they were (names, shapes, initialisers): the concatenation is a
node of the IR, computed when the graph runs, so checkpoints, `graphdl show --params` and
the API's `variables` do not see the pass. It reaches into the bodies of `scan` and
`generate` nodes, where the recurrent cells are; there the concatenated weights depend on
parameters alone, and the lowering computes them once, before the loop
(`graphdl.lower.evaluate.loop_invariants`).
"""

from __future__ import annotations

from graphdl.ir.graph import IR, add_node, bodies, node, nodes, remove_node, replace_uses
from graphdl.ir.node import Node
from graphdl.ops import REGISTRY


def run(g: IR, in_loop: bool = False) -> IR:
    """Fuse the siblings inside loop bodies only: there the concatenated weights are
    computed once, before the loop, and the one matmul runs at every step. Outside a loop
    the weights would be concatenated (and their gradient split) at every train step for
    one matmul: a VAE's two dense(h, 8) heads took 1.07 ms a step fused against 0.94
    unfused (benchmarks/README.md), so top-level siblings stay as they are."""
    for body in bodies(g):
        run(body, in_loop=True)
    if in_loop:
        for group in sibling_groups(g):
            fuse(g, group)
    return g


def sibling_groups(g: IR) -> list[list[int]]:
    """The `dense` nodes that can share one matmul, in groups of two or more, each in
    execution order: same input node, same `bias` flag, same result and weight dtypes."""
    groups: dict[tuple, list[int]] = {}
    for nid, n in nodes(g):
        if n.op != "dense":
            continue
        operands = {arg: src for src, arg in n.operands()}
        weight_dtypes = tuple(node(g, operands[k]).dtype for k in ("w", "b") if k in operands)
        key = (operands["x"], n.attrs["bias"], n.dtype, weight_dtypes)
        groups.setdefault(key, []).append(nid)
    return [ids for ids in groups.values() if len(ids) > 1]


def fuse(g: IR, group: list[int]) -> int:
    """Replace the `dense` nodes of `group` by one `dense_split` on their weights
    concatenated, and a `getitem` each; returns the id of the `dense_split` node."""
    first = node(g, group[0])
    x = first.inputs[first.args.index("x")]
    inputs, args = [x], ["x"]
    for weight in ("w", "b") if first.attrs["bias"] else ("w",):
        parts = [{arg: src for src, arg in node(g, nid).operands()}[weight] for nid in group]
        inputs.append(_concat(g, parts, first))
        args.append(weight)
    units = [node(g, nid).attrs["units"] for nid in group]
    types = tuple(node(g, nid).type for nid in group)
    fused = add_node(g, "dense_split", inputs, args, {"units": units, "bias": first.attrs["bias"]},
                     types, first.span, first.scope)
    for i, nid in enumerate(group):
        n = node(g, nid)
        part = add_node(g, "getitem", [fused], ["x"], {"index": i}, n.type, n.span, n.scope)
        replace_uses(g, nid, part)
        remove_node(g, nid)
    return fused


def _concat(g: IR, parts: list[int], at: Node) -> int:
    """A `concat` node of the weights `parts` along their last (output) axis."""
    concat = REGISTRY["concat"]
    type_ = concat.infer(xs=[node(g, p).type for p in parts], axis=-1)
    return add_node(g, "concat", parts, [f"xs.{i}" for i in range(len(parts))], {"axis": -1},
                    type_, at.span, at.scope)
