"""Recurrent cells: `state` declarations and `scan`, which runs a cell over an axis.

A cell body becomes its own IR (the `body` attribute of the scan node):

    cell acc(x: f32[B, D]) -> f32[B, D] { state s: f32[B, D] = zeros  s = s + x  return s }
    ==>
    ir acc(%0)
      %0 = input(name="x") : f32[B, D]
      %1 = state(name="s", init=["zeros"]) : f32[B, D]
      %2 = add(%1, %0) : f32[B, D]
      %2 -> %1 (delay 1)
      return %2
"""

from __future__ import annotations

import networkx as nx

from graphdl.dims import Dim, TensorType
from graphdl.errors import Span
from graphdl.ir.graph import add_node, new_ir
from graphdl.parse import ast as A
from graphdl.passes.build import Builder, Scope
from graphdl.passes.values import Const, GraphRef, Poison, Record, Tensor, describe


def state_statement(b: Builder, st: A.State) -> None:
    if b.scope.kind != "cell":
        b.error("`state` is only allowed inside a cell", st.span,
                hint="declare the recurrent part as `cell name(x: ...) { state h: ... }` and "
                     "run it with scan")
        return
    if st.name in b.scope.states:
        b.error(f"state `{st.name}` is declared twice", st.span)
        return
    type_ = b.resolve_type(st.type)
    from graphdl.passes.calls import initializer
    init = initializer(b, st.init)
    if type_ is None or init is None:
        b.bind(st.name, Poison(), st.span)
        return
    nid = b.node("state", [], [], {"name": st.name, "init": init}, type_, st.span)
    b.scope.states[st.name] = nid
    b.bind(st.name, Tensor(nid, type_, f"state `{st.name}` (previous step)"), st.span)


def build_cell(b: Builder, ref: GraphRef, step_type: TensorType, span: Span, instance: str,
               symbolic: bool = False):
    """Elaborate one step of a cell into a new IR; returns (ir, out Tensor type, states).

    `symbolic` leaves constants without a value as symbols (checking the cell on its own);
    a call site (`scan(xs, lstm)`) must give them, like any graph call.
    """
    from graphdl.passes.calls import bind_consts, run_body
    gdef = ref.gdef
    body = new_ir(gdef.name)
    saved_g = b.g
    b.g = body
    scope = Scope(instance, "cell")
    try:
        with b.in_scope(scope):
            if not bind_consts(b, ref, span, symbolic=symbolic and not b.program.concrete):
                return None
            if len(gdef.args) != 1:
                b.error(f"a cell takes one input per step; `{gdef.name}` declares "
                        f"{len(gdef.args)}", gdef.span)
                return None
            arg = gdef.args[0]
            declared = b.resolve_type(arg.type)
            if declared is None or not b.unify(declared, step_type, span,
                                               f"one step of the input of {gdef.name}",
                                               arg.type.span):
                return None
            x = b.node("input", [], [], {"name": arg.name}, step_type, arg.span)
            body.graph["inputs"].append(x)
            b.bind(arg.name, Tensor(x, step_type, f"`{arg.name}`, the input of one step"), arg.span)
            results = run_body(b, gdef)
            from graphdl.passes.calls import check_returns
            out = check_returns(b, gdef, results, span)
            if not isinstance(out, Tensor):
                if not isinstance(out, Poison):
                    b.error(f"a cell returns one tensor per step, got {describe(out)}", gdef.span)
                return None
            states = {}
            for name, sid in scope.states.items():
                nxt = scope.values[name]
                if isinstance(nxt, Poison):
                    return None
                if not isinstance(nxt, Tensor):
                    b.error(f"state `{name}` must be assigned a tensor "
                            f"{body.nodes[sid]['type']}, got {describe(nxt)}",
                            scope.where.get(name, gdef.span))
                    return None
                if nxt.type != body.nodes[sid]["type"]:
                    b.error(f"state `{name}` is {body.nodes[sid]['type']} but its next value is "
                            f"{nxt.type}", scope.where.get(name, gdef.span))
                    return None
                body.add_edge(nxt.node, sid, delay=1)
                states[name] = (sid, nxt.node)
            body.graph["outputs"] = [out.node]
            body.graph["states"] = states
            check_delays(b, body, gdef.span)
            return body, out.type, states
    finally:
        b.g = saved_g


def check_delays(b: Builder, ir, span: Span) -> None:
    """Every cycle of an IR must pass through a delayed (state) edge."""
    undelayed = nx.DiGraph((u, v) for u, v, d in ir.edges(data=True) if not d.get("delay"))
    if not nx.is_directed_acyclic_graph(undelayed):
        b.error("this cell has a cycle without a state delay", span,
                hint="a value that depends on itself must be a `state`")


