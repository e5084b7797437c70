"""The front end as one call: check a file and return what it defines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from graphdl.dims import DimTooLarge
from graphdl.elaborate.build import Scope, new_builder
from graphdl.elaborate.calls import bind_consts, check_returns, run_body
from graphdl.elaborate.cells import check_cell
from graphdl.elaborate.program import Program, SourceKind
from graphdl.elaborate.specials import FORMS
from graphdl.elaborate.train import build_train
from graphdl.elaborate.values import GraphRef, Tensor
from graphdl.errors import Diagnostic, UserError
from graphdl.ir.plan import TrainPlan


@dataclass
class Checked:
    program: Program
    irs: dict = field(default_factory=dict)  # graph name -> IR (symbolic dims)
    trains: list[TrainPlan] = field(default_factory=list)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self.program.diagnostics


def build_graph_ir(program: Program, name: str, arg_types: dict | None,
                   diagnostics: list[Diagnostic], concrete: bool = False):
    """The IR of graph `name`: with symbolic dims, or for concrete argument types.

    Errors go to `diagnostics` (the program's own while checking, a fresh list for a
    compiled call); `concrete` requires every parameter shape to be known.
    """
    gdef = program.graphs.get(name) or program.std_graphs[name]
    ref = GraphRef(gdef, program.consts_for(gdef), None)
    b = new_builder(program, name, diagnostics, concrete)
    if gdef.kind == "cell":
        check_cell(b, ref)
        return b.g
    with b.in_scope(Scope(name, "graph")):
        if not bind_consts(b, ref, gdef.span, symbolic=arg_types is None):
            return b.g
        for arg in gdef.args:
            declared = b.resolve_type(arg.type)
            if declared is None:
                return b.g
            actual = declared if arg_types is None else arg_types[arg.name]
            if arg_types is not None and not b.unify(declared, actual, arg.span,
                                                     f"input `{arg.name}`", arg.type.span):
                return b.g
            nid = b.node("input", [], [], {"name": arg.name}, actual, arg.span)
            b.g.graph["inputs"].append(nid)
            b.bind(arg.name, Tensor(nid, actual, f"`{arg.name}`, the argument at "
                                    f"{arg.span.short()}"), arg.span)
        if arg_types is None:
            for arg in gdef.args:
                t = b.scope.values[arg.name].type
                for d in t.shape:
                    for s in d.symbols():
                        b.scope.dims.setdefault(s, (type(d)(s), arg.span))
        result = check_returns(b, gdef, run_body(b, gdef), gdef.span)
        outs = result.items if hasattr(result, "items") and not isinstance(result, Tensor) else [result]
        b.g.graph["outputs"] = [o.node for o in outs if isinstance(o, Tensor)]
    return b.g


def check_program(path: str, text: str, overrides: dict | None = None,
                  sources: Mapping[str, SourceKind] | None = None,
                  data_root: str | Path | None = None) -> Checked:
    """Check a file. `sources` are the data sources its `data` lines may open
    (graphdl.runtime.data.SOURCES); without them a `data` line is an error. With
    `data_root`, every path the file names must lie inside that folder."""
    program = Program(path, text, overrides, forms=FORMS, sources=sources,
                      data_root=data_root)
    checked = Checked(program)
    if program.module is None:
        return checked
    program.open_data()
    for name, gdef in program.graphs.items():
        try:
            checked.irs[name] = build_graph_ir(program, name, None, program.diagnostics)
        except DimTooLarge as err:  # a dim grew where no nearer span could say so
            program.diagnostics.append(UserError(err.message, gdef.span).diagnostic)
    for tdef in program.trains:
        try:
            plan = build_train(program, tdef, program.diagnostics)
        except DimTooLarge as err:
            program.diagnostics.append(UserError(err.message, tdef.span).diagnostic)
            continue
        if plan is not None:
            checked.trains.append(plan)
    _dedupe(program)
    return checked


def _within(inner, outer) -> bool:
    return (inner.file == outer.file and inner != outer
            and (outer.line, outer.col) <= (inner.line, inner.col)
            and (inner.end_line, inner.end_col) <= (outer.end_line, outer.end_col))


def _follow_on(d: Diagnostic, all_diagnostics: list[Diagnostic]) -> bool:
    """An error about a value that failed already (`got a value`) next to the first error."""
    return d.span is not None and d.message.endswith("got a value") and any(
        o.span is not None and _within(o.span, d.span) for o in all_diagnostics)


def _dedupe(program: Program) -> None:
    """One error per span: a cell or graph is elaborated once on its own (symbolic dims)
    and again at each call, so one mistake would otherwise be reported once with `D`
    and once with `4`; the first says it."""
    seen, out = set(), []
    for d in program.diagnostics:
        key = d.span if d.span is not None else d.message
        if key not in seen and not _follow_on(d, program.diagnostics):
            seen.add(key)
            out.append(d)
    out.sort(key=lambda d: (d.span.file != program.path, d.span.file, d.span.line, d.span.col)
             if d.span else (True, "", 0, 0))
    program.diagnostics[:] = out
