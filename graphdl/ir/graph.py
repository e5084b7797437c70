"""The IR graph and the operations that build and rewrite it.

Each IR is a `networkx.DiGraph`. A node's id is an int, fresh per graph; its record
(`graphdl.ir.node.Node`: op, inputs, args, attrs, type, span, scope) is the node
attribute `"node"`, read with `node(g, nid)`. An edge a -> b exists exactly when b reads
a: the operations here derive the edges from `inputs`, so nothing else adds data edges.

Graph attributes: `name`, `inputs` (input node ids), `outputs` (result node ids). A cell
body is its own IR (the `body` attribute of a scan node): its `state` nodes read the
previous step, and a `delay = 1` edge runs from each state's next value back to its
`state` node (`states`: name -> (state id, next-value id)), so every cycle of an IR
passes through a delayed edge:

    ir acc(%0)
      %0 = input(name="x") : f32[B, D]
      %1 = state(name="s", init=["zeros"]) : f32[B, D]
      %2 = add(%1, %0) : f32[B, D]
      %2 -> %1 (delay 1)
      return %2

The execution order is `order(g)`, computed from the edges without the delayed ones; it
is the creation order until a pass inserts a node.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import networkx as nx

from graphdl.dims import TensorType
from graphdl.errors import Span
from graphdl.ir.node import Node

IR = nx.DiGraph


class IRError(Exception):
    """A malformed IR or a rewrite that would make one: a compiler bug, not a user error."""


def new_ir(name: str) -> IR:
    g = nx.DiGraph(name=name, inputs=[], outputs=[])
    g.graph["next_id"] = 0
    return g


def add_node(g: IR, op: str, inputs: list[int], args: list[str], attrs: dict,
             type_: TensorType | tuple | None, span: Span | None, scope: str = "") -> int:
    """Add `op(inputs...)` with a fresh id (and an edge from each input); return the id."""
    missing = [i for i in inputs if i not in g]
    if missing:  # networkx would silently create them as bare nodes
        raise IRError(f"{op}: input %{missing[0]} is not a node of ir {g.graph['name']}")
    if len(inputs) != len(args):
        raise IRError(f"{op}: {len(inputs)} inputs but {len(args)} argument names")
    nid = g.graph["next_id"]
    g.graph["next_id"] = nid + 1
    g.add_node(nid, node=Node(op, list(inputs), list(args), dict(attrs), type_, span, scope))
    g.add_edges_from((src, nid) for src in inputs)
    return nid


def node(g: IR, nid: int) -> Node:
    return g.nodes[nid]["node"]


def nodes(g: IR) -> Iterator[tuple[int, Node]]:
    """(id, record) of every node, in execution order."""
    for nid in order(g):
        yield nid, node(g, nid)


def bodies(g: IR) -> list[IR]:
    """The IRs nested in `g`: each `scan`/`generate` node's `body`, and a cell checked on
    its own's one-step `cell_body`. A pass that rewrites ops wherever they are runs on these."""
    found = [n.attrs["body"] for _, n in nodes(g) if isinstance(n.attrs.get("body"), IR)]
    if isinstance(g.graph.get("cell_body"), IR):
        found.append(g.graph["cell_body"])
    return found


def add_delay(g: IR, src: int, state: int) -> None:
    """`src` is the next value of the `state` node: a delayed (next step) edge src -> state."""
    if node(g, state).op != "state":
        raise IRError(f"a delay edge must end at a state node, not %{state} "
                      f"({node(g, state).op})")
    g.add_edge(src, state, delay=1)


def is_delay(g: IR, a: int, b: int) -> bool:
    return bool(g.edges[a, b].get("delay"))


def dataflow(g: IR) -> nx.DiGraph:
    """A view of `g` without its delayed edges: within one step, what reads what."""
    return nx.subgraph_view(g, filter_edge=lambda a, b: not is_delay(g, a, b))


def order(g: IR) -> list[int]:
    """An execution order: topological over the undelayed edges, smallest id first where
    free, so it is deterministic and equals creation order when nothing was rewritten."""
    try:
        return list(nx.lexicographical_topological_sort(dataflow(g)))
    except nx.NetworkXUnfeasible:
        raise IRError(f"ir {g.graph['name']} has a cycle without a delay edge") from None


def users(g: IR, nid: int) -> list[int]:
    """The nodes that read `nid` within a step (not through a delay edge)."""
    return [b for b in g.successors(nid) if not is_delay(g, nid, b)]


def replace_uses(g: IR, old: int, new: int) -> None:
    """Every reader of `old` reads `new` instead: operands, outputs, a state's next value.

    `new` itself keeps reading `old`, so a node inserted after `old` can take its place:

        y = add_node(g, "tanh", [x], ["x"], {}, t, None); replace_uses(g, x, y)
    """
    if new not in g:
        raise IRError(f"cannot replace %{old} by %{new}: no such node")
    for b in list(g.successors(old)):
        if is_delay(g, old, b):
            g.remove_edge(old, b)
            g.add_edge(new, b, delay=1)
        elif b != new:
            n = node(g, b)
            n.inputs = [new if i == old else i for i in n.inputs]
            g.remove_edge(old, b)
            g.add_edge(new, b)
    g.graph["outputs"] = [new if o == old else o for o in g.graph["outputs"]]
    if "states" in g.graph:
        g.graph["states"] = {name: (sid, new if nxt == old else nxt)
                             for name, (sid, nxt) in g.graph["states"].items()}


def remove_operand(g: IR, nid: int, arg: str) -> None:
    """Node `nid` no longer reads its operand `arg` (the edge goes unless it reads the same
    node as another operand); what fed it stays, maybe dead."""
    n = node(g, nid)
    if arg not in n.args:
        raise IRError(f"%{nid} ({n.op}) has no operand `{arg}`")
    i = n.args.index(arg)
    src = n.inputs[i]
    del n.inputs[i], n.args[i]
    if src not in n.inputs:
        g.remove_edge(src, nid)


def remove_node(g: IR, nid: int) -> None:
    """Remove a dead node: one that nothing reads and that is no input, output or state."""
    if any(True for _ in g.successors(nid)):
        raise IRError(f"cannot remove %{nid}: it is read by "
                      + ", ".join(f"%{b}" for b in g.successors(nid)))
    states = g.graph.get("states", {})
    if nid in g.graph["inputs"] or nid in g.graph["outputs"] or \
            any(nid in pair for pair in states.values()):
        raise IRError(f"cannot remove %{nid}: it is an input, output or state of the IR")
    g.remove_node(nid)
    # bookkeeping of the front end that names nodes: keep it pointing at live nodes
    by_name = g.graph.get("params_by_name", {})
    for name in [k for k, v in by_name.items() if v == nid]:
        del by_name[name]
    if nid in g.graph.get("stochastic", []):
        g.graph["stochastic"].remove(nid)


def clone(g: IR) -> IR:
    """A copy a pass can rewrite without touching `g`: new records, attrs and graph
    attributes copied, body IRs cloned; types and spans (immutable) are shared."""
    out = nx.DiGraph()
    out.graph.update({k: _copy(v) for k, v in g.graph.items()})
    for nid in g.nodes:  # insertion order, so the clone prints and iterates the same
        n = node(g, nid)
        out.add_node(nid, node=Node(n.op, list(n.inputs), list(n.args), _copy(n.attrs),
                                    n.type, n.span, n.scope))
    out.add_edges_from(g.edges(data=True))
    return out


def _copy(v):
    if isinstance(v, nx.DiGraph):
        return clone(v)
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return copy.deepcopy(v)
