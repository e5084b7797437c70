"""The IR verifier: is a graph well formed? (JAX's `check_jaxpr` for this IR.)

`verify(g)` lists what is wrong; `check_ir(g)` raises an `IRError` that names the first
bad node and prints the IR around it:

    ir g: %3 (add): input %9 is not a node
        %2 = param(name="w", init=["glorot"], frozen=false) : f32[3, 4]
    >>> %3 = add(x=%0, y=%9) : f32[B, 4]
        return %3

Checked, recursively into the bodies of scan/generate/expect nodes (and a cell's
`cell_body`):
each input exists and has its edge (and each edge its input); the op is a registry op or
a structural one; a registry op's operands and attributes fit its signature, its
weights are there, and its shape rule gives the type the node declares; every node has a
type (a tuple only when it is read through `getitem`); inputs and outputs exist; delay
edges end at `state` nodes and match `states`; no cycle avoids a delay edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from graphdl.dims import FLOAT_DTYPES, Dim, TensorType
from graphdl.ir.graph import IR, IRError, dataflow, is_delay
from graphdl.ir.node import STRUCTURAL_OPS, Node
from graphdl.ir.printer import format_node, printing_order
from graphdl.ops import REGISTRY, ShapeError
from graphdl.ops.registry import TENSOR_KINDS, Op

LOOPS = ("scan", "generate")
SOURCES = ("input", "param", "stat", "state")  # values from outside the step: a name, no inputs


@dataclass
class Problem:
    ir: IR
    nid: int | None  # None: about the graph as a whole
    message: str

    def __str__(self) -> str:
        where = f"ir {self.ir.graph.get('name', '?')}"
        if self.nid is not None:
            rec = self.ir.nodes[self.nid].get("node") if self.nid in self.ir else None
            where += f": %{self.nid}" + (f" ({rec.op})" if isinstance(rec, Node) else "")
        return f"{where}: {self.message}"


def verify(g: IR) -> list[str]:
    """Every problem of `g` and its bodies, one line each; [] when it is well formed."""
    return [str(p) for p in problems(g)]


def check_ir(g: IR, context: int = 3) -> None:
    """Raise an IRError on the first problem, with the IR printed around the bad node."""
    found = problems(g)
    if not found:
        return
    first = found[0]
    lines = [str(p) for p in found]
    lines.append("")
    lines.extend(excerpt(first.ir, first.nid, context))
    raise IRError("\n".join(lines))


def excerpt(g: IR, nid: int | None, context: int = 3) -> list[str]:
    """The lines of `g` around node `nid`, that one marked with `>>>`."""
    ids = printing_order(g)
    at = ids.index(nid) if nid in g else 0
    shown = ids[max(0, at - context): at + context + 1]
    out = [f"    ir {g.graph.get('name', '?')}"]
    for i in shown:
        out.append(("  >>> " if i == nid else "      ") + format_node(g, i))
    out.append(f"      return {', '.join(f'%{o}' for o in g.graph.get('outputs', []))}")
    return out


def problems(g: IR) -> list[Problem]:
    found: list[Problem] = []
    _check_graph(g, found)
    return found


def _check_graph(g: IR, found: list[Problem]) -> None:
    def bad(nid, message):
        found.append(Problem(g, nid, message))

    for key in ("name", "inputs", "outputs"):
        if key not in g.graph:
            bad(None, f"the graph has no `{key}` attribute")
            return
    records = {}
    for nid, data in g.nodes(data=True):
        if isinstance(data.get("node"), Node):
            records[nid] = data["node"]
        else:
            bad(nid, "a graph node without a Node record (an edge to a missing node?)")
    for nid, n in records.items():
        _check_edges(g, nid, n, bad)
        _check_node(g, nid, n, records, bad)
    for i in g.graph["inputs"]:
        if i not in records or records[i].op != "input":
            bad(None, f"graph input %{i} is not an input node")
    for o in g.graph["outputs"]:
        if o not in records:
            bad(None, f"output %{o} is not a node")
        elif not isinstance(records[o].type, TensorType):
            bad(o, "an output must be a tensor, not a tuple: read it through getitem")
    _check_delays(g, records, bad)
    flow = dataflow(g)
    cycle = None
    # find_cycle alone restarts its search from every node: quadratic on a 10,000-layer
    # chain (minutes); the topological test is linear and passes for every good IR
    if not nx.is_directed_acyclic_graph(flow):
        cycle = nx.find_cycle(flow)
    if cycle:
        path = " -> ".join(f"%{a}" for a, _ in cycle) + f" -> %{cycle[0][0]}"
        bad(cycle[0][0], f"a cycle without a delay edge: {path}")
    for n in records.values():
        body = n.attrs.get("body")
        if isinstance(body, nx.DiGraph):  # (a body that is no IR is reported by _check_loop)
            _check_graph(body, found)
    if isinstance(g.graph.get("cell_body"), nx.DiGraph):
        _check_graph(g.graph["cell_body"], found)


def _check_edges(g: IR, nid: int, n: Node, bad) -> None:
    if len(n.inputs) != len(n.args):
        bad(nid, f"{len(n.inputs)} inputs but {len(n.args)} argument names")
    for i in n.inputs:
        if i not in g:
            bad(nid, f"input %{i} is not a node")
        elif not g.has_edge(i, nid) or is_delay(g, i, nid):
            bad(nid, f"input %{i} has no edge %{i} -> %{nid}")
    for a in g.predecessors(nid):
        if not is_delay(g, a, nid) and a not in n.inputs:
            bad(nid, f"an edge %{a} -> %{nid} but %{a} is not an input")


def _check_delays(g: IR, records: dict, bad) -> None:
    """Delay edges end at `state` nodes, one each, as `states` (name -> (state, next)) says."""
    into: dict[int, list[int]] = {}
    for a, b in g.edges:
        if is_delay(g, a, b):
            into.setdefault(b, []).append(a)
            if b in records and records[b].op != "state":
                bad(b, f"a delay edge %{a} -> %{b} must end at a state node")
    for sid, srcs in into.items():
        if len(srcs) > 1:
            bad(sid, "a state has one next value, got " + ", ".join(f"%{a}" for a in srcs))
    states = g.graph.get("states", {})
    for name, (sid, nxt) in states.items():
        if sid not in records or records[sid].op != "state" or \
                records[sid].attrs.get("name") != name:
            bad(sid if sid in g else None, f"states[{name!r}] = %{sid} is not state `{name}`")
        elif into.get(sid) != [nxt]:
            bad(sid, f"states[{name!r}] says next value %{nxt}, but the delay edges say "
                     + (", ".join(f"%{a}" for a in into.get(sid, [])) or "none"))
    if into and not states:
        bad(None, "delay edges without `states`")
    for sid in into:
        if not any(s == sid for s, _ in states.values()):
            bad(sid, "a delay edge into a state that `states` does not name")


def _check_node(g: IR, nid: int, n: Node, records: dict, bad) -> None:
    if n.op not in REGISTRY and n.op not in STRUCTURAL_OPS:
        bad(nid, f"unknown op `{n.op}`")
        return
    if isinstance(n.type, tuple):
        if not n.type or not all(isinstance(t, TensorType) for t in n.type):
            bad(nid, f"a tuple type must hold tensor types, got {n.type}")
        readers = [records[b].op for b in g.successors(nid) if b in records]
        if any(op != "getitem" for op in readers):
            bad(nid, "a tuple-typed node must be read through getitem only")
    elif not isinstance(n.type, TensorType):
        bad(nid, f"no type (got {n.type!r})")
        return
    operand_types = {a: records[i].type for i, a in n.operands() if i in records}
    if n.op in SOURCES:
        if n.inputs:
            bad(nid, f"{n.op} takes no inputs")
        if "name" not in n.attrs:
            bad(nid, f"{n.op} needs a `name` attribute")
    elif n.op == "getitem":
        _check_getitem(nid, n, list(operand_types.values()), bad)
    elif n.op in LOOPS:
        _check_loop(nid, n, bad)
    elif n.op == "expect":
        body = n.attrs.get("body")
        outs = body.graph.get("outputs", []) if isinstance(body, nx.DiGraph) else None
        if outs is None or not isinstance(n.type, tuple) or len(n.type) != len(outs):
            bad(nid, "expect needs a `body` IR with one output per result")
    if n.op in ("sample", "expect") or n.op.startswith("dist_"):
        if not n.inputs:
            bad(nid, f"{n.op} needs the parameters of its distribution")
        if "family" not in n.attrs:
            bad(nid, f"{n.op} needs a `family` attribute")
    if n.op in REGISTRY and all(i in records for i in n.inputs):
        _check_op(nid, n, REGISTRY[n.op], operand_types, bad)


def _check_getitem(nid: int, n: Node, operands: list, bad) -> None:
    if len(n.inputs) != 1:
        bad(nid, f"getitem takes one input, got {len(n.inputs)}")
        return
    index = n.attrs.get("index")
    if not operands or not isinstance(operands[0], tuple):
        bad(nid, f"getitem reads a tuple-typed node, but %{n.inputs[0]} is {operands[:1]}")
    elif not isinstance(index, int) or not 0 <= index < len(operands[0]):
        bad(nid, f"index {index!r} is out of range for {len(operands[0])} results")
    elif operands[0][index] != n.type:
        bad(nid, f"declares {n.type} but result {index} of %{n.inputs[0]} is "
                 f"{operands[0][index]}")


def _check_loop(nid: int, n: Node, bad) -> None:
    body = n.attrs.get("body")
    if not isinstance(body, nx.DiGraph):
        bad(nid, f"{n.op} needs a `body` IR")
        return
    states = n.attrs.get("states", [])
    if list(body.graph.get("states", {})) != list(states):
        bad(nid, f"states {states} but the body has {list(body.graph.get('states', {}))}")
    # (stacked outputs, *final states, *extra outputs stacked): a body's outputs after the
    # first are extra results (the surrogate pass adds its log-probabilities this way);
    # generate ends with one more, the picks' total log-probability
    results = len(states) + max(1, len(body.graph.get("outputs", []))) + (n.op == "generate")
    if not isinstance(n.type, tuple) or len(n.type) != results:
        extra = ", logp" if n.op == "generate" else ""
        bad(nid, f"{n.op} gives (outputs, *final states, *extra outputs{extra}): "
                 f"{results} results")
    if not n.inputs:
        bad(nid, f"{n.op} needs its sequence (or start tokens) as the first input")


def rule_arguments(op: Op, n: Node, operand_types: dict) -> tuple[dict, list[str]]:
    """The keyword arguments of `op.infer` for node `n` (operand types by argument name,
    attributes), and what is missing. `operand_types`: argument name -> type."""
    types: dict = {}
    missing: list[str] = []
    for a in op.args:
        if a.kind == "tensor":
            if a.name in operand_types:
                types[a.name] = operand_types[a.name]
            elif a.required:
                missing.append(f"{op.name} is missing its tensor argument `{a.name}`")
        elif a.kind == "tensors":
            items = [t for k, t in operand_types.items() if k.startswith(a.name + ".")]
            if not items and a.required:
                missing.append(f"{op.name} is missing its tensor list `{a.name}`")
            types[a.name] = items
        elif a.name in n.attrs:
            types[a.name] = n.attrs[a.name]
        else:
            missing.append(f"{op.name} is missing its attribute `{a.name}`")
    return types, missing


def _check_op(nid: int, n: Node, op: Op, operand_types: dict, bad) -> None:
    """Operands and attributes against the signature; weights; the shape rule's type."""
    # `compute` (the precision pass): the op computes as if its float operands were of
    # that dtype, and its float results are
    compute = n.attrs.get("compute")
    if compute is not None and compute not in FLOAT_DTYPES:
        bad(nid, f"compute must be a float dtype, got {compute!r}")
        compute = None
    types, missing = rule_arguments(op, n, {k: _as_compute(t, compute)
                                            for k, t in operand_types.items()})
    for message in missing:
        bad(nid, message)
    ok = not missing
    consts = {a.name for a in op.args if a.kind not in TENSOR_KINDS}
    for k in n.attrs:
        if k not in consts and k != "compute":
            bad(nid, f"{op.name} has no attribute `{k}`")
    if not ok or not all(isinstance(t, TensorType) for t in operand_types.values()):
        return  # an operand without a type is reported at that operand
    try:
        declared = op.infer(**types)
        owned = {**(op.weights(**types) if op.weights else {}),
                 **(op.stats(**types) if op.stats else {})}
    except ShapeError as err:
        bad(nid, f"the shape rule of {op.name} rejects its operands: {err.message}")
        return
    except Exception as err:  # noqa: BLE001 - a malformed attribute: report, don't crash
        bad(nid, f"the shape rule of {op.name} fails: {type(err).__name__}: {err}")
        return
    tensor_args = {a.name for a in op.args if a.kind == "tensor"}
    lists = {a.name for a in op.args if a.kind == "tensors"}
    for k, t in operand_types.items():
        if k in tensor_args or k.split(".", 1)[0] in lists:
            continue
        if k not in owned:
            bad(nid, f"{op.name} has no argument or weight `{k}`")
            continue
        w = owned[k]
        want = TensorType(w.dtype, tuple(Dim.of(d) for d in w.shape))
        if _as_compute(t, compute) != _as_compute(want, compute):  # the op casts it
            bad(nid, f"weight `{k}` is {t}, but {op.name} owns {want}")
    for k in owned:
        if k not in operand_types:
            bad(nid, f"{op.name} is missing its weight `{k}`")
    if compute is not None:
        declared = _as_compute(declared, compute)
    if declared != n.type:
        bad(nid, f"declares {_show(n.type)} but the shape rule of {op.name} gives "
                 f"{_show(declared)}")


def _as_compute(t, compute: str | None):
    """`t` with its float dtypes replaced by `compute` (None: unchanged)."""
    if compute is None:
        return t
    if isinstance(t, tuple):
        return tuple(_as_compute(x, compute) for x in t)
    if isinstance(t, list):
        return [_as_compute(x, compute) for x in t]
    if isinstance(t, TensorType) and t.is_float():
        return TensorType(compute, t.shape)
    return t


def _show(t) -> str:
    if isinstance(t, tuple):
        return "(" + ", ".join(str(x) for x in t) + ")"
    return str(t)
