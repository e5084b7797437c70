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

from graphdl.dims import INT_DTYPES, Dim, TensorType
from graphdl.elaborate.binding import bind, signature
from graphdl.elaborate.build import Builder, Scope
from graphdl.elaborate.calls import bind_consts, check_returns, initializer, run_body
from graphdl.elaborate.values import Const, GraphRef, Poison, Record, Tensor, describe
from graphdl.errors import Span
from graphdl.ir.graph import add_delay, add_node, dataflow, new_ir, node
from graphdl.parse import ast as A

STATE_INITIALIZERS = ("zeros", "ones")


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
    init = initializer(b, st.init)
    if init is not None and init[0] not in STATE_INITIALIZERS:
        b.error(f"a state starts from {' or '.join(STATE_INITIALIZERS)}, not `{init[0]}`",
                st.init.span, hint="start from zeros and let the first step set it, or pass "
                                   "`init = {name = ...}` to scan")
        init = None
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
    gdef = ref.gdef
    body = new_ir(gdef.name)
    saved_g = b.g
    b.g = body
    scope = Scope(instance, "cell")
    try:
        with b.in_scope(scope):
            if not bind_consts(b, ref, span, symbolic=symbolic and not b.concrete):
                return None
            if len(gdef.args) != 1:
                b.error(f"a cell takes one input per step; `{gdef.name}` declares "
                        f"{len(gdef.args)}", gdef.args[1].span if gdef.args[1:] else gdef.span,
                        hint="join the inputs of one step into one tensor (concat them "
                             "before the scan), or pass a fixed one as an initial state")
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
            out = check_returns(b, gdef, results, span)
            if not isinstance(out, Tensor):
                if not isinstance(out, Poison):
                    b.error(f"a cell returns one tensor per step, got {describe(out)}",
                            _return_span(gdef), hint="return one tensor; keep other values "
                                                     "in a `state`, which scan also returns")
                return None
            states = {}
            for name, sid in scope.states.items():
                nxt = scope.values[name]
                if isinstance(nxt, Poison):
                    return None
                if not isinstance(nxt, Tensor):
                    b.error(f"state `{name}` must be assigned a tensor "
                            f"{node(body, sid).type}, got {describe(nxt)}",
                            scope.where.get(name, gdef.span))
                    return None
                if nxt.type != node(body, sid).type:
                    b.error(f"state `{name}` is {node(body, sid).type} but its next value is "
                            f"{nxt.type}", scope.where.get(name, gdef.span))
                    return None
                add_delay(body, nxt.node, sid)
                states[name] = (sid, nxt.node)
            body.graph["outputs"] = [out.node]
            body.graph["states"] = states
            check_delays(b, body, gdef.span)
            return body, out.type, states
    finally:
        b.g = saved_g


def _return_span(gdef: A.GraphDef) -> Span:
    """The span of the cell's last `return`, or its header when there is none."""
    returns = [st for st in gdef.body if isinstance(st, A.Return)]
    return returns[-1].span if returns else gdef.span


def check_delays(b: Builder, ir, span: Span) -> None:
    """Every cycle of an IR must pass through a delayed (state) edge."""
    if not nx.is_directed_acyclic_graph(dataflow(ir)):
        b.error("this cell has a cycle without a state delay", span,
                hint="a value that depends on itself must be a `state`")


SCAN = signature("xs, cell, axis = 1, init = none, reverse = false, unroll = 1, "
                 "lengths = none")


