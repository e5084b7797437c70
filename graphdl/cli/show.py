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


def to_dot(ir) -> str:
    lines = [f'digraph "{ir.graph["name"]}" {{', "  rankdir=TB; node [shape=box, fontname=monospace];"]
    for nid, n in nodes(ir):
        label = f"{n.op}\\n{n.type}" if n.type is not None else n.op
        if n.op in ("param", "stat", "input"):
            label = f"{n.attrs['name']}\\n{n.type}"
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
            print(dot)
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
            print(f"graph {name}")
            for _, n in nodes(ir):
                if n.op in ("param", "stat"):
                    continue
                where = f"  {n.span.line}:{n.span.col}" if n.span else ""
                label = n.attrs.get("name", "") if n.op == "input" else ""
                print(f"  {n.op:<16} {label:<10} {str(n.type) if n.type is not None else '':<24}{where}")
        rows = param_rows(ir)
        total = sum(int(c) for _, _, c in rows if c != "?" and "(stat)" not in _)
        print(f"parameters of {name}: {len(rows)} tensors, {total:,} values"
              + (" (symbolic dims counted as ?)" if any(c == "?" for *_, c in rows) else ""))
        if args.params:
            width = max((len(r[0]) for r in rows), default=10)
            for pname, t, count in rows:
                print(f"  {pname:<{width}}  {t:<20} {count:>10}")
    return 0
