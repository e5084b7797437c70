"""The verifier as a pass: the IR comes out as it went in, or an IRError says what is wrong.

    ir g(%0)
      %0 = input(name="x") : f32[B, 4]
      %1 = add(x=%0, y=%9) : f32[B, 4]
      return %1
    ==>
    IRError: ir g: %1 (add): input %9 is not a node

It runs first, on what elaboration built, and after every other pass (see pipeline.py),
so a pass that breaks the IR is named at once rather than by a JAX error later.
"""

from __future__ import annotations

from graphdl.ir.graph import IR
from graphdl.ir.verify import check_ir


def run(g: IR) -> IR:
    check_ir(g)
    return g
