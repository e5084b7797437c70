"""Calls and statements: ops, inlined graphs, shared layers, special forms."""

from __future__ import annotations

from dataclasses import dataclass

from graphdl.dims import Dim
from graphdl.elaborate.build import INITIALIZERS, Builder, Scope
from graphdl.elaborate.values import (
    Const,
    DistV,
    GraphRef,
    ListV,
    OpRef,
    Partial,
    Poison,
    Record,
    Setting,
    SplitRef,
    Tensor,
    TupleV,
    describe,
)
from graphdl.errors import Span, did_you_mean
from graphdl.parse import ast as A

MAX_INLINE_DEPTH = 32


@dataclass
class Special:
    """A built-in form that is not a plain op: scan, distributions, optimizers, ..."""

    name: str


def call(b: Builder, node: A.Call):
    if isinstance(node.func, A.Name):
        callee = b.lookup(node.func.id, node.func.span, called=True)
    else:
        callee = b.expr(node.func)
    if isinstance(callee, Poison):
        return callee
    args = [b.expr(a) for a in node.args]
    if isinstance(callee, Special) and callee.name == "generate":
        from graphdl.elaborate.cells import pick_value
        kwargs = {k.name: pick_value(b, k.value) if k.name == "pick" else b.expr(k.value)
                  for k in node.kwargs}
    else:
        kwargs = {k.name: b.expr(k.value) for k in node.kwargs}
    kw_spans = {k.name: k.span for k in node.kwargs}
    if len(kw_spans) != len(node.kwargs):
        seen = set()
        for k in node.kwargs:
            if k.name in seen:
                return b.error(f"keyword `{k.name}` is given twice", k.span)
            seen.add(k.name)
    arg_spans = [a.span for a in node.args]
    return invoke(b, callee, args, kwargs, node.stage or node.span, arg_spans, kw_spans, node)


def invoke(b: Builder, callee, args, kwargs, span: Span, arg_spans, kw_spans, node=None,
           instance: str | None = None):
    if any(isinstance(v, Poison) for v in [*args, *kwargs.values()]):
        return Poison()
    if isinstance(callee, OpRef):
        if callee.name == "mean" and args and isinstance(args[0], DistV):
            from graphdl.elaborate.stochastic import dist_function
            return dist_function(b, "mean", args, kwargs, span)
        return b.apply_op(callee.name, args, kwargs, span, arg_spans, instance, kw_spans)
    if isinstance(callee, GraphRef):
        return inline_graph(b, callee, args, kwargs, span, arg_spans, instance or callee.instance)
    if isinstance(callee, Partial):
        merged = {**callee.kwargs, **kwargs}
        return invoke(b, callee.callee, [*args, *callee.args], merged, span,
                      arg_spans + [callee.span] * len(callee.args), kw_spans, node,
                      callee.instance)
    if isinstance(callee, Special):
        from graphdl.elaborate.specials import SPECIALS
        return SPECIALS[callee.name](b, args, kwargs, span, arg_spans, kw_spans)
    if isinstance(callee, SplitRef):
        return b.program.batch_of(b, callee, args, kwargs, span, kw_spans)
    return b.error(f"{describe(callee)} cannot be called", span)


def inline_graph(b: Builder, ref: GraphRef, args, kwargs, span: Span, arg_spans,
                 instance: str | None):
    gdef = ref.gdef
    if gdef.kind == "cell":
        return b.error(f"`{gdef.name}` is a cell (one time step); run it over a sequence with "
                       f"scan(xs, {gdef.name})", span)
    if b.depth >= MAX_INLINE_DEPTH:
        return b.error(f"graph `{gdef.name}` calls itself (directly or through other graphs)",
                       span, hint="graphs are inlined, so they cannot be recursive")
    bound = bind_args(b, gdef, args, kwargs, span, arg_spans)
    if bound is None:
        return Poison()
    prefix = instance or b.call_prefix(gdef.name, None)
    scope = Scope(prefix, "graph")
    b.depth += 1
    try:
        with b.in_scope(scope):
            if not bind_consts(b, ref, span):
                return Poison()
            # resolve every declared type before unifying any, so that a dim bound by one
            # argument and contradicted by another is reported as bound twice
            declared_types = [b.resolve_type(arg.type) for arg in gdef.args]
            if any(t is None for t in declared_types):
                return Poison()
            for arg, declared, (value, vspan) in zip(gdef.args, declared_types, bound):
                if not b.unify(declared, value.type, vspan, f"argument `{arg.name}` of "
                               f"{gdef.name}", arg.type.span):
                    return Poison()
                b.bind(arg.name, value, arg.span)
            results = run_body(b, gdef)
            return check_returns(b, gdef, results, span)
    finally:
        b.depth -= 1


