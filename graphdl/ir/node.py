"""The record of one IR node.

    %3 = dense(%0, w=%1, b=%2, units=10, bias=true) : f32[B, 10]  @ mlp.out  # 4:17
    ==>
    Node(op="dense", inputs=[0, 1, 2], args=["x", "w", "b"],
         attrs={"units": 10, "bias": True}, type=f32[B, 10], span=4:17, scope="mlp.out")

Each fact is stored once: the edges of the graph are derived from `inputs` by the
operations of `graphdl.ir.graph`, and `shape`/`dtype` are read from `type`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphdl.dims import Dim, TensorType
from graphdl.errors import Span

# Ops that are not registry ops: values from outside (input, param, stat, state), the
# loops that own a body IR (scan, generate), a result of a multi-result node (getitem),
# the stochastic nodes (sample, dist_*) and what the surrogate pass adds for them
# (passes/surrogate.py): a sample's cost, an enumerated sample's expectation, the surrogate.
STRUCTURAL_OPS = frozenset({
    "input", "param", "stat", "const", "state", "scan", "generate", "sample", "getitem",
    "dist_log_prob", "dist_entropy", "dist_mean", "dist_kl", "cost", "expect", "surrogate",
})


@dataclass
class Node:
    """One operation: `op` applied to the values of `inputs`, each passed as its `args` name.

    `attrs` are compile-time arguments (a scan's `body` IR among them). `type` is a
    TensorType, or a tuple of them for a multi-result node read through `getitem`.
    """

    op: str
    inputs: list[int] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    type: TensorType | tuple | None = None
    span: Span | None = None
    scope: str = ""  # the instance path it belongs to (`mlp.out`)

    @property
    def shape(self) -> tuple[Dim, ...] | None:
        """The shape of a single-result node; None for a tuple-typed one."""
        return self.type.shape if isinstance(self.type, TensorType) else None

    @property
    def dtype(self) -> str | None:
        return self.type.dtype if isinstance(self.type, TensorType) else None

    def operands(self) -> list[tuple[int, str]]:
        """(input id, argument name) pairs, in order."""
        return list(zip(self.inputs, self.args))
