"""Graph calls and statements: inlined graphs, `=`, `param`, `layer`, initializers.

A call of a graph is inlined: its body runs in a new `Scope` whose parameter prefix is
the call site's (`mlp.h.dense.w`). Statements other than `=` are looked up in the forms
table (`b.forms.statements`), since `~` and `state` live in higher modules.
"""

from __future__ import annotations

from pathlib import Path

from graphdl.dims import Dim, const_problem, float_problem
from graphdl.elaborate.binding import Arg, bind, signature
from graphdl.elaborate.build import Builder, Scope
from graphdl.elaborate.values import (
    Const,
    GraphRef,
    OpRef,
    Partial,
    Poison,
    SourceRef,
    Tensor,
    TupleV,
    describe,
)
from graphdl.errors import Span, did_you_mean
from graphdl.ops.training import MESH_AXES
from graphdl.parse import ast as A

MAX_INLINE_DEPTH = 32

# name -> signature; the defaults are those of graphdl.lower.init, shown in hints
INITIALIZERS = {name: signature(sig) for name, sig in {
    "zeros": "", "ones": "", "normal": "std = 1.0", "uniform": "a = -0.05, b = 0.05",
    "glorot": "", "he": "", "orthogonal": "", "load": "file, key",
    "vectors": "file, corpus, side = 'source'"}.items()}

#: The sides of a token source's vocabulary `vectors(..., side = ...)` may take.
VECTOR_SIDES = ("source", "target")


def inline_graph(b: Builder, ref: GraphRef, args, kwargs, span: Span, arg_spans, kw_spans,
                 instance: str | None):
    """`mlp(x)`: the graph's body, built in place (the forms table's call of a GraphRef)."""
    gdef = ref.gdef
    instance = instance or ref.instance
    if gdef.kind == "cell":
        return b.error(f"`{gdef.name}` is a cell (one time step); run it over a sequence with "
                       f"scan(xs, {gdef.name})", span)
    if b.depth >= MAX_INLINE_DEPTH:
        return b.error(f"graph `{gdef.name}` calls itself (directly or through other graphs)",
                       span, hint="graphs are inlined, so they cannot be recursive")
    bound = bind_args(b, gdef, args, kwargs, span, arg_spans, kw_spans)
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


