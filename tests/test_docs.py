"""docs/language.md and README.md stay true: examples check, tables match the registry,
known problems still reproduce, the commands and the Python snippet are the real ones.

Each ```gdl block (a fence may be indented, inside a list item) is one of
- a complete file: it must check with no diagnostics;
- `# fragment: ...` on its first line: statements out of context, skipped;
- `# error: MESSAGE` on its first line: it must fail, with MESSAGE in a diagnostic;
- `# known problem: ...` on its first line (section 14): a repro that must still show
  the problem, as its second line says: `# error: MESSAGE` (rejected with MESSAGE),
  `# run error: MESSAGE` (checks, then running it fails with MESSAGE), or neither
  (checks with no diagnostics). When a fix breaks a repro, its entry in section 14 goes.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

from graphdl.elaborate.check import check_program
from graphdl.elaborate.specials import SPECIALS
from graphdl.errors import render_all
from graphdl.ir import node
from graphdl.ops import REGISTRY
from graphdl.ops.distributions import FAMILIES
from graphdl.ops.estimators import ESTIMATORS
from graphdl.ops.training import OPTIMIZERS, SCHEDULES, TRAIN_SETTINGS
from graphdl.runtime.data import DATASETS, SOURCES, open_source

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LANGUAGE_MD = DOCS / "language.md"
TEXT = LANGUAGE_MD.read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def fenced_blocks(text: str, lang: str) -> list[tuple[int, str]]:
    """(line number, source) of every ```LANG block; an indented fence is dedented."""
    blocks = []
    for m in re.finditer(rf"^( *)```{lang}\n(.*?)^\1```", text, re.S | re.M):
        blocks.append((text.count("\n", 0, m.start()) + 2, textwrap.dedent(m.group(2))))
    return blocks


def gdl_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every ```gdl block."""
    return fenced_blocks(text, "gdl")


def kind(source: str) -> str:
    """"fragment", "error", "known" or "complete", from the block's first line."""
    if source.startswith("# fragment"):
        return "fragment"
    if source.startswith("# known problem:"):
        return "known"
    return "error" if source.startswith("# error:") else "complete"


BLOCKS = gdl_blocks(TEXT)
COMPLETE = [(n, s) for n, s in BLOCKS if kind(s) == "complete"]
FAILING = [(n, s) for n, s in BLOCKS if kind(s) == "error"]
KNOWN = [(n, s) for n, s in BLOCKS if kind(s) == "known"]


def _check(line: int, source: str):
    return check_program(f"<language.md:{line}>", source, sources=SOURCES)


def test_the_extraction_finds_the_blocks():
    assert len(COMPLETE) >= 10, "expected the reference to show every construct in a full file"
    assert len(FAILING) >= 4
    # known problems get fewer as they are fixed (none at present); kind() below still
    # recognizes one
    assert gdl_blocks("x\n```gdl\na\n```\n```python\nb\n```\n") == [(3, "a\n")]
    assert gdl_blocks("- item\n\n  ```gdl\n  a\n    b\n  ```\n") == [(4, "a\n  b\n")]
    assert [kind(s) for s in ("# fragment: z ~ q\n", "# error: oops\n", "# a file\n",
                              "# known problem: x\n# error: y\n")] == \
        ["fragment", "error", "complete", "known"]
    # every repro in section 14 is checked as one, and known problems live only there
    start, end = TEXT.index("## 14. Known problems"), TEXT.index("## 15. ")
    assert all((kind(s) == "known") == (start < _offset(n) < end) for n, s in BLOCKS)


def _offset(line: int) -> int:
    """Character offset of a 1-based line of language.md."""
    return sum(len(x) + 1 for x in TEXT.split("\n")[:line - 1])


@pytest.mark.parametrize("line,source", COMPLETE, ids=[f"line{n}" for n, _ in COMPLETE])
def test_example_checks(line, source):
    checked = _check(line, source)
    assert not checked.diagnostics, render_all(checked.diagnostics, checked.program.sources)
    assert checked.irs or checked.trains or "data " in source


@pytest.mark.parametrize("line,source", FAILING, ids=[f"line{n}" for n, _ in FAILING])
def test_error_example_fails_with_its_message(line, source):
    expected = source.splitlines()[0].removeprefix("# error:").strip()
    checked = _check(line, source)
    messages = [d.message for d in checked.diagnostics]
    assert any(expected in m for m in messages), messages


