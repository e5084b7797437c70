"""Golden IR tests: each tests/golden/NAME.gdl next to NAME.ir, its expected printed IR.

The .ir file is the printed IR (`graphdl.ir.format_ir`) of every graph of the file, each
cell's one-step body, and every train block (its plan, its IR, each evaluation's IR).
It is the specification of the IR: read a diff of it as a change of meaning.

Regenerate after an intended change with

    GRAPHDL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

and review the diff. Files in KNOWN_WRONG hold the *correct* IR written by hand for a
front-end bug; they are strict xfails, never regenerated: when the bug is fixed the test
passes unexpectedly, and the entry (and the note in docs/language.md, section 14) goes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from graphdl.elaborate.check import check_program
from graphdl.errors import render_all
from graphdl.ir import format_ir
from graphdl.ir.plan import EarlyStopPlan, OptimizerSpec, ScheduleSpec
from graphdl.runtime.data import SOURCES

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("GRAPHDL_UPDATE_GOLDEN") == "1"

KNOWN_WRONG: dict[str, str] = {}

CASES = sorted(p.stem for p in GOLDEN.glob("*.gdl"))


# -- rendering -------------------------------------------------------------------------
def _value(v) -> str:
    """A train setting as GDL-like text."""
    if isinstance(v, (OptimizerSpec, ScheduleSpec)):
        return f"{v.name}({_kwargs(v.kwargs)})"
    if isinstance(v, EarlyStopPlan):
        return f"({_kwargs({'metric': v.metric, 'patience': v.patience, 'mode': v.mode})})"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def _kwargs(kwargs: dict) -> str:
    return ", ".join(f"{k} = {_value(v)}" for k, v in kwargs.items())


def render_train(plan) -> list[str]:
    lines = [f"# train {plan.name}"]
    if plan.batch is not None:
        b = plan.batch
        lines.append(f"batch: {b.source}.{b.split}(batch = {b.batch}, shuffle = "
                     f"{_value(b.shuffle)})")
    for s in plan.steps:
        opt = _value(s.optimizer)
        over = ", ".join(s.over) if s.over else "all"
        lines.append(f"step {s.name}: loss %{s.loss}, optimizer {opt}, over {over}")
    for key in sorted(("epochs", "steps", "seed", "clip_grad_norm", "weight_decay", "schedule",
                       "early_stop")):
        if plan.setting(key) is not None:
            lines.append(f"setting {key} = {_value(plan.setting(key))}")
    if plan.checkpoint is not None:
        lines.append(f"checkpoint every {plan.checkpoint.every} {plan.checkpoint.unit}")
    lines.append(format_ir(plan.ir))
    for ev in plan.evaluations:
        metrics = ", ".join(f"{m} %{nid}" for m, nid in ev.metrics.items())
        lines += ["", f"# evaluate on {ev.source}.{ev.split} every "
                      f"{ev.every} {ev.unit}: {metrics}", format_ir(ev.ir)]
    return lines


def render(checked) -> str:
    """The golden text of a checked file: graphs and cells in order, then train blocks."""
    parts = []
    for name, ir in checked.irs.items():
        if checked.program.graphs[name].kind == "cell":
            body = ir.graph.get("cell_body")
            parts.append(f"# cell {name} (one step)\n" + (format_ir(body) if body is not None
                                                          else "(no body)"))
        else:
            parts.append(f"# graph {name}\n{format_ir(ir)}")
    for plan in checked.trains:
        parts.append("\n".join(render_train(plan)))
    return "\n\n".join(parts) + "\n"


def check_case(name: str):
    path = GOLDEN / f"{name}.gdl"
    return check_program(str(path), path.read_text(encoding="utf-8"), sources=SOURCES)


# -- tests -----------------------------------------------------------------------------
def test_there_are_golden_cases():
    assert {"mlp", "tuples", "sharing", "cells", "stochastic", "indexing", "dims",
            "train"} <= set(CASES)


def test_every_gdl_has_its_ir_and_back():
    irs = {p.stem for p in GOLDEN.glob("*.ir")}
    if not UPDATE:
        assert irs == set(CASES), "a golden .gdl without its .ir (or the reverse)"


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_WRONG[n], strict=True))
    if n in KNOWN_WRONG else n for n in CASES])
def test_golden_ir(name):
    checked = check_case(name)
    assert not checked.diagnostics, render_all(checked.diagnostics, checked.program.sources)
    actual = render(checked)
    expected_path = GOLDEN / f"{name}.ir"
    if UPDATE and name not in KNOWN_WRONG:
        expected_path.write_text(actual, encoding="utf-8")
        return
    assert expected_path.exists(), f"{expected_path.name} is missing: run with GRAPHDL_UPDATE_GOLDEN=1"
    expected = expected_path.read_text(encoding="utf-8")
    assert actual == expected, _first_difference(expected, actual)


def _first_difference(expected: str, actual: str) -> str:
    e, a = expected.splitlines(), actual.splitlines()
    for i, (x, y) in enumerate(zip(e, a)):
        if x != y:
            return f"line {i + 1} differs:\n  expected: {x}\n  actual:   {y}"
    return f"expected {len(e)} lines, got {len(a)}"


def test_render_is_deterministic():
    checked_a, checked_b = check_case("cells"), check_case("cells")
    assert render(checked_a) == render(checked_b)


def test_a_changed_shape_is_caught(tmp_path):
    """The comparison is strict: one changed size changes the text."""
    source = (GOLDEN / "mlp.gdl").read_text(encoding="utf-8").replace("H = 32", "H = 33")
    changed = check_program(str(tmp_path / "mlp.gdl"), source, sources=SOURCES)
    assert not changed.diagnostics
    assert render(changed) != (GOLDEN / "mlp.ir").read_text(encoding="utf-8")