def bind_args(b: Builder, gdef: A.GraphDef, args, kwargs, span: Span, arg_spans,
              kw_spans) -> list[tuple[Tensor, Span]] | None:
    """A graph's arguments, each a tensor, with where it is written."""
    bound = bind(b, gdef.name, [Arg(a.name) for a in gdef.args], args, kwargs, span, arg_spans,
                 kw_spans)
    if bound is None:
        return None
    out = []
    for n, v in bound.items():
        s = bound.span(n)
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
        problem = const_problem(value, f"`{c.name}` of {ref.gdef.name}")
        if problem:
            b.error(problem, span, hint="a constant of a graph is a size or a setting; it must "
                    "fit an int32 (or a finite float)")
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
    elif type(st) in b.forms.statements:  # `~`, `state`, `param`, `layer`
        if isinstance(st, A.Sample):
            b.scope.binding = st.target
        b.forms.statements[type(st)](b, st)
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
    """`glorot`, `normal(0.02)`, `load("w.safetensors", "key")` -> ("normal", 0.02).

    A bare name or a call without arguments is (name,): the runtime's defaults apply.
    """
    if isinstance(node, A.Name) and node.id in INITIALIZERS:
        if any(a.required for a in INITIALIZERS[node.id]):
            b.error(f"initializer `{node.id}` needs arguments", node.span,
                    hint=f"write {_initializer_text(node.id)}")
            return None
        return (node.id,)
    if isinstance(node, A.Call) and isinstance(node.func, A.Name) and node.func.id in INITIALIZERS:
        name = node.func.id
        args = [b.expr(a) for a in node.args]
        kwargs = {k.name: b.expr(k.value) for k in node.kwargs}
        for v, vnode in zip([*args, *kwargs.values()], [*node.args, *(k.value for k in node.kwargs)]):
            if isinstance(v, Poison):
                return None
            if isinstance(v, SourceRef) and name == "vectors":
                continue  # the corpus: a data source, named
            if not isinstance(v, Const):
                b.error(f"arguments of initializer `{name}` must be constants", vnode.span)
                return None
        bound = bind(b, name, INITIALIZERS[name], args, kwargs, node.span,
                     [a.span for a in node.args], {k.name: k.span for k in node.kwargs})
        if bound is None:
            return None
        if not args and not kwargs:
            return (name,)
        if name == "vectors":
            return _vectors(b, bound, node.span)
        values = [v.value for v in bound.values()]
        if name == "load":
            if not all(isinstance(v, str) for v in values):
                b.error('load needs a file and a key: load("file.safetensors", "key")', node.span)
                return None
            path = _existing_file(b, values[0], bound.span("file"))
            if path is None:
                return None
            values[0] = str(path)
            return (name, *values)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            b.error(f"the arguments of initializer `{name}` must be numbers", node.span)
            return None
        for key, v in bound.items():
            problem = float_problem(v.value, f"`{key}` of {name}()")
            if problem:
                b.error(problem, bound.span(key))
                return None
        if name == "normal" and values[0] < 0:
            b.error(f"the std of normal() must be >= 0, got {values[0]}", bound.span("std"))
            return None
        if name == "uniform" and not values[0] < values[1]:
            b.error(f"uniform(a, b) needs a < b, got {values[0]} and {values[1]}", node.span)
            return None
        return (name, *values)
    name = node.func.id if isinstance(node, A.Call) and isinstance(node.func, A.Name) else (
        node.id if isinstance(node, A.Name) else "")
    shown = f"`{name}`" if name else b.text(node.span)
    b.error(f"unknown initializer {shown}", node.span,
            did_you_mean(name, INITIALIZERS) or f"initializers are {', '.join(INITIALIZERS)}")
    return None


def _existing_file(b: Builder, given: str, span: Span) -> Path | None:
    """The file an initializer names, relative to the .gdl file; None (reported) if it
    lies outside --data-root or is not there."""
    path = b.program.resolve_path(given, span)
    if path is None:  # outside --data-root: reported
        return None
    try:
        found = path.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        b.error(f"cannot find the file {given} ({path})", span,
                hint="a path in a .gdl file is relative to that file")
        return None
    return path


def _vectors(b: Builder, bound, span: Span) -> tuple | None:
    """`vectors("w2v.txt", corpus)` -> ("vectors", path, "corpus", "source"). The rows are
    matched to the corpus's vocabulary by token when training starts (the runtime loads
    the data); here only what the file's text says is checked."""
    file, corpus, side = bound["file"], bound["corpus"], bound["side"].value
    if not isinstance(file, Const) or not isinstance(file.value, str):
        b.error('vectors needs a file name first: vectors("w2v.txt", corpus)', bound.span("file"))
        return None
    if not isinstance(corpus, SourceRef):
        b.error("the second argument of vectors() is a data source whose vocabulary names "
                "the rows, got " + describe(corpus), bound.span("corpus"),
                hint='write vectors("w2v.txt", corpus) for a line `data corpus = text(...)`')
        return None
    if side not in VECTOR_SIDES:
        b.error(f"side of vectors() is 'source' or 'target', got {side!r}", bound.span("side"),
                hint="a parallel source has a source-language and a target-language vocabulary")
        return None
    # not required to exist yet: a vectors file is usually written by another model's run
    # (`graphdl vectors`), so `graphdl check` of this one must not wait for it; training
    # reports a missing file at this line
    path = b.program.resolve_path(file.value, bound.span("file"))
    if path is None:  # outside --data-root: reported
        return None
    return ("vectors", str(path), corpus.name, side)


