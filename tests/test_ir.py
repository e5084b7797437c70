"""The IR core: the node record, the graph operations and the verifier.

The verifier runs over every IR the shipped files elaborate to (models/, tests/spec/,
tests/golden/), and each way of breaking an IR below must be caught.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from graphdl.dims import Dim, TensorType
from graphdl.elaborate.check import check_program
from graphdl.ir import (
    IRError,
    Node,
    add_delay,
    add_node,
    check_ir,
    clone,
    format_ir,
    new_ir,
    node,
    nodes,
    order,
    remove_node,
    remove_operand,
    replace_uses,
    users,
    verify,
)
from graphdl.runtime.data import SOURCES

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted([*ROOT.glob("models/*.gdl"), *ROOT.glob("tests/spec/*.gdl"),
                  *ROOT.glob("tests/golden/*.gdl")])
F = TensorType("f32", (Dim("B"), Dim(3)))


def all_irs(checked) -> list:
    """Every IR of a checked file: graphs, train blocks and their evaluations."""
    return [*checked.irs.values(), *(t.ir for t in checked.trains),
            *(e.ir for t in checked.trains for e in t.evaluations)]


def chain() -> nx.DiGraph:
    """ir g(%0): %1 = tanh(%0); %2 = exp(%1); return %2"""
    g = new_ir("g")
    x = add_node(g, "input", [], [], {"name": "x"}, F, None)
    g.graph["inputs"].append(x)
    t = add_node(g, "tanh", [x], ["x"], {}, F, None)
    e = add_node(g, "exp", [t], ["x"], {}, F, None)
    g.graph["outputs"] = [e]
    return g


def checked(src: str):
    c = check_program("m.gdl", src, sources=SOURCES)
    assert not c.diagnostics, [d.message for d in c.diagnostics]
    return c


CELLS = (ROOT / "tests/golden/cells.gdl").read_text(encoding="utf-8")


def scan_body(ir):
    (scan,) = [n for _, n in nodes(ir) if n.op == "scan"][:1]
    return scan.attrs["body"]


# -- the node record ------------------------------------------------------------------------
def test_a_node_is_one_record_with_shape_and_dtype_from_its_type():
    g = chain()
    n = node(g, 1)
    assert isinstance(n, Node) and set(g.nodes[1]) == {"node"}
    assert (n.op, n.inputs, n.args, n.attrs) == ("tanh", [0], ["x"], {})
    assert n.shape == F.shape and n.dtype == "f32"
    tup = Node("split", [0], ["x"], {}, (F, F))
    assert tup.shape is None and tup.dtype is None


def test_edges_are_derived_from_inputs():
    g = chain()
    assert sorted(g.edges) == [(0, 1), (1, 2)]
    m = add_node(g, "mul", [2, 2], ["x", "y"], {}, F, None)  # one edge for a repeated input
    assert list(g.predecessors(m)) == [2] and node(g, m).inputs == [2, 2]
    with pytest.raises(IRError, match="%7 is not a node"):
        add_node(g, "tanh", [7], ["x"], {}, F, None)
    assert 7 not in g  # networkx did not create it


# -- order ------------------------------------------------------------------------------------
def test_order_is_creation_order_when_nothing_was_rewritten():
    for path in SHIPPED:
        for ir in all_irs(check_program(str(path), path.read_text(encoding="utf-8"), sources=SOURCES)):
            assert order(ir) == sorted(ir.nodes), path.name


def test_order_follows_the_edges_after_an_insertion():
    g = chain()
    r = add_node(g, "relu", [0], ["x"], {}, F, None)  # id 3, read by %1 (id 1)
    replace_uses(g, 0, r)
    assert node(g, 1).inputs == [r] and node(g, r).inputs == [0]
    assert order(g) == [0, 3, 1, 2]
    assert verify(g) == []
    lines = format_ir(g).splitlines()
    assert [ln.split(" =")[0].strip() for ln in lines[1:5]] == ["%0", "%3", "%1", "%2"]


def test_order_leaves_out_delay_edges_and_refuses_a_plain_cycle():
    body = scan_body(checked(CELLS).irs["run_acc"])
    assert any(d.get("delay") for *_, d in body.edges(data=True))
    assert order(body) == sorted(body.nodes)
    g = chain()
    node(g, 1).inputs.append(2)
    node(g, 1).args.append("y")
    g.add_edge(2, 1)
    with pytest.raises(IRError, match="cycle without a delay edge"):
        order(g)


# -- rewriting --------------------------------------------------------------------------------
def test_replace_uses_moves_readers_and_outputs():
    g = chain()
    s = add_node(g, "sigmoid", [1], ["x"], {}, F, None)
    replace_uses(g, 2, s)  # the output moves
    assert g.graph["outputs"] == [s]
    replace_uses(g, 1, 0)  # %2 and %s read the input now
    assert node(g, 2).inputs == [0] and node(g, s).inputs == [0]
    assert users(g, 1) == [] and sorted(users(g, 0)) == [1, 2, s]
    assert verify(g) == []


def test_replace_uses_moves_a_state_next_value():
    body = clone(scan_body(checked(CELLS).irs["run_acc"]))
    sid, nxt = body.graph["states"]["h"]
    t = add_node(body, "tanh", [nxt], ["x"], {}, node(body, nxt).type, None)
    replace_uses(body, nxt, t)
    assert body.graph["states"]["h"] == (sid, t) and body.edges[t, sid]["delay"] == 1
    assert not body.has_edge(nxt, sid) and body.graph["outputs"] == [t]
    assert verify(body) == []


def test_remove_node_takes_dead_nodes_only():
    g = chain()
    with pytest.raises(IRError, match="read by %2"):
        remove_node(g, 1)
    with pytest.raises(IRError, match="input, output or state"):
        remove_node(g, 2)
    replace_uses(g, 1, 0)
    remove_node(g, 1)
    assert 1 not in g and order(g) == [0, 2] and verify(g) == []


def test_remove_operand_drops_the_operand_and_its_edge():
    g = chain()
    two = add_node(g, "add", [1, 1], ["x", "y"], {}, F, None)
    remove_operand(g, two, "y")  # %1 is still read as x: the edge stays
    assert node(g, two).inputs == [1] and node(g, two).args == ["x"] and g.has_edge(1, two)
    remove_operand(g, 2, "x")
    assert node(g, 2).inputs == [] and not g.has_edge(1, 2)
    with pytest.raises(IRError, match="no operand `y`"):
        remove_operand(g, 2, "y")


def test_remove_node_forgets_a_removed_parameter():
    ir = clone(checked("graph g(x: f32[B, 3]) {\n    return dense(x, 4)\n}\n").irs["g"])
    (d,) = [nid for nid, n in nodes(ir) if n.op == "dense"]
    (b,) = [nid for nid, n in nodes(ir) if n.op == "param" and n.attrs["name"].endswith(".b")]
    replace_uses(ir, d, node(ir, d).inputs[0])
    remove_node(ir, d)
    remove_node(ir, b)
    assert b not in ir.graph["params_by_name"].values()


def test_clone_is_independent_of_the_original():
    ir = checked(CELLS).irs["run_acc"]
    before = format_ir(ir)
    copy = clone(ir)
    assert format_ir(copy) == before
    (sid,) = [nid for nid, n in nodes(copy) if n.op == "scan"][:1]
    body = node(copy, sid).attrs["body"]
    assert body is not node(ir, sid).attrs["body"]
    node(copy, sid).attrs["states"].append("z")
    (t,) = [nid for nid, n in nodes(body) if n.op == "tanh"]
    replace_uses(body, t, node(body, t).inputs[0])
    remove_node(body, t)
    copy.graph["outputs"].clear()
    assert format_ir(ir) == before and verify(ir) == []


# -- the verifier ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_ir_verifies(path):
    c = check_program(str(path), path.read_text(encoding="utf-8"), sources=SOURCES)
    assert not c.diagnostics
    irs = all_irs(c)
    assert irs
    for ir in irs:
        assert verify(ir) == [], format_ir(ir)
        check_ir(ir)


def broken(problem: str) -> str:
    """The verifier's report on a small graph broken one way; check_ir names the node."""
    g = clone(checked("graph g(x: f32[B, 3], y: f32[B, 3]) {\n"
                      "    return tanh(x + y) * x\n}\n").irs["g"])
    assert verify(g) == []
    add = next(nid for nid, n in nodes(g) if n.op == "add")
    n = node(g, add)
    if problem == "dangling":
        n.inputs[1] = 99
    elif problem == "missing edge":
        g.remove_edge(n.inputs[1], add)
    elif problem == "cycle":
        out = g.graph["outputs"][0]
        n.inputs.append(out)
        n.args.append("z")
        g.add_edge(out, add)
    elif problem == "arity":
        g.remove_edge(n.inputs.pop(), add)
        n.args.pop()
    elif problem == "unknown op":
        n.op = "frobnicate"
    elif problem == "type":
        n.type = TensorType("f32", (Dim("B"), Dim(4)))
    elif problem == "no type":
        n.type = None
    elif problem == "output":
        g.graph["outputs"].append(42)
    elif problem == "delay":
        g.add_edge(g.graph["outputs"][0], add, delay=1)  # add_delay refuses this
    found = verify(g)
    assert found
    with pytest.raises(IRError) as err:
        check_ir(g)
    assert found[0] in str(err.value)
    return "\n".join(found) + "\n" + str(err.value)


