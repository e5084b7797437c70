"""Recompute a scan step's intermediates in the backward pass instead of storing them.

The gradient of a `scan` needs the values inside each step: by default JAX stores every
one of them, stacked over the steps, in the forward loop, and reads them back in the
backward loop. For an LSTM step (T = 100, hidden 128, batch 64) that is eleven
`[T, B, H]` arrays written and read per train step, and on XLA:CPU writing them into
their stacks costs more than computing them again: with each step wrapped in
`jax.checkpoint` (only the carried state and the step's input stored; the step computed
again, once, in the backward loop), the adding-problem LSTM's train step took about half
the time in interleaved rounds on a 2-core machine (benchmarks/rewrites.py). This pass
marks each `scan` node so; the lowering (`graphdl.lower.evaluate.lower_scan`) reads the
mark:

    ir g(%0)
      %0 = input(name="xs") : f32[B, T, 2]
      %1 = scan(xs=%0, axis=1, reverse=false, unroll=1, states=["h", "c"]) : (f32[B, T, 128], f32[B, 128], f32[B, 128])
        (the lstm cell's body)
    ==>
    ir g(%0)
      %0 = input(name="xs") : f32[B, T, 2]
      %1 = scan(xs=%0, axis=1, reverse=false, unroll=1, states=["h", "c"], remat=true) : (f32[B, T, 128], f32[B, 128], f32[B, 128])
        (the lstm cell's body)

The values and gradients are the same (the step is the same computation, run again);
only where the time and memory go changes. Random draws inside the step are recomputed
from the same keys, so they are the same draws.
"""

from __future__ import annotations

from graphdl.ir.graph import IR, nodes


def run(g: IR) -> IR:
    for _, n in nodes(g):
        if isinstance(n.attrs.get("body"), IR):
            run(n.attrs["body"])
        if n.op == "scan":
            n.attrs["remat"] = True
    if isinstance(g.graph.get("cell_body"), IR):
        run(g.graph["cell_body"])
    return g