def scan(b: Builder, args, kwargs, span, arg_spans, kw_spans):
    bound = bind(b, "scan", SCAN, args, kwargs, span, arg_spans, kw_spans)
    if bound is None:
        return Poison()
    xs, ref = bound["xs"], bound["cell"]
    if not isinstance(xs, Tensor):
        return b.error(f"scan runs over a tensor, got {describe(xs)}", bound.span("xs"),
                       hint="scan(xs, cell): xs is the sequence, e.g. f32[B, T, D]")
    if not isinstance(ref, GraphRef) or ref.gdef.kind != "cell":
        return b.error(f"the second argument of scan must be a cell, got {describe(ref)}",
                       bound.span("cell"), hint="declare one step as `cell NAME(x: ...)`; "
                                                "std.nn has rnn[H], lstm[H] and gru[H]")
    axis, reverse, unroll = (bound[k].value if isinstance(bound[k], Const) else None
                             for k in ("axis", "reverse", "unroll"))
    if not _is_int(axis):
        return b.error("`axis` of scan must be a constant integer", bound.span("axis"),
                       hint="axis = 1 runs over T of [B, T, D]")
    if not isinstance(reverse, bool):
        return b.error("`reverse` of scan must be true or false", bound.span("reverse"))
    if not _is_int(unroll) or unroll < 1:
        return b.error("`unroll` of scan must be an integer >= 1", bound.span("unroll"))
    if not -xs.type.rank <= axis < xs.type.rank:
        return b.error(f"axis {axis} is out of range for {xs.type}", bound.span("axis"))
    axis %= xs.type.rank
    step = TensorType(xs.type.dtype, xs.type.shape[:axis] + xs.type.shape[axis + 1:])
    instance = ref.instance or b.call_prefix(ref.gdef.name, None)
    built = build_cell(b, ref, step, span, instance)
    if built is None:
        return Poison()
    body, out_type, states = built
    inits = _initial_states(b, ref, body, states, bound["init"], bound.span("init"))
    if inits is None:
        return Poison()
    lengths = _lengths(b, ref, body, states, step, out_type, bound["lengths"],
                       bound.span("lengths"))
    if lengths is False:
        return Poison()
    extra = [] if lengths is None else [lengths]
    length = xs.type.shape[axis]
    out_stacked = TensorType(out_type.dtype, out_type.shape[:axis] + (length,) + out_type.shape[axis:]) \
        if axis <= out_type.rank else TensorType(out_type.dtype, (length,) + out_type.shape)
    return _loop_node(b, "scan", [xs, *inits.values(), *extra],
                      ["xs", *(f"init.{n}" for n in inits), *(["lengths"] if extra else [])],
                      {"body": body, "axis": axis, "reverse": reverse, "unroll": unroll,
                       "states": list(states)}, out_stacked, body, states, span)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _lengths(b: Builder, ref: GraphRef, body, states: dict, step: TensorType,
             out_type: TensorType, lengths, span: Span):
    """`lengths = n`: n: i32[B], B the batch axis (axis 0 of one step's input; the step's
    output and every state must have it first too). None when not given, False on error."""
    if lengths is None or (isinstance(lengths, Const) and lengths.value is None):
        return None
    if isinstance(lengths, Poison):
        return False
    if step.rank == 0:
        b.error(f"`lengths` of scan needs a batch axis, but one step of the input is {step}",
                span, hint="scan over a [B, T, ...] tensor, with lengths: i32[B]")
        return False
    batch = step.shape[0]
    if not isinstance(lengths, Tensor) or lengths.type.dtype not in INT_DTYPES or \
            lengths.type.rank != 1:
        got = lengths.type if isinstance(lengths, Tensor) else describe(lengths)
        b.error(f"`lengths` of scan must be integer lengths like i32[{batch}], one per "
                f"sequence, got {got}", span)
        return False
    if lengths.type.shape[0] != batch:
        b.error(f"`lengths` of scan is {lengths.type}, but the batch axis of the input is "
                f"{batch}", span, hint="one length per sequence of the batch")
        return False
    firsts = [("the output of a step", out_type)] + \
        [(f"state `{n}`", node(body, sid).type) for n, (sid, _) in states.items()]
    for what, t in firsts:
        if t.rank == 0 or t.shape[0] != batch:
            b.error(f"with `lengths`, {what} of {ref.gdef.name} must have the batch axis "
                    f"{batch} first, but it is {t}", span,
                    hint="lengths freeze each sequence's state and zero its outputs per "
                         "example of the batch")
            return False
    return lengths


