"""The IR -> IR passes, in the order they run.

Elaboration hands over an IR with every name resolved and every type known; the passes
rewrite it before lowering. Each pass is one entry: a name (what `graphdl show FILE --ir
--after NAME` takes), the function (IR in, IR out; it may change the IR it is given,
`run_passes` hands it a copy) and one line of what it does. Each pass module's docstring
shows an IR before and after it. The verifier runs after every pass.

Some passes are rewrites: they change how a value is computed (one matmul for sibling
`dense` layers, pooling by reshape, a convolution's lowering, a scan step recomputed in
the backward pass), never what it is. One
switch turns them all off, to compare or to rule them out: `graphdl --no-rewrites`,
`GRAPHDL_REWRITES=off`, `graphdl.load(path, rewrites=False)` (which marks its IRs
`rewrites=False`), or `run_passes(ir, rewrites=False)`.

To add a pass: write `graphdl/passes/NAME.py` with `run(g: IR) -> IR` and an example IR
in its docstring, add its entry below in the place it belongs, and test it in
tests/test_passes.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from graphdl.ir.graph import IR, clone
from graphdl.ir.verify import check_ir
from graphdl.passes import (
    conv_lowering,
    fuse_dense,
    pool_reshape,
    precision,
    scan_remat,
    surrogate,
    verify,
)
from graphdl.reading import switched_off

#: "off" skips every rewrite pass (`graphdl --no-rewrites`).
REWRITES_SWITCH = "GRAPHDL_REWRITES"


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[IR], IR]
    summary: str
    rewrite: bool = False  # a rewrite: skipped when rewrites are off


PIPELINE: tuple[Pass, ...] = (
    Pass("verify", verify.run, "check the IR elaboration built (arity, types, cycles)"),
    Pass("surrogate", surrogate.run,
         "score each score-function sample; a surrogate node beside each scalar loss"),
    Pass("fuse_dense", fuse_dense.run,
         "dense nodes that read the same input become one dense_split (one matmul)", rewrite=True),
    Pass("pool_reshape", pool_reshape.run,
         "pooling whose windows tile the input -> reshape + max/mean", rewrite=True),
    Pass("conv_lowering", conv_lowering.run,
         "each conv -> conv_lowered with its lowering: the autotuner's pick, or auto",
         rewrite=True),
    Pass("scan_remat", scan_remat.run,
         "each scan recomputes its step's values in the backward pass (jax.checkpoint)",
         rewrite=True),
    # last: it decides each node's compute dtype on the IR the rewrites left; it is a
    # policy the train block declares, not a rewrite, so it always runs
    Pass("precision", precision.run,
         "each node's compute dtype by the train block's precision (bf16: f32 where it matters)"),
)
PASS_NAMES = tuple(p.name for p in PIPELINE)


def rewrites_on(ir: IR | None = None) -> bool:
    """Whether the rewrite passes run: not when $GRAPHDL_REWRITES is "off" (read at each
    call) or the IR is marked `rewrites=False` (`graphdl.load(path, rewrites=False)`)."""
    if switched_off(REWRITES_SWITCH):
        return False
    return ir is None or ir.graph.get("rewrites", True) is not False


def run_passes(ir: IR, until: str | None = None, *, rewrites: bool | None = None) -> IR:
    """A copy of `ir` after every pass in order, or up to and including `until`; the
    rewrite passes are skipped when `rewrites` is False (None: `rewrites_on(ir)`)."""
    if until is not None and until not in PASS_NAMES:
        raise ValueError(f"no pass named {until!r}; the passes are {', '.join(PASS_NAMES)}")
    if rewrites is None:
        rewrites = rewrites_on(ir)
    g = clone(ir)
    for p in PIPELINE:
        if rewrites or not p.rewrite:
            g = p.run(g)
            check_ir(g)
        if p.name == until:
            break
    return g


def surrogate_of(ir: IR, loss: int) -> int:
    """The node a train step differentiates for the loss node `loss` (itself if no
    surrogate pass added one)."""
    return ir.graph.get("surrogates", {}).get(loss, loss)
