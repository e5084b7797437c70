"""Recompute a scan step's intermediates in the backward pass instead of storing them.

The gradient of a `scan` needs the values inside each step: by default JAX stores every
one of them, stacked over the steps, in the forward loop, and reads them back in the
backward loop. For an LSTM step (T = 100, hidden 128, batch 64) that is eleven
`[T, B, H]` arrays written and read per train step, and on XLA:CPU writing them into
their stacks costs more than computing them again: with each step wrapped in
`jax.checkpoint` (only the carried state and the step's input stored; the step computed
again, once, in the backward loop), the adding-problem LSTM's train step took about half
the time in interleaved rounds on a 2-core machine (median ratio 0.60 over 11 rounds).
For a plain RNN step (`tanh(dense(concat([x, h])))`: one matmul, one tanh) it is the
other way round (1.19: recomputing the matmul costs more than storing one array). So the
pass marks a `scan` whose step computes at least `MIN_ELEMENTWISE_PER_MATMUL` element-wise
values per matmul (an LSTM step: 10 per its one fused matmul; an RNN step: 1; a GRU step:
4, not marked, not measured either). A marked scan left at the default `unroll = 1` is
also unrolled `UNROLL` steps per loop iteration: XLA then fuses across the steps and runs
a quarter of the loop's iterations, which took the same LSTM's step from 62 to 50 ms
(median of 7 interleaved rounds; 2 gave 52, and for the RNN, not marked, 4 gained under
6% and 8 lost). The lowering (`graphdl.lower.evaluate.lower_scan`) reads both:

    ir g(%0)
      %0 = input(name="xs") : f32[B, T, 2]
      %1 = scan(xs=%0, axis=1, reverse=false, unroll=1, states=["h", "c"]) : (f32[B, T, 128], f32[B, 128], f32[B, 128])
        (the lstm cell's body)
    ==>
    ir g(%0)
      %0 = input(name="xs") : f32[B, T, 2]
      %1 = scan(xs=%0, axis=1, reverse=false, unroll=4, states=["h", "c"], remat=true) : (f32[B, T, 128], f32[B, 128], f32[B, 128])
        (the lstm cell's body)

The values and gradients are the same (the step is the same computation, run again, and
unrolled); only where the time and memory go changes. A scan written with `unroll = N`,
N > 1, keeps it. Random draws inside the step are recomputed
from the same keys, so they are the same draws.
"""

from __future__ import annotations

from graphdl.ir.graph import IR, bodies, nodes
from graphdl.ops import REGISTRY

MIN_ELEMENTWISE_PER_MATMUL = 5
UNROLL = 4
MATMULS = frozenset({"dense", "dense_split", "matmul", "conv", "conv_lowered",
                     "conv_transpose"})
# ops that move or select values without computing new ones
LAYOUT = frozenset({"concat", "split", "stack", "reshape", "index", "transpose",
                    "expand_dims", "squeeze", "flatten", "const", "take"})


def run(g: IR) -> IR:
    for body in bodies(g):
        run(body)
    for _, n in nodes(g):
        if n.op == "scan" and worth_recomputing(n.attrs["body"]):
            n.attrs["remat"] = True
            if n.attrs["unroll"] == 1:
                n.attrs["unroll"] = UNROLL
    return g


def worth_recomputing(body: IR) -> bool:
    """Whether a step stores many element-wise values per matmul it would compute again."""
    matmuls = sum(n.op in MATMULS for _, n in nodes(body))
    elementwise = sum(n.op in REGISTRY and n.op not in MATMULS and n.op not in LAYOUT
                      for _, n in nodes(body))
    return elementwise >= MIN_ELEMENTWISE_PER_MATMUL * max(matmuls, 1)
