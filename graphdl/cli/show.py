"""`graphdl show`: nodes with shapes, parameter tables, DOT/SVG/PNG renderings."""

from __future__ import annotations

import shutil
import subprocess
from math import prod

from graphdl.dims import TensorType
from graphdl.errors import CliError
from graphdl.ir import format_ir, nodes
from graphdl.passes.pipeline import run_passes


def param_rows(ir) -> list[tuple[str, str, str]]:
    """(name, type, count) for each parameter node of an IR, in name order."""
    rows = []
    for _, n in nodes(ir):
        if n.op in ("param", "stat"):
            t: TensorType = n.type
            conc = t.concrete()
            count = str(prod(conc)) if conc is not None else "?"
            kind = "" if n.op == "param" else " (stat)"
            rows.append((n.attrs["name"] + kind, str(t), count))
        body = n.attrs.get("body")
        if body is not None:
            rows.extend(param_rows(body))
    body = ir.graph.get("cell_body")
    if body is not None:
        rows.extend(param_rows(body))
    return sorted(set(rows))


def type_text(t) -> str:
    """A node's type as GDL writes it: `f32[B, 4]`, a tuple as `(f32[B, 4], f32[B, 8])`."""
    if t is None:
        return ""
    if isinstance(t, (tuple, list)):
        return "(" + ", ".join(type_text(x) for x in t) + ")"
    return str(t)


def shown_ir(ir):
    """What to draw or list of an IR: a cell's one-step body (its own IR is empty)."""
    return ir.graph.get("cell_body") or ir


def to_dot(ir) -> str:
    ir = shown_ir(ir)
    lines = [f'digraph "{ir.graph["name"]}" {{', "  rankdir=TB; node [shape=box, fontname=monospace];"]
    for nid, n in nodes(ir):
        label = f"{n.op}\\n{type_text(n.type)}" if n.type is not None else n.op
        if n.op in ("param", "stat", "input", "state"):
            label = f"{n.attrs['name']}\\n{type_text(n.type)}"
        shape = "ellipse" if n.op in ("param", "stat") else "box"
        lines.append(f'  n{nid} [label="{label}", shape={shape}];')
    for a, b, d in ir.edges(data=True):
        style = " [style=dashed]" if d.get("delay") else ""
        lines.append(f"  n{a} -> n{b}{style};")
    lines.append("}")
    return "\n".join(lines)


def _graphs(checked, name: str | None, train: str | None) -> dict:
    """The IRs to show: every graph, the one named, or a train block's (with its
    evaluations')."""
    if train is not None:
        plans = {p.name: p for p in checked.trains}
        if train not in plans:
            raise CliError(f"no train block named `{train}`; the train blocks are "
                           f"{', '.join(plans) or 'none'}")
        plan = plans[train]
        irs = {f"train {plan.name}": plan.ir}
        for ev in plan.evaluations:
            irs[f"evaluate on {ev.source}.{ev.split}"] = ev.ir
        return irs
    if name is None:
        return dict(checked.irs)
    if name in checked.irs:
        return {name: checked.irs[name]}
    raise CliError(f"no graph named `{name}`; the graphs are {', '.join(checked.irs) or 'none'}")


def _node_line(n) -> str:
    where = f"  {n.span.line}:{n.span.col}" if n.span else ""
    label = n.attrs.get("name", "") if n.op in ("input", "state") else ""
    return f"  {n.op:<16} {label:<10} {type_text(n.type):<24}{where}"


def print_nodes(name: str, ir) -> None:
    """A graph's nodes with their types; a cell's one-step body, then where each state's
    next value comes from."""
    body = ir.graph.get("cell_body")
    if body is None:
        print(f"graph {name}")
    else:
        states = body.graph.get("states", {})
        print(f"cell {name}: one time step (run by scan), states "
              + (", ".join(f"{s}: {type_text(body.nodes[i]['node'].type)}"
                           for s, (i, _) in states.items()) or "none"))
    shown = shown_ir(ir)
    for _, n in nodes(shown):
        if n.op not in ("param", "stat"):
            print(_node_line(n))
    for state, (_, nxt) in (body.graph.get("states", {}) if body is not None else {}).items():
        n = shown.nodes[nxt]["node"]
        where = f" at {n.span.line}:{n.span.col}" if n.span else ""
        print(f"  next {state:<11} {'= ' + n.op + where:<24}  (the state the next step reads)")


def show(checked, args) -> int:
    graphs = _graphs(checked, args.graph, args.train)
    if args.after is not None:  # the IR as the pass pipeline leaves it after that pass
        graphs = {name: run_passes(ir, until=args.after) for name, ir in graphs.items()}
    if args.format in ("dot", "svg", "png"):
        if len(graphs) != 1:
            raise CliError(f"--format {args.format} draws one graph; name it with --graph "
                           f"({', '.join(graphs)})")
        name, ir = next(iter(graphs.items()))
        dot = to_dot(ir)
        if args.format == "dot":
            if args.out is None:
                print(dot)
                return 0
            try:
                with open(args.out, "w", encoding="utf-8") as f:
                    f.write(dot + "\n")
            except OSError as err:
                raise CliError(f"--out {args.out}: {err.strerror or err}") from None
            print(f"wrote {args.out}")
            return 0
        exe = shutil.which("dot")
        if exe is None:
            raise CliError(f"--format {args.format} needs Graphviz's `dot` program, which is not "
                           "installed (e.g. apt-get install graphviz); --format dot prints the source")
        out = args.out or f"{name}.{args.format}"
        subprocess.run([exe, f"-T{args.format}", "-o", out], input=dot.encode(), check=True)
        print(f"wrote {out}")
        return 0
    for name, ir in graphs.items():
        if args.ir or args.after is not None:
            print(format_ir(ir))
            continue
        if not args.params:
            print_nodes(name, ir)
        rows = param_rows(ir)
        total = sum(int(c) for _, _, c in rows if c != "?" and "(stat)" not in _)
        print(f"parameters of {name}: {len(rows)} tensors, {total:,} values"
              + (" (symbolic dims counted as ?)" if any(c == "?" for *_, c in rows) else ""))
        if args.params:
            width = max((len(r[0]) for r in rows), default=10)
            for pname, t, count in rows:
                print(f"  {pname:<{width}}  {t:<20} {count:>10}")
    return 0
