"""scan(..., lengths = n), states in their declared dtype, learned initial states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from graphdl.api import loads

RNG = np.random.default_rng(7)

RNN = """\
use std.nn
graph g(xs: f32[B, T, 2], n: i32[B]) {
    r = scan(xs, rnn[3], lengths = n, reverse = REV)
    return r.out, r.state.h
}
"""


def _rnn_params(v):
    (w,) = [k for k in v["params"] if k.endswith(".w")]
    (b,) = [k for k in v["params"] if k.endswith(".b")]
    return w, b


def _np_rnn(xs, n, w, b, reverse):
    """The masked loop: step t of sequence i runs while t < n[i], else it holds and emits 0."""
    h = np.zeros((xs.shape[0], w.shape[1]))
    out = np.zeros((xs.shape[0], xs.shape[1], w.shape[1]))
    steps = range(xs.shape[1])
    for t in (reversed(steps) if reverse else steps):
        new = np.tanh(np.concatenate([xs[:, t], h], -1) @ w + b)
        live = (t < n)[:, None]
        h = np.where(live, new, h)
        out[:, t] = np.where(live, new, 0.0)
    return out, h


@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_match_a_numpy_loop(reverse):
    fn = loads(RNN.replace("REV", "true" if reverse else "false")).compile("g")
    xs = RNG.normal(size=(4, 6, 2)).astype(np.float32)
    n = np.array([6, 3, 0, 1], np.int32)
    v = fn.init(jax.random.key(0), xs, n)
    wn, bn = _rnn_params(v)
    w = RNG.normal(size=np.shape(v["params"][wn])).astype(np.float32)
    b = RNG.normal(size=np.shape(v["params"][bn])).astype(np.float32)
    out, h = fn({**v, "params": {wn: w, bn: b}}, xs, n)
    want_out, want_h = _np_rnn(xs.astype(np.float64), n, w.astype(np.float64),
                               b.astype(np.float64), reverse)
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h), want_h, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out)[2] == 0) and np.all(np.asarray(h)[2] == 0)  # length 0


def test_full_lengths_are_the_plain_scan():
    src = RNN.replace("REV", "false")
    fn = loads(src).compile("g")
    plain = loads(src.replace(", lengths = n", "")).compile("g")
    xs = RNG.normal(size=(2, 5, 2)).astype(np.float32)
    n = np.array([5, 5], np.int32)
    v = fn.init(jax.random.key(1), xs, n)
    for a, b in zip(fn(v, xs, n), plain(v, xs, n)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


COUNTER = """\
cell count(x: f32[B, D]) -> i32[B] {
    state c: i32[B] = zeros
    c = c + 1
    return c
}
graph g(xs: f32[B, T, D], n: i32[B]) -> i32[B] {
    r = scan(xs, count, lengths = n)
    return r.state.c
}
graph steps(xs: f32[B, T, D]) -> i32[B, T] {
    return scan(xs, count).out
}
"""


def test_an_integer_state_stays_integer():
    m = loads(COUNTER)
    xs = np.ones((3, 5, 2), np.float32)
    n = np.array([0, 2, 5], np.int32)
    fn = m.compile("g")
    c = fn(fn.init(jax.random.key(0), xs, n), xs, n)
    assert c.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(c), n)
    steps = m.compile("steps")
    out = steps(steps.init(jax.random.key(0), xs), xs)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out), np.tile(np.arange(1, 6), (3, 1)))


def test_an_integer_state_feeds_an_embedding():
    src = """\
cell pos(x: f32[B, D]) -> f32[B, 4] {
    state c: i32[B] = zeros
    e = embedding(c, vocab = 8, dim = 4)
    c = c + 1
    return e
}
graph g(xs: f32[B, T, D]) -> f32[B, T, 4] {
    return scan(xs, pos).out
}
"""
    fn = loads(src).compile("g")
    xs = np.ones((2, 3, 1), np.float32)
    v = fn.init(jax.random.key(0), xs)
    (table,) = v["params"].values()
    out = np.asarray(fn(v, xs))
    np.testing.assert_allclose(out[0], np.asarray(table)[:3], rtol=1e-6)


def test_gradients_through_scan_match_finite_differences():
    fn = loads(RNN.replace("REV", "false")).compile("g")
    xs = RNG.normal(size=(3, 4, 2)).astype(np.float32)
    n = np.array([4, 2, 1], np.int32)
    v = fn.init(jax.random.key(2), xs, n)

    def f(params, xs):
        out, h = fn({**v, "params": params}, xs, n)
        return jnp.sum(out ** 2) + jnp.sum(h)

    check_grads(f, (v["params"], xs), order=1, modes=["rev"], eps=1e-2, atol=5e-2, rtol=5e-2)


def test_a_learned_initial_state_gets_gradients():
    src = """\