def bind_args(b: Builder, gdef: A.GraphDef, args, kwargs, span, arg_spans):
    names = [a.name for a in gdef.args]
    if len(args) > len(names):
        b.error(f"{gdef.name} takes {len(names)} argument(s), got {len(args)}", span,
                hint=f"its arguments are {', '.join(names) or 'none'}")
        return None
    values = dict(zip(names, zip(args, arg_spans + [span] * len(args))))
    for k, v in kwargs.items():
        if k not in names:
            b.error(f"{gdef.name} has no argument `{k}`", span, did_you_mean(k, names))
            return None
        values[k] = (v, span)
    out = []
    for n in names:
        if n not in values:
            b.error(f"{gdef.name} is missing its argument `{n}`", span)
            return None
        v, s = values[n]
        if isinstance(v, Const) and isinstance(v.value, (int, float)):
            v = b.const_tensor(v.value, s)
        if not isinstance(v, Tensor):
            b.error(f"argument `{n}` of {gdef.name} must be a tensor, got {describe(v)}", s)
            return None
        out.append((v, s))
    return out


def bind_consts(b: Builder, ref: GraphRef, span: Span, symbolic: bool = False) -> bool:
    """Put a graph's constants in scope: given values, else defaults, else symbols."""
    for c in ref.gdef.consts:
        if c.name in ref.consts:
            value = ref.consts[c.name]
        elif c.default is not None:
            v = b.expr(c.default)
            if isinstance(v, Poison):
                return False
            if not isinstance(v, Const):
                b.error(f"the default of `{c.name}` must be a constant", c.default.span)
                return False
            value = v.value
        elif symbolic:
            value = Dim(c.name)
        else:
            b.error(f"{ref.gdef.name} needs a value for its constant `{c.name}`", span,
                    hint=f"write {ref.gdef.name}[{c.name} = ...]")
            return False
        b.scope.values[c.name] = Const(value)
    return True


def run_body(b: Builder, gdef: A.GraphDef) -> list | None:
    results = None
    for st in gdef.body:
        if results is not None:
            b.error("this statement comes after `return` and never runs", st.span)
            break
        if isinstance(st, A.Return):
            b.scope.binding = "out"
            results = [b.expr(v) for v in st.values]
        else:
            statement(b, st)
    if results is None:
        b.error(f"{gdef.kind} `{gdef.name}` has no `return`", gdef.span,
                hint="end the body with `return <value>`")
    return results


def check_returns(b: Builder, gdef: A.GraphDef, results, span: Span):
    if results is None or any(isinstance(r, Poison) for r in results):
        return Poison()
    if len(results) == 1 and isinstance(results[0], TupleV):
        results = results[0].items
    if gdef.returns is not None:
        if len(gdef.returns) != len(results):
            return b.error(f"{gdef.name} returns {len(results)} value(s), but its signature "
                           f"declares {len(gdef.returns)}", gdef.body[-1].span if gdef.body else span)
        ret_stmt = next((s for s in gdef.body if isinstance(s, A.Return)), None)
        for i, (texpr, value) in enumerate(zip(gdef.returns, results)):
            where = ret_stmt.values[i].span if ret_stmt and i < len(ret_stmt.values) else span
            if not isinstance(value, Tensor):
                return b.error(f"{gdef.name} must return a tensor, got {describe(value)}", where)
            declared = b.resolve_type(texpr)
            if declared is None or not b.unify(declared, value.type, where,
                                               f"the result of {gdef.name}", texpr.span):
                return Poison()
    return results[0] if len(results) == 1 else TupleV(results)


def statement(b: Builder, st: A.Node) -> None:
    if isinstance(st, A.Assign):
        b.scope.binding = st.targets[0]
        value = b.expr(st.value)
        assign(b, st.targets, value, st.span)
    elif isinstance(st, A.Sample):
        from graphdl.elaborate.stochastic import sample_statement
        b.scope.binding = st.target
        sample_statement(b, st)
    elif isinstance(st, A.State):
        from graphdl.elaborate.cells import state_statement
        state_statement(b, st)
    elif isinstance(st, A.Param):
        param_statement(b, st)
    elif isinstance(st, A.Layer):
        layer_statement(b, st)
    else:
        keyword = {A.Step: "step", A.Evaluate: "evaluate", A.Over: "over",
                   A.Checkpoint: "checkpoint"}.get(type(st))
        if keyword:
            b.error(f"`{keyword}` is only allowed in a train block", st.span)
        elif isinstance(st, A.ExprStmt):
            b.error("this expression's value is not used", st.span,
                    hint="bind it to a name (`y = ...`) or return it")
        elif isinstance(st, A.Return):
            b.error("`return` belongs in a graph or cell body", st.span)


def assign(b: Builder, targets: list[str], value, span: Span) -> None:
    if len(targets) == 1:
        b.bind(targets[0], value, span)
        return
    if isinstance(value, Poison):
        for t in targets:
            b.bind(t, value, span)
        return
    if not isinstance(value, TupleV) or len(value.items) != len(targets):
        n = len(value.items) if isinstance(value, TupleV) else 1
        b.error(f"cannot unpack {n} value(s) into {len(targets)} names", span)
        for t in targets:
            b.bind(t, Poison(), span)
        return
    for t, v in zip(targets, value.items):
        b.bind(t, v, span)


