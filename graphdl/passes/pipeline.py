"""The IR -> IR passes, in the order they run.

Elaboration hands over an IR with every name resolved and every type known; the passes
rewrite it before lowering. Each pass is one entry: a name (what `graphdl show FILE --ir
--after NAME` takes), the function (IR in, IR out; it may change the IR it is given,
`run_passes` hands it a copy) and one line of what it does. Each pass module's docstring
shows an IR before and after it. The verifier runs after every pass.

To add a pass: write `graphdl/passes/NAME.py` with `run(g: IR) -> IR` and an example IR
in its docstring, add its entry below in the place it belongs, and test it in
tests/test_passes.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from graphdl.ir.graph import IR, clone
from graphdl.ir.verify import check_ir
from graphdl.passes import fuse_dense, precision, surrogate, verify


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[IR], IR]
    summary: str


PIPELINE: tuple[Pass, ...] = (
    Pass("verify", verify.run, "check the IR elaboration built (arity, types, cycles)"),
    Pass("surrogate", surrogate.run,
         "score each score-function sample; a surrogate node beside each scalar loss"),
    Pass("fuse_dense", fuse_dense.run,
         "dense nodes that read the same input become one dense_split (one matmul)"),
    # last: it decides each node's compute dtype on the IR the rewrites left; it is a
    # policy the train block declares, not a rewrite, so it always runs
    Pass("precision", precision.run,
         "each node's compute dtype by the train block's precision (bf16: f32 where it matters)"),
)
PASS_NAMES = tuple(p.name for p in PIPELINE)


def run_passes(ir: IR, until: str | None = None) -> IR:
    """A copy of `ir` after every pass in order, or up to and including `until`."""
    if until is not None and until not in PASS_NAMES:
        raise ValueError(f"no pass named {until!r}; the passes are {', '.join(PASS_NAMES)}")
    g = clone(ir)
    for p in PIPELINE:
        g = p.run(g)
        check_ir(g)
        if p.name == until:
            break
    return g


def surrogate_of(ir: IR, loss: int) -> int:
    """The node a train step differentiates for the loss node `loss` (itself if no
    surrogate pass added one)."""
    return ir.graph.get("surrogates", {}).get(loss, loss)