def _initializer_text(name: str) -> str:
    return name + (f"({', '.join(a.name for a in INITIALIZERS[name])})" if INITIALIZERS[name] else "")


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
        if b.concrete:
            b.error(f"the shape of param `{st.name}` must be known; {', '.join(unknown)} "
                    "is not bound here", st.type.span)
    if init[0] == "vectors" and (len(type_.shape) != 2 or not type_.is_float()):
        b.error(f"vectors() fills a table of one row per token, f32[V, D], but `{st.name}` is "
                f"{type_}", st.type.span, hint="declare it as f32[V, D]: V tokens, D numbers each")
        b.bind(st.name, Poison(), st.span)
        return
    shard = _shard_spec(b, st, type_)
    name = f"{b.scope.instance}.{st.name}" if b.scope.instance else st.name
    b.bind(st.name, b.param_node(name, type_, init, st.span, frozen=st.frozen, shard=shard),
           st.span)


def _shard_spec(b: Builder, st: A.Param, type_) -> tuple | None:
    """`shard [_, model]`: one mesh axis (or `_`) per axis of the type, each mesh axis at
    most once -> ("None", "model") as the IR keeps it (None: not split)."""
    if st.shard is None:
        return None
    if len(st.shard) != len(type_.shape):
        n = len(st.shard)
        b.error(f"`shard` names {n} ax{'is' if n == 1 else 'es'}, but `{st.name}` is {type_} "
                f"with {len(type_.shape)}", st.shard_span,
                hint="give one entry per axis: a mesh axis, or `_` for an axis kept whole")
        return None
    spec: list = []
    for axis in st.shard:
        if axis == "_":
            spec.append(None)
        elif axis not in MESH_AXES:
            b.error(f"unknown mesh axis `{axis}` in `shard`; the mesh axes are "
                    f"{', '.join(MESH_AXES)}", st.shard_span,
                    did_you_mean(axis, MESH_AXES) or "write `_` for an axis kept whole")
            return None
        elif axis in spec:
            b.error(f"`shard` splits two axes of `{st.name}` over the mesh axis `{axis}`",
                    st.shard_span, hint="a mesh axis splits at most one axis of a parameter")
            return None
        else:
            spec.append(axis)
    return tuple(spec)


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


def graph_layer(b: Builder, ref: GraphRef, node: A.Field):
    """`charlm.step`: the `layer step` of graph charlm's trained instance, so another
    graph (a sampler) uses the very parameters a train block trained (`charlm.step.*`).
    Of a `layer head = small[8]` of this graph, `head.d` is that instance's layer d."""
    gdef, name = ref.gdef, node.name
    if gdef.kind == "cell":
        return b.error(f"`{gdef.name}` is a cell; only a graph's layers can be named as "
                       f"GRAPH.LAYER", node.span,
                       hint="declare the cell as a `layer` of a graph and name it GRAPH.LAYER")
    layers = {st.name: st for st in gdef.body if isinstance(st, A.Layer)}
    st = layers.get(name)
    if st is None:
        listed = f"its layers are {', '.join(layers)}" if layers else \
            f"it declares no `layer`; only a layer of {gdef.name} can be named {gdef.name}.NAME"
        return b.error(f"graph `{gdef.name}` has no layer `{name}`", node.span,
                       did_you_mean(name, list(layers)) or listed)
    trained = ref.instance in (None, gdef.name)  # not a `layer` instance of this graph
    if trained and ref.consts != b.program.consts_for(gdef):
        return b.error(f"`{b.text(node.value.span).strip('`')}.{name}` gives {gdef.name} its "
                       "own constants, but a trained instance has the file's", node.span,
                       hint=f"write {gdef.name}.{name}; set a constant with --set "
                            f"{gdef.name}.NAME=VALUE")
    scope = Scope(ref.instance or gdef.name, "graph")
    with b.in_scope(scope):
        if not bind_consts(b, ref, node.span):
            return Poison()
        layer_statement(b, st)
    return scope.values.get(name, Poison())


__all__ = ["INITIALIZERS", "bind_args", "bind_consts", "check_returns", "graph_layer",
           "initializer",
           "inline_graph", "layer_statement", "param_statement", "run_body", "statement"]