@pytest.mark.parametrize("problem, message", [
    ("dangling", "input %99 is not a node"),
    ("missing edge", "has no edge"),
    ("cycle", "a cycle without a delay edge"),
    ("arity", "add is missing its tensor argument `y`"),
    ("unknown op", "unknown op `frobnicate`"),
    ("type", "declares f32[B, 4] but the shape rule of add gives f32[B, 3]"),
    ("no type", "no type"),
    ("output", "output %42 is not a node"),
    ("delay", "must end at a state node"),
])
def test_the_verifier_catches_a_broken_ir(problem, message):
    report = broken(problem)
    assert message in report
    assert "    ir g" in report  # the IR is printed (around the bad node: >>>)
    assert ">>>" in report or problem == "output"


def test_check_ir_marks_the_bad_node_line():
    g = chain()
    node(g, 2).inputs[0] = 99
    with pytest.raises(IRError) as err:
        check_ir(g)
    text = str(err.value)
    assert text.startswith("ir g: %2 (exp): input %99 is not a node")
    assert ">>> %2 = exp(x=%99) : f32[B, 3]" in text


def test_the_verifier_reads_bodies():
    ir = clone(checked(CELLS).irs["run_acc"])
    body = scan_body(ir)
    (t,) = [nid for nid, n in nodes(body) if n.op == "tanh"]
    node(body, t).op = "tahn"
    assert verify(ir) == [f"ir acc: %{t} (tahn): unknown op `tahn`"]