def _initial_states(b: Builder, ref: GraphRef, body, states: dict, init, span: Span):
    """`init = {h = ...}` (or a scan's final `state` record) -> {state name: Tensor}."""
    if init is None or (isinstance(init, Const) and init.value is None):
        return {}
    if isinstance(init, Poison):
        return None
    if not isinstance(init, Record):
        b.error(f"`init` must be a record of states like {{h = ...}}, got {describe(init)}", span)
        return None
    out = {}
    for name, value in init.fields.items():
        if name not in states:
            b.error(f"{ref.gdef.name} has no state `{name}`", span,
                    hint=f"its states are {', '.join(states) or 'none'}")
            return None
        want = node(body, states[name][0]).type
        if not isinstance(value, Tensor) or value.type != want:
            got = value.type if isinstance(value, Tensor) else describe(value)
            b.error(f"initial state `{name}` is {got}, but {ref.gdef.name} declares {want}", span)
            return None
        out[name] = value
    return out


def _loop_node(b: Builder, op: str, inputs, arg_names, attrs, out_type, body, states, span,
               extra: dict | None = None):
    """A scan-like node: results (stacked outputs, *final states, *extra), read as a record
    {out, *extra, state} (generate's extra is `logp`)."""
    state_types = {n: node(body, sid).type for n, (sid, _) in states.items()}
    extra = extra or {}
    nid = b.node(op, inputs, arg_names, attrs,
                 (out_type, *state_types.values(), *extra.values()), span)
    out = Tensor(add_node(b.g, "getitem", [nid], ["x"], {"index": 0}, out_type, span,
                          b.scope.instance), out_type, f"the outputs of {op} at {span.short()}")
    fields = {}
    for i, (name, t) in enumerate(state_types.items()):
        gid = add_node(b.g, "getitem", [nid], ["x"], {"index": i + 1}, t, span, b.scope.instance)
        fields[name] = Tensor(gid, t, f"the final state `{name}`")
    record = {"out": out}
    for i, (name, t) in enumerate(extra.items()):
        gid = add_node(b.g, "getitem", [nid], ["x"], {"index": 1 + len(state_types) + i}, t,
                       span, b.scope.instance)
        record[name] = Tensor(gid, t, f"the `{name}` of {op} at {span.short()}")
    return Record({**record, "state": Record(fields)})


PICKS = ("argmax", "sample", "beam")
GENERATE = signature("cell, init = none, start, steps, pick = \"argmax\", stop = none, "
                     "temperature = 1.0")


