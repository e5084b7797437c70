"""docs/language.md stays true: its examples check, its tables match the registry.

Each ```gdl block is one of
- a complete file: it must check with no diagnostics;
- `# fragment: ...` on its first line: statements out of context, skipped;
- `# error: MESSAGE` on its first line: it must fail, with MESSAGE in a diagnostic.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from graphdl.errors import render_all
from graphdl.ops import REGISTRY
from graphdl.ops.distributions import ESTIMATORS, FAMILIES
from graphdl.passes.check import check_program
from graphdl.passes.specials import OPTIMIZERS, SCHEDULES, SPECIALS
from graphdl.passes.train import SETTINGS
from graphdl.runtime.data import DATASETS, SOURCES, open_source

DOCS = Path(__file__).resolve().parents[1] / "docs"
LANGUAGE_MD = DOCS / "language.md"
TEXT = LANGUAGE_MD.read_text(encoding="utf-8")


def gdl_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every ```gdl block."""
    blocks = []
    for m in re.finditer(r"^```gdl\n(.*?)^```", text, re.S | re.M):
        blocks.append((text.count("\n", 0, m.start()) + 2, m.group(1)))
    return blocks


def kind(source: str) -> str:
    """"fragment", "error" or "complete", from the block's first line."""
    if source.startswith("# fragment"):
        return "fragment"
    return "error" if source.startswith("# error:") else "complete"


BLOCKS = gdl_blocks(TEXT)
COMPLETE = [(n, s) for n, s in BLOCKS if kind(s) == "complete"]
FAILING = [(n, s) for n, s in BLOCKS if kind(s) == "error"]


def _check(line: int, source: str):
    return check_program(f"<language.md:{line}>", source)


def test_the_extraction_finds_the_blocks():
    assert len(COMPLETE) >= 10, "expected the reference to show every construct in a full file"
    assert len(FAILING) >= 4
    assert gdl_blocks("x\n```gdl\na\n```\n```python\nb\n```\n") == [(3, "a\n")]
    assert [kind(s) for s in ("# fragment: z ~ q\n", "# error: oops\n", "# a file\n")] == \
        ["fragment", "error", "complete"]


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
    missing = [name for name, op in REGISTRY.items() if not GEN.op_doc(op)]
    assert not missing, f"give these ops a `doc` in the registry: {missing}"


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
    ("train settings", sorted(SETTINGS)),
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
