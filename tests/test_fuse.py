"""The fuse_dense pass (graphdl/passes/fuse_dense.py): sibling dense layers as one matmul."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from graphdl.api import loads
from graphdl.cli.main import main
from graphdl.elaborate.check import check_program
from graphdl.ir import node, nodes
from graphdl.lower.context import LowerCtx
from graphdl.lower.evaluate import loop_invariants
from graphdl.passes import fuse_dense, pipeline
from graphdl.passes.pipeline import run_passes
from graphdl.runtime.data import SOURCES

# siblings at the top (a, b), one that reads another input (c), one without a bias (d),
# and the std.nn lstm's four gates inside a scanned cell
SRC = """graph g(x: f32[B, 3], z: f32[B, 3], xs: f32[B, T, 2]) -> f32[B] {
    a = dense(x, 4)
    b = dense(x, 2)
    c = dense(z, 4)
    d = dense(x, 4, bias = false)
    run = scan(xs, lstm[5], axis = 1)
    return sum(a * c + d, axis = -1) + sum(b, axis = -1) + sum(run.state.h, axis = -1) \
        + sum(run.out, axis = [1, 2])
}
"""
INPUTS = [np.random.default_rng(0).normal(size=s).astype(np.float32)
          for s in ((2, 3), (2, 3), (2, 4, 2))]


def ir_of(src: str, name: str = "g"):
    c = check_program("<t>", src, sources=SOURCES)
    assert not c.diagnostics, c.diagnostics
    return c.irs[name]


def count(ir, op: str) -> int:
    return sum(n.op == op for _, n in nodes(ir))


def scan_body(ir):
    (body,) = [n.attrs["body"] for _, n in nodes(ir) if n.op == "scan"]
    return body


def params(ir) -> dict:
    """name -> (type, attributes) of every parameter node, bodies included."""
    out = {}
    for _, n in nodes(ir):
        if n.op == "param":
            out[n.attrs["name"]] = (n.type, n.attrs)
        if "body" in n.attrs:
            out.update(params(n.attrs["body"]))
    return out


def test_the_lstm_gates_become_one_dense_split():
    before = scan_body(ir_of(SRC))
    after = scan_body(run_passes(ir_of(SRC)))
    assert (count(before, "dense"), count(before, "dense_split")) == (4, 0)
    assert (count(after, "dense"), count(after, "dense_split")) == (0, 1)
    (fused,) = [n for _, n in nodes(after) if n.op == "dense_split"]
    assert fused.attrs == {"units": [5, 5, 5, 5], "bias": True}
    assert fused.args == ["x", "w", "b"]
    # its weights: each gate's own parameters, concatenated in the gates' order
    for weight, concat in zip("wb", fused.inputs[1:]):
        assert node(after, concat).op == "concat"
        names = [node(after, i).attrs["name"] for i in node(after, concat).inputs]
        assert names == [f"g.run.lstm.{gate}.dense.{weight}" for gate in ("f", "w", "r", "new")]
    assert str(node(after, fused.inputs[1]).type) == "f32[7, 20]"  # [D + H, 4H]


def test_only_siblings_with_the_same_input_and_bias_flag_are_siblings():
    ir = ir_of(SRC)
    (group,) = fuse_dense.sibling_groups(ir)
    assert [node(ir, i).attrs["units"] for i in group] == [4, 2]  # a and b
    # d (no bias) and c (another input) are in no group


def test_siblings_outside_a_loop_are_left_alone():
    """At the top of a graph the weights would be concatenated at every train step for
    one small matmul (slower: a VAE's two heads); only loop bodies are fused."""
    after = run_passes(ir_of(SRC))
    assert (count(after, "dense"), count(after, "dense_split")) == (4, 0)
    assert count(scan_body(after), "dense_split") == 1


def equations(jaxpr):
    """Every equation of a jaxpr, those of the jaxprs inside it included."""
    for e in jaxpr.eqns:
        yield e
        for v in e.params.values():
            inner = getattr(v, "jaxpr", v)
            if hasattr(inner, "eqns"):
                yield from equations(inner)


def test_the_concatenated_weights_are_computed_once_before_the_loop():
    """lower_scan computes what depends on parameters alone before lax.scan: the
    concatenated weights (so their gradient is summed as one over the steps), not the
    matmul on the step's input."""
    fn = loads(SRC).compile("g")
    variables = fn.init(jax.random.key(0), *INPUTS)
    body = scan_body(fn.lowered(INPUTS)[0])
    hoisted = loop_invariants(body, LowerCtx(variables["params"], {}))
    # (constants, such as the lstm's forget-gate + 1, are invariant too)
    assert {node(body, i).op for i in hoisted} - {"const"} == {"param", "concat"}
    jaxpr = jax.make_jaxpr(lambda v: fn(v, *INPUTS))(variables).jaxpr
    (scan,) = [e for e in equations(jaxpr) if e.primitive.name == "scan"]
    inside = [e for e in equations(scan.params["jaxpr"].jaxpr)
              if e.primitive.name == "concatenate"]
    assert len(inside) == 1  # concat([x, h]) alone; the weights' concats run before


def test_a_lone_dense_is_left_alone():
    src = "graph g(x: f32[B, 3]) -> f32[B, 4] {\n    return relu(dense(x, 4)) |> dense(4)\n}\n"
    after = run_passes(ir_of(src))
    assert (count(after, "dense"), count(after, "dense_split")) == (2, 0)


def test_parameters_keep_their_names_shapes_and_init():
    ir = ir_of(SRC)
    after = run_passes(ir)
    assert params(after) == params(ir)
    assert "g.run.lstm.f.dense.w" in params(after)


def _values_and_grads():
    fn = loads(SRC).compile("g")
    variables = fn.init(jax.random.key(0), *INPUTS)

    def loss(p, xs):
        return jnp.sum(fn({"params": p}, *xs) ** 2)
    value = fn(variables, *INPUTS)
    grads = jax.grad(loss, argnums=(0, 1))(variables["params"], INPUTS)
    return variables, value, grads


def test_values_and_gradients_match_the_unfused_graph(monkeypatch):
    """With and without the pass: the same parameters (names and initial values), the
    same outputs, the same gradients, through the top-level siblings and the scan."""
    variables, value, (gp, gx) = _values_and_grads()
    monkeypatch.setattr(pipeline, "PIPELINE",
                        tuple(p for p in pipeline.PIPELINE if p.name != "fuse_dense"))
    ref_variables, ref_value, (rp, rx) = _values_and_grads()
    assert set(variables["params"]) == set(ref_variables["params"])  # same names, same init
    for k, v in variables["params"].items():
        np.testing.assert_array_equal(v, ref_variables["params"][k])
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
    assert set(gp) == set(rp)
    for k in gp:
        np.testing.assert_allclose(gp[k], rp[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for g, r in zip(gx, rx):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_show_prints_the_ir_after_fuse_dense(tmp_path, capsys):
    path = tmp_path / "g.gdl"
    path.write_text(SRC)
    assert main(["show", str(path), "--ir", "--after", "fuse_dense"]) == 0
    out = capsys.readouterr().out
    assert "dense_split(x=%" in out and "units=[5, 5, 5, 5]" in out
    assert "units=[4, 2]" not in out


GENERATE = """cell dec[V = 6, H = 4](tok: i32[B]) -> f32[B, V] {
    state h: f32[B, H] = zeros
    e = embedding(tok, vocab = V, dim = H)
    h = tanh(dense(e, H)) * sigmoid(dense(e, H)) + dense(h, H)
    return dense(h, V)
}
graph g(start: i32[B]) {
    r = generate(dec, start = start, steps = 5)
    return r.out, r.logp
}
"""


def test_siblings_in_a_generate_body_are_fused_and_decode_the_same(monkeypatch):
    (body,) = [n.attrs["body"] for _, n in nodes(run_passes(ir_of(GENERATE)))
               if n.op == "generate"]
    assert (count(body, "dense"), count(body, "dense_split")) == (2, 1)  # dense(h), dense(h, V)
    start = np.array([0, 1, 3, 5], np.int32)

    def decode():
        fn = loads(GENERATE).compile("g")
        variables = fn.init(jax.random.key(1), start)
        rng = np.random.default_rng(2)
        params = {k: rng.normal(size=np.shape(v)).astype(np.float32)
                  for k, v in sorted(variables["params"].items())}
        return fn({"params": params}, start)
    fused = decode()
    monkeypatch.setattr(pipeline, "PIPELINE",
                        tuple(p for p in pipeline.PIPELINE if p.name != "fuse_dense"))
    for got, want in zip(fused, decode()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