def initializer(b: Builder, node: A.Node) -> tuple | None:
    """`glorot`, `normal(0.02)`, `load("w.safetensors", "key")` -> ("normal", 0.02)."""
    if isinstance(node, A.Name) and node.id in INITIALIZERS:
        if INITIALIZERS[node.id] and node.id not in ("normal", "uniform"):
            b.error(f"initializer `{node.id}` needs arguments", node.span)
            return None
        return (node.id,)
    if isinstance(node, A.Call) and isinstance(node.func, A.Name) and node.func.id in INITIALIZERS:
        name = node.func.id
        values = []
        for a in node.args:
            v = b.expr(a)
            if not isinstance(v, Const):
                b.error(f"arguments of initializer `{name}` must be constants", a.span)
                return None
            values.append(v.value)
        if node.kwargs:
            b.error(f"initializer `{name}` takes positional arguments only", node.kwargs[0].span,
                    hint=f"write {name}({', '.join(INITIALIZERS[name])})")
            return None
        if name == "load":
            if len(values) != 2 or not all(isinstance(v, str) for v in values):
                b.error('load needs a file and a key: load("file.safetensors", "key")', node.span)
                return None
            path = b.program.resolve_path(values[0], node.span)
            try:
                found = path.is_file()
            except (OSError, ValueError):
                found = False
            if not found:
                b.error(f"cannot find the file {values[0]} ({path})", node.args[0].span,
                        hint="a path in a .gdl file is relative to that file")
                return None
            values[0] = str(path)
            return (name, *values)
        params = INITIALIZERS[name]
        if len(values) not in ((0, len(params)) if name == "uniform" else range(len(params) + 1)):
            takes = f"{len(params)} argument(s)" if params else "no arguments"
            b.error(f"initializer `{name}` takes {takes}, got {len(values)}", node.span,
                    hint=f"write {name}({', '.join(params)})" if params else f"write {name}")
            return None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            b.error(f"the arguments of initializer `{name}` must be numbers", node.span)
            return None
        if name == "normal" and values and values[0] < 0:
            b.error(f"the std of normal() must be >= 0, got {values[0]}", node.args[0].span)
            return None
        if name == "uniform" and values and not values[0] < values[1]:
            b.error(f"uniform(a, b) needs a < b, got {values[0]} and {values[1]}", node.span)
            return None
        return (name, *values)
    name = node.func.id if isinstance(node, A.Call) and isinstance(node.func, A.Name) else (
        node.id if isinstance(node, A.Name) else "")
    shown = f"`{name}`" if name else b.text(node.span)
    b.error(f"unknown initializer {shown}", node.span,
            did_you_mean(name, INITIALIZERS) or f"initializers are {', '.join(INITIALIZERS)}")
    return None


def declare(b: Builder, name: str, what: str, span: Span) -> bool:
    """A `param` or `layer` name is declared once per body (a second would share silently)."""
    first = b.scope.declared.get(name)
    if first is not None:
        b.error(f"{what} `{name}` is declared twice", span,
                notes=[f"first declared at {first}"], hint="give each one its own name")
        return False
    b.scope.declared[name] = span
    return True


def param_statement(b: Builder, st: A.Param) -> None:
    if not declare(b, st.name, "param", st.span):
        return
    type_ = b.resolve_type(st.type)
    init = initializer(b, st.init)
    if type_ is None or init is None:
        b.bind(st.name, Poison(), st.span)
        return
    if any(not d.is_int() for d in type_.shape) and b.scope.kind != "check":
        unknown = [str(d) for d in type_.shape if not d.is_int()]
        if b.program.concrete:
            b.error(f"the shape of param `{st.name}` must be known; {', '.join(unknown)} "
                    "is not bound here", st.type.span)
    name = f"{b.scope.instance}.{st.name}" if b.scope.instance else st.name
    b.bind(st.name, b.param_node(name, type_, init, st.span, frozen=st.frozen), st.span)


def layer_statement(b: Builder, st: A.Layer) -> None:
    if not declare(b, st.name, "layer", st.span):
        return
    instance = f"{b.scope.instance}.{st.name}" if b.scope.instance else st.name
    node = st.value
    if isinstance(node, A.Call):
        callee = b.expr(node.func)
        if isinstance(callee, Poison):
            b.bind(st.name, callee, st.span)
            return
        if not isinstance(callee, (OpRef, GraphRef)):
            b.error(f"`layer` needs an op, graph or cell, got {describe(callee)}", node.func.span)
            b.bind(st.name, Poison(), st.span)
            return
        args = [b.expr(a) for a in node.args]
        kwargs = {k.name: b.expr(k.value) for k in node.kwargs}
        value = Partial(callee, args, kwargs, instance, node.span)
    else:
        callee = b.expr(node)
        if isinstance(callee, GraphRef):
            value = GraphRef(callee.gdef, callee.consts, instance)
        elif isinstance(callee, OpRef):
            value = Partial(callee, [], {}, instance, node.span)
        elif isinstance(callee, Poison):
            value = callee
        else:
            value = b.error(f"`layer` needs an op, graph or cell, got {describe(callee)}", node.span)
    b.bind(st.name, value, st.span)


__all__ = ["Special", "call", "invoke", "statement", "run_body", "bind_consts", "Record",
           "ListV", "DistV", "Setting"]