def test_the_verifier_checks_getitem_and_weights():
    src = "graph g(x: f32[B, 6]) {\n    a, b = split(x, 2)\n    return dense(a, 3) + b\n}\n"
    ir = clone(checked(src).irs["g"])
    assert verify(ir) == []
    (get,) = [nid for nid, n in nodes(ir) if n.op == "getitem" and n.attrs["index"] == 1]
    node(ir, get).attrs["index"] = 2
    (dense,) = [nid for nid, n in nodes(ir) if n.op == "dense"]
    w = node(ir, dense).inputs[node(ir, dense).args.index("w")]
    node(ir, w).type = TensorType("f32", (Dim(5), Dim(4)))  # the param node
    report = "\n".join(verify(ir))
    assert "index 2 is out of range for 2 results" in report
    assert "weight `w` is f32[5, 4], but dense owns f32[3, 3]" in report


def test_add_delay_ends_at_a_state():
    g = chain()
    with pytest.raises(IRError, match="must end at a state node"):
        add_delay(g, 2, 1)


def test_the_verifier_looks_for_a_cycle_only_in_a_graph_that_has_one(monkeypatch):
    """nx.find_cycle restarts from every node (minutes on a 10,000-layer chain): the
    verifier runs it only after the linear acyclicity test failed."""
    lines = ["graph deep(x: f32[B, 8]) -> f32[B, 8] {", "    h0 = x"]
    lines += [f"    h{i} = relu(dense(h{i - 1}, 8))" for i in range(1, 301)]
    checked = check_program("deep.gdl", "\n".join([*lines, "    return h300", "}", ""]),
                            sources=SOURCES)
    def refuse(*args, **kwargs):
        raise AssertionError("find_cycle on an acyclic IR")
    monkeypatch.setattr(nx, "find_cycle", refuse)
    assert verify(checked.irs["deep"]) == []