# -- known problems (section 14) --------------------------------------------------------
NP_DTYPES = {"f32": "float32", "f16": "float16", "i32": "int32", "bool": "bool",
             "f64": "float64", "i64": "int64"}


def _run_repro(source: str) -> str:
    """Run a repro that checks: its first train block for one step, or else each graph on
    zero inputs (every symbolic dim 2). Returns the error text, or "" when nothing fails."""
    import jax
    import numpy as np

    import graphdl
    from graphdl.errors import GdlError
    try:
        model = graphdl.loads(source, "<repro>")
        if model.checked.trains:
            model.train(steps=1)
            return ""
        for name in model.graphs:
            if model.program.graphs[name].kind == "cell":
                continue
            ir = model.ir(name)
            inputs = []
            for nid in ir.graph["inputs"]:
                t = node(ir, nid).type
                shape = [int(d.substitute({s: 2 for s in d.symbols()})) for d in t.shape]
                inputs.append(np.zeros(shape, NP_DTYPES[t.dtype]))
            fn = model.compile(name)
            fn(fn.init(jax.random.key(0), *inputs), *inputs, key=jax.random.key(0))
    except GdlError as err:
        return " ".join(f"{d.message} {d.hint or ''}" for d in err.diagnostics)
    except Exception as err:  # noqa: BLE001 - an internal error is an outcome too
        return f"{type(err).__name__}: {err}"
    return ""


@pytest.mark.parametrize("line,source", KNOWN, ids=[f"line{n}" for n, _ in KNOWN])
def test_known_problem_still_reproduces(line, source):
    second = (source.splitlines()[1:2] or [""])[0]
    fixed = (f"the known problem at docs/language.md:{line} no longer reproduces; if it is "
             "fixed, remove its entry from section 14")
    checked = _check(line, source)
    messages = [d.message for d in checked.diagnostics]
    if second.startswith("# error:"):
        expected = second.removeprefix("# error:").strip()
        assert any(expected in m for m in messages), f"{fixed}: {messages}"
        return
    assert not checked.diagnostics, f"{fixed}: " + render_all(checked.diagnostics,
                                                              checked.program.sources)
    if second.startswith("# run error:"):
        expected = second.removeprefix("# run error:").strip()
        error = _run_repro(source)
        assert expected in error, f"{fixed}: running it gave {error or 'no error'}"


