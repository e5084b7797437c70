"""Generate the reference tables of docs/language.md from the op registry.

    python docs/gen_ops.py           # print every generated table (markdown)
    python docs/gen_ops.py --write   # rewrite the generated sections of docs/language.md

Each generated section of language.md sits between `<!-- BEGIN GENERATED: NAME -->` and
`<!-- END GENERATED: NAME -->`; tests/test_docs.py fails when a section differs from what
this script prints, so the tables cannot go stale: after changing an op, run `--write`.

The one-line descriptions are each op's `doc` in the registry (`register(..., doc="...")`
in graphdl/ops/): an op is one registry entry, its documentation included.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from graphdl.ops import REGISTRY, Op
from graphdl.ops.distributions import FAMILIES
from graphdl.ops.estimators import ESTIMATORS, admitted, default_estimator
from graphdl.ops.math import OPERATOR_OPS
from graphdl.ops.registry import REQUIRED, parse_signature
from graphdl.ops.training import OPTIMIZERS, SCHEDULES

LANGUAGE_MD = Path(__file__).resolve().parent / "language.md"

# Ops the compiler builds from syntax; a program cannot call them by name.
SYNTAX_ONLY = {"index": "`x[...]`", "const": "a number literal"}

_OPERATOR_OF = {op: sym for sym, op in OPERATOR_OPS.items()}


def op_doc(op: Op) -> str:
    """The one-line description of an op: its registry `doc` (tests/test_docs.py requires one)."""
    return op.doc


def gdl_literal(value) -> str:
    """A default value as it is written in GDL."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def signature(name: str, args) -> str:
    """`dense(x, units: int, bias: bool = true)`; `axis?: ints` is optional with no default."""
    parts = []
    for a in args:
        text = a.name if a.kind == "tensor" else f"{a.name}: {a.kind}"
        if a.default is None:
            text = text.replace(a.name, a.name + "?", 1)
        elif a.default is not REQUIRED:
            text += f" = {gdl_literal(a.default)}"
        parts.append(text)
    return f"{name}({', '.join(parts)})"


def _group(op: Op) -> str:
    module = op.infer.__module__.rsplit(".", 1)[-1]
    if module in ("layers", "conv_forms"):
        return "Layers, pooling and augmentation"
    if module == "losses":
        return "Losses (per example: reduce with `mean`)"
    if op.name in _OPERATOR_OF or op.name in ("maximum", "minimum", "where"):
        return "Operators and binary functions"
    if op.name in ("sum", "mean", "max", "min", "prod", "logsumexp", "argmax", "argmin",
                   "ratio_of_sums"):
        return "Reductions"
    if op.name in ("reshape", "flatten", "concat", "stack", "split", "transpose", "expand_dims",
                   "squeeze", "index", "take", "zeros", "ones", "arange", "const"):
        return "Shapes, indexing and constants"
    return "Element-wise functions"


GROUP_ORDER = ["Operators and binary functions", "Element-wise functions", "Reductions",
               "Shapes, indexing and constants", "Layers, pooling and augmentation",
               "Losses (per example: reduce with `mean`)"]


def _notes(op: Op) -> str:
    notes = []
    if op.weights:
        notes.append("parameters")
    if op.stats:
        notes.append("statistics")
    if op.random:
        notes.append("random")
    if op.name in SYNTAX_ONLY:
        notes.append(f"from {SYNTAX_ONLY[op.name]} only")
    return ", ".join(notes)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def ops_table() -> str:
    """Every registry op, grouped, as markdown tables."""
    groups: dict[str, list[Op]] = {}
    for op in REGISTRY.values():
        groups.setdefault(_group(op), []).append(op)
    out = []
    for title in GROUP_ORDER + sorted(set(groups) - set(GROUP_ORDER)):
        if title not in groups:
            continue
        out += [f"**{title}**", "", "| op | signature | notes | what it does |",
                "|---|---|---|---|"]
        for op in groups[title]:
            out.append(f"| `{op.name}` | `{_cell(signature(op.name, op.args))}` | {_notes(op)} "
                       f"| {_cell(op_doc(op))} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def distributions_table() -> str:
    out = ["| family | parameters | a sample is | estimators |", "|---|---|---|---|"]
    for fam in FAMILIES.values():
        sample = f"`{fam.sample_dtype}`, the parameters' broadcast shape"
        if fam.drop_last:
            sample += " without its last (class) axis"
        ests = ", ".join(f"`{e}`" for e in admitted(fam))
        if default_estimator(fam):
            ests += f" (default `{default_estimator(fam)}`)"
        params = ", ".join(f"`{p}`" for p in fam.params)
        out.append(f"| `{fam.name}` | {params} | {sample} | {ests} |")
    out += ["", "| estimator | keywords | what it is |", "|---|---|---|"]
    for name, est in ESTIMATORS.items():
        kws = ", ".join(f"`{k}`" for k in est.keywords) or "none"
        out.append(f"| `{name}` | {kws} | {est.description} |")
    return "\n".join(out) + "\n"


def optimizers_table() -> str:
    out = ["| form | signature |", "|---|---|"]
    for table, kind in ((OPTIMIZERS, "optimizer"), (SCHEDULES, "schedule")):
        for name, entry in table.items():
            out.append(f"| {kind} | `{signature(name, parse_signature(entry.signature))}` |")
    return "\n".join(out) + "\n"


SECTIONS = {"ops": ops_table, "distributions": distributions_table,
            "optimizers": optimizers_table}


def section_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- BEGIN GENERATED: {name} -->\n)(.*?)(<!-- END GENERATED: {name} -->)",
                      re.S)


def rewrite(text: str) -> str:
    """language.md with every generated section replaced by the current tables."""
    for name, make in SECTIONS.items():
        pattern = section_pattern(name)
        if not pattern.search(text):
            raise SystemExit(f"{LANGUAGE_MD} has no generated section `{name}`")
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + m.group(3), text)
    return text


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        LANGUAGE_MD.write_text(rewrite(LANGUAGE_MD.read_text()))
        return 0
    if argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    for name, make in SECTIONS.items():
        print(f"<!-- {name} -->\n{make()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
