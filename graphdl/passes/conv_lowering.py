"""Choose each convolution's lowering: `conv` becomes `conv_lowered` with a `lowering`.

XLA's convolution is not always XLA:CPU's fastest way to compute a convolution and its
gradient: for the deck's MNIST CNN, a matmul per kernel tap ("slices") was faster for
the first layer (1 input channel) and one matmul over im2col patches ("patches") for
the second, each by a third or more, and which wins depends on the sizes and the
machine (graphdl/ops/conv_forms.py has the candidates). So the choice is measured: the
first lowering of a shape times each candidate's forward and backward on this machine
and keeps the fastest in the autotuning cache (graphdl/passes/autotune.py). This pass
writes the kept pick, or "auto" when the shape was never measured here (or its sizes
are symbolic); the lowering measures an "auto" at the first trace:

    ir g(%0)
      %0 = input(name="x") : f32[B, 28, 28, 1]
      %1 = param(name="g.c.conv.w", ...) : f32[3, 3, 1, 32]
      %2 = param(name="g.c.conv.b", ...) : f32[32]
      %3 = conv(x=%0, w=%1, b=%2, filters=32, kernel=3, stride=1, padding="same", dilation=1, bias=true) : f32[B, 28, 28, 32]
      return %3
    ==>
    ir g(%0)
      %0 = input(name="x") : f32[B, 28, 28, 1]
      %1 = param(name="g.c.conv.w", ...) : f32[3, 3, 1, 32]
      %2 = param(name="g.c.conv.b", ...) : f32[32]
      %4 = conv_lowered(x=%0, w=%1, b=%2, filters=32, kernel=3, stride=1, padding="same", dilation=1, bias=true, lowering="slices") : f32[B, 28, 28, 32]
      return %4

The parameters stay the `conv`'s own (names, shapes, initialisers).
"""

from __future__ import annotations

from graphdl.ir.graph import IR, add_node, bodies, node, nodes, remove_node, replace_uses
from graphdl.ir.node import Node
from graphdl.ops import REGISTRY
from graphdl.passes import autotune


def run(g: IR) -> IR:
    for body in bodies(g):
        run(body)
    for nid, n in list(nodes(g)):
        if n.op == "conv":
            lowered = add_node(g, "conv_lowered", list(n.inputs), list(n.args),
                               {**n.attrs, "lowering": kept_pick(g, n)}, n.type, n.span,
                               n.scope)
            replace_uses(g, nid, lowered)
            remove_node(g, nid)
    return g


def tuning_key(g: IR, n: Node, sizes: tuple[int, ...] | None = None) -> str | None:
    """The autotuning key of the conv node `n` of `g` (its input's sizes but the batch:
    `sizes`, else read from the IR); None when a size is symbolic."""
    operands = {arg: src for src, arg in n.operands()}
    x = node(g, operands["x"])
    if sizes is None:
        if not all(d.is_int() for d in x.shape[1:]):
            return None
        sizes = tuple(int(d) for d in x.shape[1:])
    dtypes = (x.dtype, node(g, operands["w"]).dtype)
    return autotune.key("conv", sizes, dtypes, n.attrs, input_grad=x.op != "input",
                        candidates=REGISTRY["conv_lowered"].extra["lowerings"])


def kept_pick(g: IR, n: Node) -> str:
    k = tuning_key(g, n)
    return (autotune.lookup(k) if k is not None else None) or "auto"
