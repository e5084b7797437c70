"""The pass pipeline (graphdl/passes/pipeline.py) and each pass in it."""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest

from graphdl.api import loads
from graphdl.cli.main import main
from graphdl.dims import Dim
from graphdl.elaborate.check import check_program
from graphdl.ir import IRError, add_node, format_ir, node, nodes
from graphdl.passes import pipeline
from graphdl.passes.pipeline import PASS_NAMES, PIPELINE, run_passes, surrogate_of
from graphdl.runtime.data import SOURCES

BANDIT = """graph g(l: f32[B, 3], r: f32[B, 3]) -> f32[] {
    a ~ categorical(logits = l) by reinforce
    return mean(sum(r * onehot(a, 3), axis = -1))
}
"""

CELL = """cell coin(x: f32[B, 1]) -> f32[B, 1] {
    state h: f32[B, 1] = zeros
    a ~ bernoulli(logits = dense(x, 1)) by reinforce
    h = a
    return a
}
graph g(xs: f32[B, T, 1]) -> f32[] {
    r = scan(xs, coin, axis = 1)
    return mean(r.out)
}
"""


def ir_of(src: str, name: str = "g"):
    c = check_program("<t>", src, sources=SOURCES)
    assert not c.diagnostics, c.diagnostics
    return c.irs[name]


def ops(ir) -> list[str]:
    return [n.op for _, n in nodes(ir)]


# -- the pipeline -----------------------------------------------------------------------
def test_every_pass_documents_an_ir_before_and_after():
    for p in PIPELINE:
        module = importlib.import_module(p.run.__module__)
        assert "==>" in (module.__doc__ or ""), f"{module.__name__} shows no IR before/after"
        assert p.summary


def test_run_passes_works_on_a_copy():
    ir = ir_of(BANDIT)
    before = format_ir(ir)
    after = run_passes(ir)
    assert format_ir(ir) == before
    assert "surrogate" in ops(after) and "surrogate" not in ops(ir)


def test_until_stops_after_the_named_pass():
    ir = ir_of(BANDIT)
    assert format_ir(run_passes(ir, until="verify")) == format_ir(ir)
    assert "surrogate" in ops(run_passes(ir, until="surrogate"))
    with pytest.raises(ValueError, match="no pass named 'fold'; the passes are verify"):
        run_passes(ir, until="fold")


def test_a_pass_that_breaks_the_ir_is_named_by_the_verifier(monkeypatch):
    def broken(g):
        add_node(g, "add", [0], ["x"], {}, node(g, 0).type, None)  # `y` is missing
        return g
    monkeypatch.setattr(pipeline, "PIPELINE",
                        (*PIPELINE, pipeline.Pass("broken", broken, "breaks the IR")))
    with pytest.raises(IRError, match="add"):
        run_passes(ir_of(BANDIT))


# -- the surrogate pass ---------------------------------------------------------------
def test_surrogate_scores_each_score_function_sample():
    after = run_passes(ir_of(BANDIT))
    (sid,) = [nid for nid, n in nodes(after) if n.op == "sample"]
    (lp,) = [nid for nid, n in nodes(after) if n.op == "dist_log_prob"]
    assert node(after, lp).inputs[-1] == sid and node(after, lp).attrs["family"] == "categorical"
    (out,) = after.graph["outputs"]
    sur = surrogate_of(after, out)
    assert sur != out and node(after, sur).op == "surrogate"
    operands = {arg: src for src, arg in node(after, sur).operands()}
    assert operands["loss"] == out and operands["logp.0"] == lp
    # the loss's one term, r * onehot(a, 3), splits per example: a_i is scored by row i
    cost = node(after, operands["cost.0"])
    assert cost.op == "cost" and str(cost.type) == "f32[B]"
    assert cost.attrs["terms"] == [{"coef": 1.0, "times": [], "per": [Dim("B")],
                                    "split": "example"}]


def test_no_score_function_sample_leaves_the_ir_alone():
    src = "graph g(m: f32[B, 3]) -> f32[] {\n    z ~ normal(m, 1.0)\n    return mean(z)\n}\n"
    ir = ir_of(src)
    after = run_passes(ir)
    assert format_ir(after) == format_ir(ir)
    assert surrogate_of(after, after.graph["outputs"][0]) == after.graph["outputs"][0]


def test_surrogate_reaches_into_a_scanned_cell():
    after = run_passes(ir_of(CELL))
    (sid,) = [nid for nid, n in nodes(after) if n.op == "scan"]
    scan = node(after, sid)
    body = scan.attrs["body"]
    assert "dist_log_prob" in ops(body) and len(body.graph["outputs"]) == 2
    assert len(scan.type) == 3  # outputs, final state h, the stacked log-probabilities
    assert str(scan.type[2]) == "f32[T, B, 1]"
    sur = node(after, surrogate_of(after, after.graph["outputs"][0]))
    operands = {arg: src for src, arg in sur.operands()}
    assert node(after, operands["logp.0"]).op == "getitem"
    # drawn inside a cell: scored by the whole loss, which the scan computes
    assert sur.attrs["terms"][0]["whole"] == [0]


def test_surrogate_gives_the_reinforce_gradient():
    """E[grad] of the bandit's surrogate equals the exact gradient of E[r_a]: with
    p = softmax(w), d E[r_a] / d w_i = p_i (r_i - p . r)."""
    src = ("graph g(r: f32[1, 3]) -> f32[] {\n    param w: f32[1, 3] = zeros\n"
           "    a ~ categorical(logits = w) by reinforce\n"
           "    return mean(sum(r * onehot(a, 3), axis = -1))\n}\n")
    model = loads(src)
    r = np.array([[1.0, 3.0, -2.0]], np.float32)
    (name,) = model.compile("g").init(jax.random.key(0), r)["params"]
    w = np.array([[0.2, -0.4, 1.0]], np.float32)
    step = model.value_and_grad("g")
    keys = jax.random.split(jax.random.key(0), 20000)
    losses, grads = jax.vmap(lambda k: step({"params": {name: w}}, r, key=k))(keys)
    p = np.exp(w[0]) / np.exp(w[0]).sum()
    assert abs(float(losses.mean()) - float(p @ r[0])) < 0.05
    np.testing.assert_allclose(np.asarray(grads[name]).mean(0)[0], p * (r[0] - p @ r[0]),
                               atol=0.05)


def test_show_prints_the_ir_after_a_pass(tmp_path, capsys):
    path = tmp_path / "bandit.gdl"
    path.write_text(BANDIT)
    assert main(["show", str(path), "--after", "surrogate"]) == 0
    out = capsys.readouterr().out
    assert "dist_log_prob(p.logits=%0, x=%" in out and "surrogate(loss=%" in out
    assert main(["show", str(path), "--ir"]) == 0
    assert "surrogate" not in capsys.readouterr().out
    assert set(PASS_NAMES) >= {"verify", "surrogate"}