use std.nn
graph g(xs: f32[B, T, 2], n: i32[B]) -> f32[] {
    param h0: f32[1, 3] = normal(0.5)
    start = h0 + 0.0 * dense(mean(xs, 1), 3)
    r = scan(xs, rnn[3], init = {h = start}, lengths = n)
    return sum(r.out) + sum(r.state.h)
}
"""
    fn = loads(src).compile("g")
    xs = RNG.normal(size=(2, 4, 2)).astype(np.float32)
    n = np.array([4, 0], np.int32)
    v = fn.init(jax.random.key(3), xs, n)
    grads = jax.grad(lambda p: fn({**v, "params": p}, xs, n))(v["params"])
    assert float(jnp.abs(grads["g.h0"]).sum()) > 0
    check_grads(lambda h0: fn({**v, "params": {**v["params"], "g.h0": h0}}, xs, n),
                (v["params"]["g.h0"],), order=1, modes=["rev"], eps=1e-2, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("text, expected", [
    ("use std.nn\ngraph g(xs: f32[B, T, 2], n: f32[B]) {\n"
     "    r = scan(xs, rnn[3], lengths = n)\n    return r.out\n}\n",
     (3, 26, "`lengths` of scan must be integer lengths like i32[B], one per sequence, "
             "got f32[B]")),
    ("use std.nn\ngraph g(xs: f32[B, T, 2], n: i32[B, 1]) {\n"
     "    r = scan(xs, rnn[3], lengths = n)\n    return r.out\n}\n",
     (3, 26, "`lengths` of scan must be integer lengths like i32[B], one per sequence, "
             "got i32[B, 1]")),
    ("use std.nn\ngraph g(xs: f32[B, T, 2]) {\n"
     "    r = scan(xs, rnn[3], lengths = 3)\n    return r.out\n}\n",
     (3, 26, "`lengths` of scan must be integer lengths like i32[B], one per sequence, "
             "got a constant")),
    ("use std.nn\ngraph g(xs: f32[B, T, 2], n: i32[N]) {\n"
     "    r = scan(xs, rnn[3], lengths = n)\n    return r.out\n}\n",
     (3, 26, "`lengths` of scan is i32[N], but the batch axis of the input is B")),
    ("cell c(x: f32[B, D]) -> f32[B, D] {\n    state s: f32[D] = zeros\n    s = s + 1.0\n"
     "    return x\n}\ngraph g(xs: f32[B, T, D], n: i32[B]) {\n"
     "    r = scan(xs, c, lengths = n)\n    return r.out\n}\n",
     (7, 21, "with `lengths`, state `s` of c must have the batch axis B first, "
             "but it is f32[D]")),
], ids=["float", "rank", "constant", "batch", "state_without_batch"])
def test_lengths_errors_are_located(check, text, expected):
    result = check(text)
    got = [(d.span.line, d.span.col, d.message) for d in result.diagnostics]
    assert got == [expected]
    assert all(d.span.file == "m.gdl" for d in result.diagnostics)


def test_reinforce_in_a_scanned_cell_with_lengths_is_unbiased():
    """Coin flips past a sequence's length change nothing: their score terms are masked,
    and the average REINFORCE gradient is the analytic one of the real steps."""
    src = ("cell coin(x: f32[B, 1]) -> f32[B, 1] {\n    state h: f32[B, 1] = zeros\n"
           "    a ~ bernoulli(logits = dense(x, 1)) by reinforce\n    h = a\n    return a\n}\n"
           "graph g(xs: f32[B, T, 1], n: i32[B]) -> f32[] {\n"
           "    r = scan(xs, coin, lengths = n)\n    return mean(r.out)\n}\n")
    model = loads(src)
    xs = np.array([[[0.5], [-1.0], [2.0]]], np.float32)
    n = np.array([2], np.int32)
    w_name, b_name = "g.r.coin.a.dense.w", "g.r.coin.a.dense.b"
    v = {"params": {w_name: jnp.array([[0.7]]), b_name: jnp.array([-0.2])}}
    step = model.value_and_grad("g")
    keys = jax.random.split(jax.random.key(1), 20000)
    losses, grads = jax.jit(jax.vmap(lambda k: step(v, xs, n, key=k)))(keys)
    x = xs[0, :2, 0].astype(np.float64)
    s = 1 / (1 + np.exp(-(0.7 * x - 0.2)))
    assert abs(float(losses.mean()) - s.sum() / 3) < 0.01
    ds = s * (1 - s) / 3
    np.testing.assert_allclose(float(grads[w_name].mean()), np.sum(ds * x), atol=0.02)
    np.testing.assert_allclose(float(grads[b_name].mean()), np.sum(ds), atol=0.02)
    # the masked third flip adds no score term: a draw's gradient depends on a_0, a_1 only
    assert len(np.unique(np.round(np.asarray(grads[b_name]), 5))) <= 4


def test_the_ir_and_the_verifier_see_lengths_as_an_operand():
    from graphdl.ir.graph import nodes
    from graphdl.ir.printer import format_node
    from graphdl.ir.verify import verify

    m = loads("use std.nn\ngraph g(xs: f32[B, T, 2], n: i32[B]) {\n"
              "    r = scan(xs, rnn[3], init = {h = dense(mean(xs, 1), 3)}, lengths = n)\n"
              "    return r.out\n}\n")
    g = m.ir("g") if callable(m.ir) else m.ir["g"]
    assert verify(g) == []
    (line,) = [format_node(g, i) for i, n in nodes(g) if n.op == "scan"]
    assert line.startswith("%6 = scan(xs=%0, init.h=%5, lengths=%1, axis=1")


def test_a_parallel_source_gives_lengths_for_scan(check, tmp_path):
    (tmp_path / "p.tsv").write_text("".join(f"a b {i}\tc {i}\n" for i in range(20)))
    result = check("""\
        use std.nn
        graph enc(x: i32[B, L], n: i32[B]) -> f32[B, 4] {
            return scan(embedding(x, 20, 8), gru[4], lengths = n).state.h
        }
        data d = parallel("p.tsv", L = 5)
        train {
            data      = d.train(batch = 4)
            loss      = mean(enc(data.x, data.lengths))
            optimizer = adam(lr = 1e-2)
            epochs    = 1
        }
        """)
    assert [d.message for d in result.diagnostics] == []