def generate(b: Builder, args, kwargs, span, arg_spans, kw_spans):
    """`generate(cell, init = s, start = tokens, steps = N, pick = argmax)`: decoding.

    The cell takes the previous token (`start`'s type, e.g. i32[B]) and returns logits
    over the vocabulary (f32[B, V]); each step's pick is the next input. The result is
    `{out: i32[B, N], logp: f32[B], state: {...}}`, a `generate` node with the cell's
    `body` like scan; its results are (out, *final states, logp). Lowered by
    graphdl.lower.generate.
    """
    bound = bind(b, "generate", GENERATE, args, kwargs, span, arg_spans, kw_spans)
    if bound is None:
        return Poison()
    ref, start, steps, pick = bound["cell"], bound["start"], bound["steps"], bound["pick"]
    if any(isinstance(v, Poison) for v in (ref, start, steps, pick)):
        return Poison()
    if not isinstance(ref, GraphRef) or ref.gdef.kind != "cell":
        return b.error(f"the first argument of generate must be a cell, got {describe(ref)}",
                       bound.span("cell"), hint="generate(cell, start = tokens, steps = N): "
                                                "the cell maps a token to logits")
    if not isinstance(start, Tensor) or start.type.dtype not in ("i32", "i64"):
        got = start.type if isinstance(start, Tensor) else describe(start)
        return b.error(f"`start` of generate must be integer tokens like i32[B], got {got}",
                       bound.span("start"), hint="the first input token of each sequence, "
                                                 "e.g. zeros([B], \"i32\")")
    n = steps.value if isinstance(steps, Const) else None
    if isinstance(n, Dim) and n.is_int():
        n = int(n)
    if not (_is_int(n) and n >= 1) and not (isinstance(n, Dim) and not n.is_const()):
        return b.error("`steps` of generate must be a constant integer >= 1",
                       bound.span("steps"))
    choice = pick.value if isinstance(pick, Const) else None
    if not (choice in ("argmax", "sample") or (isinstance(choice, list) and choice[:1] == ["beam"])):
        return b.error("`pick` of generate is argmax, sample or beam(k)", bound.span("pick"))
    stop = bound["stop"].value if isinstance(bound["stop"], Const) else False
    if stop is not None and not (_is_int(stop) and stop >= 0):
        return b.error("`stop` of generate must be a constant token id >= 0",
                       bound.span("stop"))
    temperature = bound["temperature"].value if isinstance(bound["temperature"], Const) \
        else None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature > 0:
        return b.error("`temperature` of generate must be a constant number > 0",
                       bound.span("temperature"))
    if "temperature" in bound.spans and choice != "sample":
        # argmax and beam(k) rank tokens by their logits, which a temperature does not
        # reorder: accepting it would suggest it changes the result
        return b.error(f"`temperature` applies to pick = sample only; with pick = "
                       f"{_pick_text(choice)} it would change nothing",
                       bound.span("temperature"),
                       hint="drop `temperature`, or sample: pick = sample")
    instance = ref.instance or b.call_prefix(ref.gdef.name, None)
    built = build_cell(b, ref, start.type, span, instance)
    if built is None:
        return Poison()
    body, logits, states = built
    if not (logits.is_float() and logits.rank == start.type.rank + 1
            and logits.shape[:-1] == start.type.shape):
        want = TensorType("f32", start.type.shape + (Dim("V"),))
        return b.error(f"generate needs a cell that returns logits over the vocabulary, like "
                       f"{want}; `{ref.gdef.name}` returns {logits}", span,
                       hint="end the cell with a dense layer to the vocabulary size")
    inits = _initial_states(b, ref, body, states, bound["init"], bound.span("init"))
    if inits is None:
        return Poison()
    vocab = logits.shape[-1]
    if stop is not None and Dim.of(vocab).is_int() and stop >= int(Dim.of(vocab)):
        return b.error(f"`stop` of generate is token {stop}, but the vocabulary has "
                       f"{vocab} tokens", bound.span("stop"))
    out_type = TensorType(start.type.dtype, start.type.shape + (Dim.of(n),))
    return _loop_node(b, "generate", [start, *inits.values()],
                      ["start", *(f"init.{n}" for n in inits)],
                      {"body": body, "steps": n, "pick": choice, "vocab": vocab,
                       "stop": stop, "temperature": float(temperature),
                       "states": list(states)}, out_type, body, states, span,
                      extra={"logp": TensorType("f32", start.type.shape)})


def _pick_text(choice) -> str:
    return f"beam({choice[1]})" if isinstance(choice, list) else str(choice)


def pick_value(b: Builder, node):
    """generate's `pick = argmax | sample | beam(k)`, read from the syntax (`sample` is no
    name in scope, and beam(k) no op)."""
    if isinstance(node, A.Name) and node.id in ("argmax", "sample"):
        return Const(node.id)
    if isinstance(node, A.Call) and isinstance(node.func, A.Name) and node.func.id == "beam":
        values = [b.expr(a) for a in node.args] + [b.expr(k.value) for k in node.kwargs
                                                   if k.name == "k"]
        if len(values) == 1 and len(node.args) + len(node.kwargs) == 1 and \
                isinstance(values[0], Const) and _is_int(values[0].value) and values[0].value >= 1:
            return Const(["beam", values[0].value])
        return b.error("beam(k) needs one integer k >= 1, the beam width", node.span)
    return b.error("`pick` of generate is argmax, sample or beam(k)", node.span,
                   hint="argmax takes the most likely token (greedy decoding)")


def check_cell(b: Builder, ref: GraphRef) -> None:
    """Check a cell on its own: one step with its declared input type."""
    arg = ref.gdef.args[0] if ref.gdef.args else None
    if arg is None:
        b.error(f"cell `{ref.gdef.name}` needs an input argument", ref.gdef.span,
                hint=f"a cell takes the input of one step: cell {ref.gdef.name}(x: f32[B, D])")
        return
    scope = Scope(ref.gdef.name, "cell")
    with b.in_scope(scope):
        bind_consts(b, ref, ref.gdef.span, symbolic=True)
        step = b.resolve_type(arg.type)
    if step is not None:
        built = build_cell(b, ref, step, ref.gdef.span, ref.gdef.name, symbolic=True)
        if built is not None:
            body, out_type, states = built
            b.g.graph["cell_body"] = body
    _ = Dim
