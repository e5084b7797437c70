"""A stable text form of the IR, one node per line (golden tests compare it)."""

from __future__ import annotations

import networkx as nx

from graphdl.dims import TensorType
from graphdl.ir.graph import IR, IRError, node, order


def _type(t) -> str:
    if isinstance(t, TensorType):
        return str(t)
    if isinstance(t, tuple):
        return "(" + ", ".join(_type(x) for x in t) + ")"
    return "?"


def _attr(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_attr(x)}" for k, x in v.items()) + "}"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_attr(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def format_node(g: IR, nid: int) -> str:
    """`%3 = dense(%1, w=%2, units=10) : f32[B, 10]  @ mlp.out  # 4:17`"""
    if "node" not in g.nodes[nid]:  # a bare networkx node: only a broken IR has one
        return f"%{nid} = ?"
    n = node(g, nid)
    operands = [f"%{i}" if a in ("", f"_{k}") else f"{a}=%{i}"
                for k, (i, a) in enumerate(zip(n.inputs, n.args))]
    attrs = [f"{k}={_attr(v)}" for k, v in n.attrs.items() if k != "body"]
    where = f"  @ {n.scope}" if n.scope else ""
    loc = f"  # {n.span.line}:{n.span.col}" if n.span else ""
    return f"%{nid} = {n.op}({', '.join(operands + attrs)}) : {_type(n.type)}{where}{loc}"


def printing_order(g: IR) -> list[int]:
    # a broken IR (a cycle without delay) is still printed, in id order, so the
    # verifier can show it
    try:
        return order(g)
    except (IRError, nx.NetworkXException):
        return sorted(g.nodes)


def format_ir(g: IR, indent: str = "") -> str:
    """The IR, one node per line in execution order, bodies indented under their node."""
    # a train block's precision other than the default f32 (passes/precision.py)
    precision = g.graph.get("precision", "f32")
    lines = [f"{indent}ir {g.graph['name']}("
             + ", ".join(f"%{i}" for i in g.graph["inputs"]) + ")"
             + (f"  # precision {precision}" if precision != "f32" else "")]
    for nid in printing_order(g):
        lines.append(indent + "  " + format_node(g, nid))
        body = g.nodes[nid]["node"].attrs.get("body") if "node" in g.nodes[nid] else None
        if body is not None:
            lines.append(format_ir(body, indent + "    "))
    if "cell_body" in g.graph:  # a cell checked on its own: its one-step body
        lines.append(format_ir(g.graph["cell_body"], indent + "    "))
    delayed = [(a, b) for a, b, d in g.edges(data=True) if d.get("delay")]
    for a, b in delayed:
        lines.append(f"{indent}  %{a} -> %{b} (delay 1)")
    outs = ", ".join(f"%{o}" for o in g.graph["outputs"])
    lines.append(f"{indent}  return {outs}")
    return "\n".join(lines)