def scan(b: Builder, args, kwargs, span, arg_spans, kw_spans):
    from graphdl.passes.specials import bind_special
    bound = bind_special(b, "scan", "xs, cell, axis = 1, init = None, reverse = false, unroll = 1",
                         args, kwargs, span, arg_spans, kw_spans)
    if bound is None:
        return Poison()
    xs, ref = bound["xs"], bound["cell"]
    if not isinstance(xs, Tensor):
        return b.error(f"scan runs over a tensor, got {describe(xs)}", bound.span("xs"))
    if not isinstance(ref, GraphRef) or ref.gdef.kind != "cell":
        return b.error(f"the second argument of scan must be a cell, got {describe(ref)}",
                       bound.span("cell"))
    consts = {k: bound[k].value if isinstance(bound[k], Const) else None
              for k in ("axis", "reverse", "unroll")}
    if any(v is None for v in consts.values()):
        return b.error("axis, reverse and unroll of scan must be constants", span)
    axis = consts["axis"]
    if not -xs.type.rank <= axis < xs.type.rank:
        return b.error(f"axis {axis} is out of range for {xs.type}", bound.span("axis"))
    axis %= xs.type.rank
    step = TensorType(xs.type.dtype, xs.type.shape[:axis] + xs.type.shape[axis + 1:])
    instance = ref.instance or b.call_prefix(ref.gdef.name, None)
    built = build_cell(b, ref, step, span, instance)
    if built is None:
        return Poison()
    body, out_type, states = built
    inputs, arg_names = [xs], ["xs"]
    init = bound["init"]
    if init is not None and not (isinstance(init, Const) and init.value is None):
        if not isinstance(init, Record):
            return b.error(f"`init` must be a record of states like {{h = ...}}, got "
                           f"{describe(init)}", bound.span("init"))
        for name, value in init.fields.items():
            if name not in states:
                return b.error(f"{ref.gdef.name} has no state `{name}`", bound.span("init"),
                               hint=f"its states are {', '.join(states) or 'none'}")
            want = body.nodes[states[name][0]]["type"]
            if not isinstance(value, Tensor) or value.type != want:
                got = value.type if isinstance(value, Tensor) else describe(value)
                return b.error(f"initial state `{name}` is {got}, but {ref.gdef.name} declares "
                               f"{want}", bound.span("init"))
            inputs.append(value)
            arg_names.append(f"init.{name}")
    length = xs.type.shape[axis]
    out_stacked = TensorType(out_type.dtype, out_type.shape[:axis] + (length,) + out_type.shape[axis:]) \
        if axis <= out_type.rank else TensorType(out_type.dtype, (length,) + out_type.shape)
    state_types = {n: body.nodes[sid]["type"] for n, (sid, _) in states.items()}
    result_types = (out_stacked, *state_types.values())
    nid = b.node("scan", inputs, arg_names,
                 {"body": body, "axis": axis, "reverse": consts["reverse"],
                  "unroll": consts["unroll"], "states": list(states)}, result_types, span)
    out = Tensor(add_node(b.g, "getitem", [nid], ["x"], {"index": 0}, out_stacked, span,
                          b.scope.instance), out_stacked, f"the outputs of scan at {span.short()}")
    fields = {}
    for i, (name, t) in enumerate(state_types.items()):
        gid = add_node(b.g, "getitem", [nid], ["x"], {"index": i + 1}, t, span, b.scope.instance)
        fields[name] = Tensor(gid, t, f"the final state `{name}`")
    return Record({"out": out, "state": Record(fields)})


def check_cell(b: Builder, ref: GraphRef) -> None:
    """Check a cell on its own: one step with its declared input type."""
    arg = ref.gdef.args[0] if ref.gdef.args else None
    if arg is None:
        b.error(f"cell `{ref.gdef.name}` needs an input argument", ref.gdef.span)
        return
    scope = Scope(ref.gdef.name, "cell")
    with b.in_scope(scope):
        from graphdl.passes.calls import bind_consts
        bind_consts(b, ref, ref.gdef.span, symbolic=True)
        step = b.resolve_type(arg.type)
    if step is not None:
        built = build_cell(b, ref, step, ref.gdef.span, ref.gdef.name, symbolic=True)
        if built is not None:
            body, out_type, states = built
            b.g.graph["cell_body"] = body
    _ = Dim
