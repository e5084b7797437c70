"""Build the IR of a graph: name resolution and shape/dtype inference in one walk.

Names and shapes are resolved together because a layer's parameters take their shapes
from its input (`dense(x, 10)` owns a `w: f32[D, 10]` only once `x: f32[B, D]` is known).
User graphs are inlined at each call site with their own parameter prefix; a cell becomes
the body IR of a `scan` node.

    graph mlp(x: f32[B, D]) -> f32[B, 10] { return x |> dense(10) }
    ==>
    ir mlp(%0)
      %0 = input(name="x") : f32[B, D]
      %1 = param(name="mlp.out.dense.w", init=["glorot"]) : f32[D, 10]
      %2 = param(name="mlp.out.dense.b", init=["zeros"]) : f32[10]
      %3 = dense(%0, w=%1, b=%2, units=10, bias=true) : f32[B, 10]
      return %3
"""

from __future__ import annotations

from contextlib import contextmanager

from graphdl.dims import (
    DTYPES,
    MAX_PARAMS,
    Dim,
    DimTooLarge,
    TensorType,
    elements,
    int_problem,
    size_problem,
)
from graphdl.elaborate.binding import bind, signature_text
from graphdl.elaborate.folding import describe_value, fold, is_number, plain
from graphdl.elaborate.indexing import graph_constants, index_tensor
from graphdl.elaborate.values import (
    Const,
    DistV,
    GraphRef,
    ListV,
    OpRef,
    Partial,
    Poison,
    Record,
    SourceRef,
    Special,
    SplitRef,
    Tensor,
    TupleV,
    describe,
)
from graphdl.errors import Span, UserError, did_you_mean
from graphdl.ir.graph import IR, add_node, new_ir, node
from graphdl.ops import REGISTRY, ShapeError
from graphdl.ops.math import OPERATOR_OPS
from graphdl.ops.registry import check_constant
from graphdl.parse import ast as A

# ops spelled as operators (`+`, `==`): never suggested for a misspelled name
OPERATOR_NAMES = set(OPERATOR_OPS.values()) | {"neg"}


class Scope:
    """Local names of one graph instance, with its dims and constants."""

    def __init__(self, instance: str, kind: str = "graph"):
        self.values: dict[str, object] = {}
        self.where: dict[str, Span] = {}
        self.dims: dict[str, tuple[Dim, Span | None]] = {}
        self.instance = instance
        self.kind = kind  # "graph", "cell" or "train"
        self.binding = "out"
        self.counters: dict[tuple[str, str], int] = {}
        self.states: dict[str, int] = {}
        self.declared: dict[str, Span] = {}  # `param` and `layer` names, each declared once


