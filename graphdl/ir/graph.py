"""Node schema of the IR.

Each IR is a `networkx.DiGraph`; node ids are ints in creation order (a topological
order). Every node carries:

- `op`: a registry op name, or one of the structural ops `input`, `param`, `stat`,
  `const`, `state` (a cell's previous-step value), `scan`, `sample`, `getitem`;
- `inputs`: the ids of its operand nodes, in order, and `args`: each operand's argument
  name (an edge a -> b exists for each operand, with its position as `index`);
- `attrs`: compile-time arguments; `shape` (tuple of `Dim`) and `dtype`;
- `span`: the source span it came from, and `scope`: the instance path it belongs to.

Graph attributes: `name`, `inputs` (input node ids), `outputs` (result node ids).
A cell body is its own IR: its `state` nodes read the previous step, and a `delay = 1`
edge runs from each state's next value back to its `state` node, so every cycle of an
IR passes through a delayed edge.
"""

from __future__ import annotations

import networkx as nx

from graphdl.dims import TensorType
from graphdl.errors import Span

IR = nx.DiGraph


def new_ir(name: str) -> IR:
    g = nx.DiGraph(name=name, inputs=[], outputs=[])
    g.graph["next_id"] = 0
    return g


def add_node(g: IR, op: str, inputs: list[int], args: list[str], attrs: dict,
             type_: TensorType | tuple | None, span: Span | None, scope: str = "") -> int:
    nid = g.graph["next_id"]
    g.graph["next_id"] = nid + 1
    if isinstance(type_, TensorType):
        shape, dtype = type_.shape, type_.dtype
    else:  # a multi-result node (split, max_pool with indices): read through `getitem`
        shape, dtype = None, None
    g.add_node(nid, op=op, inputs=list(inputs), args=list(args), attrs=dict(attrs),
               shape=shape, dtype=dtype, type=type_, span=span, scope=scope)
    for i, src in enumerate(inputs):
        g.add_edge(src, nid, index=i)
    return nid


def node_type(g: IR, nid: int) -> TensorType:
    return g.nodes[nid]["type"]