# -- generated tables --------------------------------------------------------------------
def _gen_ops():
    spec = importlib.util.spec_from_file_location("gen_ops", DOCS / "gen_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _gen_ops()


@pytest.mark.parametrize("name", sorted(GEN.SECTIONS))
def test_generated_section_is_current(name):
    match = GEN.section_pattern(name).search(TEXT)
    assert match, f"language.md lost its generated section `{name}`"
    assert match.group(2) == GEN.SECTIONS[name](), \
        "the table is stale: run `python docs/gen_ops.py --write`"


def test_op_table_lists_every_registry_op():
    table = GEN.section_pattern("ops").search(TEXT).group(2)
    listed = re.findall(r"^\| `(\w+)` \| `", table, re.M)
    assert sorted(listed) == sorted(REGISTRY)
    assert len(listed) == len(set(listed))


def test_every_op_has_a_description():
    """An op is one registry entry, its one-line doc included: no description lives elsewhere."""
    missing = [name for name, op in REGISTRY.items() if not op.doc.strip()]
    assert not missing, f"give these ops a `doc=` in their register(...) call: {missing}"
    assert not hasattr(GEN, "FALLBACK_DOCS"), "op descriptions belong in the registry"
    assert all(GEN.op_doc(op) == op.doc for op in REGISTRY.values())


def test_signature_uses_gdl_literals():
    sig = GEN.signature("conv", REGISTRY["conv"].args)
    assert 'padding: str = "same"' in sig and "bias: bool = true" in sig
    assert GEN.signature("sum", REGISTRY["sum"].args).startswith("sum(x, axis?: ints")


def test_rewrite_replaces_only_generated_text():
    stale = TEXT.replace("| `dense` |", "| `dense_old` |", 1)
    assert stale != TEXT
    assert GEN.rewrite(stale) == TEXT


# -- the prose covers every name the front end knows -------------------------------------
def _mentioned(name: str) -> bool:
    return re.search(rf"`[^`]*\b{re.escape(name)}\b[^`]*`", TEXT) is not None


@pytest.mark.parametrize("group,names", [
    ("data sources", sorted(SOURCES)),
    ("datasets", sorted(DATASETS)),
    ("built-in forms", sorted(SPECIALS)),
    ("train settings", sorted(TRAIN_SETTINGS)),
    ("estimators", sorted(ESTIMATORS)),
    ("distributions", sorted(FAMILIES)),
    ("optimizers and schedules", sorted({*OPTIMIZERS, *SCHEDULES})),
])
def test_reference_mentions(group, names):
    missing = [n for n in names if not _mentioned(n)]
    assert not missing, f"docs/language.md does not document these {group}: {missing}"


def test_digits_fields_are_documented_as_built():
    fields = open_source("dataset", ["digits"], {}, DOCS).fields
    assert set(fields) == {"x", "image", "y"}
    for name, field in fields.items():
        shape = f"[{', '.join(map(str, field.shape))}]" if field.shape else ""
        assert f"`{name}: {field.dtype}{shape}`" in TEXT, name


# -- README.md and the commands ----------------------------------------------------------
README_GDL = gdl_blocks(README)
README_PYTHON = fenced_blocks(README, "python")


@pytest.mark.parametrize("line,source", README_GDL, ids=[f"readme{n}" for n, _ in README_GDL])
def test_readme_example_checks(line, source):
    checked = check_program(f"<README.md:{line}>", source, sources=SOURCES)
    assert not checked.diagnostics, render_all(checked.diagnostics, checked.program.sources)


def test_readme_keeps_its_first_two_commands():
    commands = re.findall(r"^```sh\n(.*?)\n```", README, re.S | re.M)[:2]
    assert commands == [
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && '
        "graphdl run models/mlp.gdl",
        "python -m pytest",
    ]
    assert "docs/language.md" in README and "docs/results.md" in README


def test_the_python_snippet_runs(monkeypatch):
    """README's "Python API" snippet, the same as the one in language.md section 16."""
    assert len(README_PYTHON) == 1
    (_, code), = README_PYTHON
    assert [c for _, c in fenced_blocks(TEXT, "python")] == [code]
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(code, "<README.md python>", "exec"), scope)  # noqa: S102 - our own snippet
    assert scope["logits"].shape == (8, 10)
    assert "mlp.out.dense.w" in scope["variables"]["params"]
    assert 0.0 <= scope["result"].metrics["test"]["accuracy"] <= 1.0


def _cli():
    """{command: [its options]} of the real argument parser."""
    from graphdl.cli.main import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {name: [o for a in p._actions for o in a.option_strings if o not in ("-h", "--help")]
            for name, p in sub.choices.items()}


def test_every_command_and_flag_is_documented():
    from graphdl.cli.main import build_parser
    section_16 = TEXT[TEXT.index("## 16. "):]
    top = [o for a in build_parser()._actions for o in a.option_strings if o not in ("-h", "--help")]
    assert all(o in README and o in section_16 for o in top), top
    for name, options in _cli().items():
        for text, where in ((README, "README.md"), (section_16, "language.md section 16")):
            assert f"graphdl {name} " in text, f"{where} does not show `graphdl {name}`"
            missing = [o for o in options if o not in text]
            assert not missing, f"{where} does not document {name}'s {missing}"


def test_known_problems_of_the_api_and_commands_still_reproduce():
    """Section 14's command and API entries: when one is fixed, this fails; drop the entry."""
    fixed = "a section 14 entry no longer reproduces; if it is fixed, remove it: "
    assert "--x64" in TEXT and not any("--x64" in o for o in _cli()["run"]), \
        fixed + "there is a --x64 flag now"


def test_fixed_api_and_command_problems_stay_fixed():
    """Former section 14 entries: the API checks its keys, cells do not compile, help is true."""
    import graphdl
    from graphdl.cli.main import build_parser
    with pytest.raises(TypeError, match="did you mean `H`"):
        graphdl.loads("graph g[H = 2](x: f32[B]) -> f32[B] {\n    return x\n}\n", Hx=3)
    cell = graphdl.loads("cell c(x: f32[B, 3]) -> f32[B, 3] {\n    return x\n}\n")
    assert cell.graphs == []
    with pytest.raises(KeyError, match="is a cell"):
        cell.compile("c")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    # the description names the commands there are (it once named one there was not)
    named = build_parser().description.split(": ", 1)[1].rstrip(".").split(", ")
    assert named == list(sub.choices)
    export_input = next(a for a in sub.choices["export"]._actions if "--input" in a.option_strings)
    assert "keeps that dim symbolic" in export_input.help