class Builder:
    """Elaborates graphs into one IR; collects diagnostics rather than stopping."""

    def __init__(self, program, ir: IR, diagnostics: list, concrete: bool = False):
        self.program = program  # graphdl.elaborate.program.Program
        self.forms = program.forms  # how calls and statements reach cells, stochastic, train
        self.g = ir
        self.diagnostics = diagnostics
        # building for concrete argument types (a compiled call), not checking with symbols
        self.concrete = concrete
        self.scope = Scope("")
        self.depth = 0
        self.param_elements = 0  # known parameter elements so far, against MAX_PARAMS

    # -- diagnostics ---------------------------------------------------------
    def error(self, message: str, span: Span | None, hint: str | None = None, notes=()) -> Poison:
        self.diagnostics.append(UserError(message, span, hint, notes).diagnostic)
        return Poison()

    def text(self, span: Span) -> str:
        return self.program.snippet(span)

    @contextmanager
    def in_scope(self, scope: Scope):
        saved = self.scope
        self.scope = scope
        try:
            yield scope
        finally:
            self.scope = saved

    # -- lookups -------------------------------------------------------------
    def lookup(self, name: str, span: Span, called: bool = False):
        """What `name` means here; `called` when it is written as a call (`relux(x)`)."""
        if name in self.scope.values:
            return self.scope.values[name]
        if name in self.scope.dims:
            return Const(self.scope.dims[name][0])
        found = self.program.lookup_global(name, self.scope.kind == "train")
        if found is not None:
            return found
        candidates = list(self.scope.values) + [
            n for n in self.program.global_names() if n not in OPERATOR_NAMES]
        if called:
            return self.error(f"unknown operation `{name}`", span,
                              did_you_mean(name, candidates))
        return self.error(f"undefined name `{name}`", span, did_you_mean(name, candidates))

    def bind(self, name: str, value, span: Span) -> None:
        if isinstance(value, Tensor) and not value.origin.startswith("`"):
            value = Tensor(value.node, value.type, f"`{name}`, bound at {span.short()}")
        self.scope.values[name] = value
        self.scope.where[name] = span

    # -- nodes ---------------------------------------------------------------
    def node(self, op: str, inputs: list[Tensor], args: list[str], attrs: dict,
             type_, span: Span | None) -> int:
        return add_node(self.g, op, [t.node for t in inputs], args, attrs, type_, span,
                        self.scope.instance)

    def const_tensor(self, value, span: Span, like: TensorType | None = None) -> Tensor:
        if isinstance(value, bool):
            dtype = "bool"
        elif isinstance(value, int) or (isinstance(value, Dim) and value.is_int()):
            dtype = like.dtype if like is not None and like.dtype != "bool" else "i32"
            value = int(value)
        elif isinstance(value, Dim):  # a symbolic dim used as a number, e.g. `x / H`
            dtype = like.dtype if like is not None and like.dtype != "bool" else "i32"
        else:
            dtype = like.dtype if like is not None and like.is_float() else "f32"
            value = float(value)
        t = TensorType(dtype, ())
        nid = self.node("const", [], [], {"value": value, "dtype": dtype}, t, span)
        return Tensor(nid, t, f"the constant {value}")

    def param_node(self, name: str, type_: TensorType, init: tuple, span: Span,
                   kind: str = "param", frozen: bool = False,
                   shard: tuple | None = None) -> Tensor:
        """A parameter (or statistic) by its full name; a second use shares the first."""
        existing = self.g.graph.setdefault("params_by_name", {}).get(name)
        if existing is not None:
            before = node(self.g, existing).type
            if before != type_:
                return self.error(f"the shared layer `{name}` is used with {type_} here but "
                                  f"{before} before", span,
                                  hint="a shared layer keeps one parameter shape")
            return Tensor(existing, type_, f"parameter `{name}`")
        problem = size_problem(type_.shape, f"parameter `{name}` ({type_})")
        if problem:
            return self.error(problem, span, hint="a tensor this large cannot be allocated")
        count = elements(type_.shape)
        if count:
            total = self.param_elements = self.param_elements + count
            if total > MAX_PARAMS >= total - count:  # said once, where the limit is passed
                return self.error(
                    f"the parameters come to {total} elements with `{name}` ({type_}); the "
                    f"limit is 2^33 ({MAX_PARAMS}) parameter elements in all", span,
                    hint="a model this large cannot be allocated")
        attrs = {"name": name, "init": init, "frozen": frozen}
        if shard is not None:  # only where declared: other IRs print as they always did
            attrs["shard"] = shard
        nid = self.node(kind, [], [], attrs, type_, span)
        self.g.graph["params_by_name"][name] = nid
        return Tensor(nid, type_, f"parameter `{name}`")

    def call_prefix(self, opname: str, instance: str | None) -> str:
        """`mlp.h.dense`, then `mlp.h.dense_1` for the second dense in binding h."""
        if instance is not None:
            return instance
        key = (self.scope.binding, opname)
        k = self.scope.counters.get(key, 0)
        self.scope.counters[key] = k + 1
        parts = [p for p in (self.scope.instance, self.scope.binding) if p]
        return ".".join(parts + [opname if k == 0 else f"{opname}_{k}"])

    def describe_operand(self, span: Span, value: Tensor) -> str:
        """`x` is f32[B, D], the argument at 1:9 -- for the notes of a shape error."""
        text = self.text(span)
        origin = value.origin
        if origin.startswith(text) and text.startswith("`"):
            return f"{text} is {value.type}{origin[len(text):]}"
        if origin.startswith(("`", "parameter", "state", "the final state")):
            return f"{text} is {value.type} ({origin})"
        return f"{text} is {value.type}"

    # -- types ---------------------------------------------------------------
    def resolve_type(self, texpr: A.TypeExpr, bind: bool = False) -> TensorType | None:
        if texpr.dtype not in DTYPES:
            self.error(f"unknown dtype `{texpr.dtype}`", texpr.span,
                       did_you_mean(texpr.dtype, DTYPES) or f"dtypes are {', '.join(DTYPES)}")
            return None
        dims = []
        for d in texpr.dims:
            dim = self.dim_expr(d, bind)
            if dim is None:
                return None
            if dim.is_const() and dim.const() < 0:
                self.error(f"a dim cannot be negative, got {dim}", d.span)
                return None
            problem = int_problem(int(dim.const()), "this dim", int32=True) \
                if dim.is_const() else None
            if problem:
                self.error(problem, d.span, hint="the limit is 2^31 elements in one tensor")
                return None
            dims.append(dim)
        problem = size_problem(dims, f"{texpr.dtype}[{', '.join(str(d) for d in dims)}]")
        if problem:
            self.error(problem, texpr.span, hint="a tensor this large cannot be allocated")
            return None
        return TensorType(texpr.dtype, tuple(dims))

    def dim_expr(self, node: A.Node, bind: bool = False) -> Dim | None:
        """A dim written in a type: ints, names, and + - * / on them."""
        try:
            return self._dim_expr(node, bind)
        except DimTooLarge as err:
            self.error(err.message, node.span,
                       hint="write a name for the product and bind it, e.g. a graph constant")
            return None

    def _dim_expr(self, node: A.Node, bind: bool = False) -> Dim | None:
        if isinstance(node, A.Num) and isinstance(node.value, int):
            return Dim(node.value)
        if isinstance(node, A.Name):
            if node.id in self.scope.dims:
                return self.scope.dims[node.id][0]
            value = self.scope.values.get(node.id)
            if isinstance(value, Const) and isinstance(value.value, (int, Dim)) \
                    and not isinstance(value.value, bool):
                return Dim.of(value.value)
            return Dim(node.id)  # a symbolic dim, bound by unification
        if isinstance(node, A.BinOp) and node.op in "+-*/":
            a, b = self._dim_expr(node.left), self._dim_expr(node.right)
            if a is None or b is None:
                return None
            if node.op == "/":
                if not b.is_const() or b.const() == 0:
                    self.error("a dim can only be divided by a nonzero number", node.span)
                    return None
                return a / b
            return {"+": a + b, "-": a - b, "*": a * b}[node.op]
        self.error("a dim must be an integer, a name, or arithmetic on them", node.span)
        return None

    def unify(self, declared: TensorType, actual: TensorType, where: Span, what: str,
              decl_span: Span) -> bool:
        """Bind the declared type's bare names to the actual dims; check the rest."""
        if declared.dtype != actual.dtype:
            self.error(f"{what} is {actual}, but {declared} is declared", where,
                       notes=[f"declared at {decl_span}"])
            return False
        if len(declared.shape) != len(actual.shape):
            self.error(f"{what} has rank {actual.rank} ({actual}), but {declared} is declared",
                       where, notes=[f"declared at {decl_span}"])
            return False
        env = {k: v for k, (v, _) in self.scope.dims.items()}
        for axis, (d, a) in enumerate(zip(declared.shape, actual.shape)):
            syms = d.symbols()
            if len(d.terms) == 1 and len(syms) == 1 and d == Dim(next(iter(syms))):
                name = next(iter(syms))
                if name in self.scope.dims:
                    bound, at = self.scope.dims[name]
                    if bound != a:
                        loc = f" at {at}" if at else ""
                        self.error(f"dim {name} is {a} here, but it was bound to {bound}{loc}",
                                   where, notes=[f"{what} is {actual}"])
                        return False
                else:
                    self.scope.dims[name] = (a, where)
                    env[name] = a
                continue
            expected = d.substitute(env)
            if expected.is_const() and not expected.is_int():
                # name the bindings that made it fractional: they point at the call site
                bound = [f"{k} = {v}, bound at {at}" for k, (v, at) in self.scope.dims.items()
                         if at is not None and v.is_int()]
                self.error(f"axis {axis} of {what} is declared {self.program.snippet(decl_span)},"
                           f" which makes it {expected}: not a whole number", where,
                           notes=bound[:3] + [f"declared at {decl_span}"],
                           hint="a dim divided by a number must divide exactly")
                return False
            if expected != a:
                shown = str(d) if expected == d else f"{d} = {expected}"
                self.error(f"{what} is {actual}, but {declared} is declared", where,
                           notes=[f"axis {axis} is {a} here, but {shown} is declared",
                                  f"declared at {decl_span}"])
                return False
        return True

    # -- expressions ---------------------------------------------------------
    def expr(self, node: A.Node):
        method = getattr(self, "expr_" + type(node).__name__)
        return method(node)

    def expr_Num(self, node: A.Num):
        return Const(node.value)

    def expr_Str(self, node: A.Str):
        return Const(node.value)

    def expr_Bool(self, node: A.Bool):
        return Const(node.value)

    def expr_Name(self, node: A.Name):
        return self.lookup(node.id, node.span)

    def expr_ListLit(self, node: A.ListLit):
        items = [self.expr(i) for i in node.items]
        if any(isinstance(i, Poison) for i in items):
            return Poison()
        if all(isinstance(i, Const) for i in items):
            return Const([i.value for i in items])
        return ListV(items)

    def expr_RecordLit(self, node: A.RecordLit):
        fields = {}
        for name, v in node.fields:
            if name in fields:
                return self.error(f"field `{name}` is given twice in this record", v.span)
            fields[name] = self.expr(v)
        return Record(fields)

    def expr_Keyword(self, node: A.Keyword):
        return self.error("a keyword argument is only allowed in a call", node.span)

    def expr_Slice(self, node: A.Slice):
        return self.error("a slice is only allowed inside `[...]`", node.span)

    def expr_Neg(self, node: A.Neg):
        v = self.expr(node.operand)
        if isinstance(v, Poison):
            return v
        if isinstance(v, Const) and is_number(v.value):
            return Const(-v.value)
        if not isinstance(v, Tensor):
            return self.error(f"cannot negate {describe_value(v)}", node.span)
        return self.apply_op("neg", [v], {}, node.span, [node.operand.span])

    def expr_BinOp(self, node: A.BinOp):
        left, right = self.expr(node.left), self.expr(node.right)
        if isinstance(left, Poison) or isinstance(right, Poison):
            return Poison()
        if isinstance(left, Const) and isinstance(right, Const):
            return fold(self, node, left.value, right.value)
        if not all(isinstance(v, Tensor) or (isinstance(v, Const) and (
                is_number(v.value) or isinstance(v.value, bool))) for v in (left, right)):
            return self.error(f"cannot apply `{node.op}` to {describe_value(left)} and "
                              f"{describe_value(right)}", node.span,
                              hint="operators work on tensors and numbers")
        return self.apply_op(OPERATOR_OPS[node.op], [left, right], {}, node.span,
                             [node.left.span, node.right.span])

    def expr_Field(self, node: A.Field):
        base = self.expr(node.value)
        if isinstance(base, Poison):
            return base
        if isinstance(base, Record):
            if node.name in base.fields:
                return base.fields[node.name]
            return self.error(f"{self.text(node.value.span)} has no field `{node.name}`",
                              node.span, did_you_mean(node.name, base.fields) or
                              f"its fields are {', '.join(base.fields)}")
        if isinstance(base, SourceRef):
            splits = base.source.splits
            if node.name in splits:
                return SplitRef(base, node.name)
            return self.error(f"data source `{base.name}` has no split `{node.name}`", node.span,
                              did_you_mean(node.name, splits) or f"its splits are {', '.join(splits)}")
        form = self.forms.fields.get(type(base))
        if form is not None:  # a graph's layer: `charlm.step`
            return form(self, base, node)
        return self.error(f"{describe(base)} has no fields", node.span)

    def expr_Index(self, node: A.Index):
        base = self.expr(node.value)
        if isinstance(base, Poison):
            return base
        if isinstance(base, GraphRef):  # lstm[128], mlp[H = 256]
            return graph_constants(self, base, node)
        if isinstance(base, (ListV, TupleV)) or (isinstance(base, Const) and isinstance(base.value, list)):
            items = base.value if isinstance(base, Const) else base.items
            if len(node.subs) == 1 and isinstance(node.subs[0], A.Num):
                try:
                    item = items[node.subs[0].value]
                except IndexError:
                    return self.error(f"index {node.subs[0].value} is out of range", node.span)
                return Const(item) if isinstance(base, Const) else item
            return self.error("a list takes one constant index", node.span)
        if not isinstance(base, Tensor):
            return self.error(f"{describe(base)} cannot be indexed", node.span)
        return index_tensor(self, base, node)

    # -- calls ---------------------------------------------------------------
    def expr_Call(self, node: A.Call):
        if isinstance(node.func, A.Name):
            callee = self.lookup(node.func.id, node.func.span, called=True)
        else:
            callee = self.expr(node.func)
        if isinstance(callee, Poison):
            return callee
        readers = self.forms.syntax_keywords if isinstance(callee, Special) else {}
        args = []
        for i, a in enumerate(node.args):
            keyword = self.forms.syntax_positions.get((callee.name, i)) if readers else None
            reader = readers.get((callee.name, keyword)) if keyword else None
            args.append(reader(self, a) if reader else self.expr(a))
        kwargs = {}
        for k in node.kwargs:
            reader = readers.get((callee.name, k.name)) if readers else None
            kwargs[k.name] = reader(self, k.value) if reader else self.expr(k.value)
        kw_spans = {k.name: k.span for k in node.kwargs}
        if len(kw_spans) != len(node.kwargs):
            seen = set()
            for k in node.kwargs:
                if k.name in seen:
                    return self.error(f"keyword `{k.name}` is given twice", k.span)
                seen.add(k.name)
        arg_spans = [a.span for a in node.args]
        return self.invoke(callee, args, kwargs, node.stage or node.span, arg_spans, kw_spans)

    def invoke(self, callee, args, kwargs, span: Span, arg_spans, kw_spans,
               instance: str | None = None):
        """Call an op directly; anything else through the forms table."""
        if any(isinstance(v, Poison) for v in [*args, *kwargs.values()]):
            return Poison()
        if isinstance(callee, OpRef):
            special = self.forms.distribution_ops.get(callee.name)
            if special is not None and args and isinstance(args[0], DistV):
                return special(self, args, kwargs, span, arg_spans, kw_spans)
            return self.apply_op(callee.name, args, kwargs, span, arg_spans, instance, kw_spans)
        if isinstance(callee, Partial):
            merged = {**callee.kwargs, **kwargs}
            return self.invoke(callee.callee, [*args, *callee.args], merged, span,
                               arg_spans + [callee.span] * len(callee.args), kw_spans,
                               callee.instance)
        if isinstance(callee, Special):
            return self.forms.calls[callee.name](self, args, kwargs, span, arg_spans, kw_spans)
        form = self.forms.callees.get(type(callee))
        if form is not None:  # a graph, a data split
            return form(self, callee, args, kwargs, span, arg_spans, kw_spans, instance)
        return self.error(f"{describe(callee)} cannot be called", span)

    # -- ops -----------------------------------------------------------------
    def apply_op(self, name: str, args: list, kwargs: dict, span: Span, arg_spans: list,
                 instance: str | None = None, kw_spans: dict | None = None):
        """Bind arguments to an op's signature, infer the result, add the node."""
        op = REGISTRY[name]
        bound = bind(self, name, op.args, args, kwargs, span, arg_spans, kw_spans)
        if bound is None:
            return Poison()
        spans = bound.spans
        if any(isinstance(v, Poison) for v in bound.values()):
            return Poison()
        types: dict[str, object] = {}
        tensors: list[Tensor] = []
        arg_names: list[str] = []
        attrs: dict[str, object] = {}
        first_tensor = next((v.type for v in bound.values() if isinstance(v, Tensor)), None)
        for a in op.args:
            v = bound[a.name]
            if a.kind == "tensor":
                if isinstance(v, Const) and isinstance(v.value, (int, float, bool, Dim)):
                    v = self.const_tensor(v.value, spans.get(a.name, span), first_tensor)
                if not isinstance(v, Tensor):
                    return self.error(f"argument `{a.name}` of {name}() must be a tensor, got "
                                      f"{describe(v)}", spans.get(a.name, span))
                types[a.name] = v.type
                tensors.append(v)
                arg_names.append(a.name)
            elif a.kind == "tensors":
                items = v.items if isinstance(v, ListV) else None
                if not items or not all(isinstance(t, Tensor) for t in items):
                    return self.error(f"argument `{a.name}` of {name}() must be a list of "
                                      "tensors", spans.get(a.name, span))
                types[a.name] = [t.type for t in items]
                tensors.extend(items)
                arg_names.extend(f"{a.name}.{i}" for i in range(len(items)))
            else:
                if not isinstance(v, Const):
                    return self.error(f"argument `{a.name}` of {name}() must be a compile-time "
                                      f"constant, got {describe(v)}", spans.get(a.name, span))
                value = plain(v.value)
                problem = check_constant(op, a, value)
                if problem:
                    return self.error(problem, spans.get(a.name, span),
                                      hint=f"its signature is {signature_text(name, op.args)}")
                types[a.name] = attrs[a.name] = value
        try:
            result = op.infer(**types)
            weights = op.weights(**types) if op.weights else {}
            stats = op.stats(**types) if op.stats else {}
        except DimTooLarge as err:
            return self.error(err.message, span)
        except ShapeError as err:
            at = spans.get(err.arg, span) if err.arg else span
            notes: list[str] = []
            for a in spans:
                if isinstance(bound.get(a), Tensor):
                    note = self.describe_operand(spans[a], bound[a])
                    if note not in notes:
                        notes.append(note)
            return self.error(err.message, at, err.hint, notes)
        if weights or stats:
            prefix = self.call_prefix(name, instance)
            for local, w in weights.items():
                p = self.param_node(f"{prefix}.{local}", TensorType(w.dtype, tuple(Dim.of(d) for d in w.shape)),
                                    w.init, span)
                if isinstance(p, Poison):
                    return p
                tensors.append(p)
                arg_names.append(local)
            for local, w in stats.items():
                p = self.param_node(f"{prefix}.{local}", TensorType(w.dtype, tuple(Dim.of(d) for d in w.shape)),
                                    w.init, span, kind="stat")
                if isinstance(p, Poison):
                    return p
                tensors.append(p)
                arg_names.append(local)
        for t in result if isinstance(result, tuple) else (result,):
            problem = size_problem(t.shape, f"the result of {name}() ({t})")
            if problem:
                return self.error(problem, span, hint="a tensor this large cannot be allocated")
        nid = self.node(name, tensors, arg_names, attrs, result, span)
        if isinstance(result, tuple):
            return TupleV([Tensor(self.node("getitem", [Tensor(nid, t)], ["x"], {"index": i}, t, span),
                                  t, f"result {i} of {name}()") for i, t in enumerate(result)])
        return Tensor(nid, result, f"the result of {name}() at {span.short()}")


def new_builder(program, name: str, diagnostics: list, concrete: bool = False) -> Builder:
    return Builder(program, new_ir(name), diagnostics, concrete)
