"""The Python API of spec §10, and compiled graphs against the same nets written by hand.

The hand-written networks below use plain `jax.numpy` the way a user would write them
(convolution as shifted slices and an einsum, pooling as a reshape and a max) and take
their parameters by name from the variables dict that `init` returned.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

import graphdl
from graphdl.errors import GdlError, Span
from graphdl.ir import Node, node, nodes

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)

# the spec §1 MLP, and a small CNN with conv, batch norm, pooling, dropout and dense
SOURCE = """\
graph mlp[H = 16, C = 10](x: f32[B, D]) -> f32[B, C] {
    return x |> dense(H) |> relu |> dropout(0.1) |> dense(C)
}

graph cnn(x: f32[B, 8, 8, 1]) -> f32[B, 10] {
    h = x |> conv(4, kernel = 3) |> batch_norm |> relu |> max_pool(2)
    h = conv(h, 6, kernel = 3, stride = 2, padding = "valid") |> relu
    return h |> flatten |> dense(10)
}

graph loss(x: f32[B, D], y: i32[B]) -> f32[] {
    return mean(cross_entropy(mlp(x), y))
}

graph plain(x: f32[B, 3]) -> f32[B, 2] {
    return x |> dense(2) |> tanh
}
"""


@pytest.fixture(scope="module")
def model():
    return graphdl.loads(SOURCE)


def x_batch(*shape):
    return RNG.normal(size=shape).astype(np.float32)


# -- hand-written networks (plain jax.numpy) --------------------------------------------
@partial(jax.jit, static_argnames="prefix")
def hand_mlp(p, x, prefix="mlp.out."):
    h = jax.nn.relu(x @ p[prefix + "dense.w"] + p[prefix + "dense.b"])
    return h @ p[prefix + "dense_1.w"] + p[prefix + "dense_1.b"]


def conv_same_3x3(x, w, b):
    """3x3 'same' convolution, stride 1: shifted slices of the zero-padded input."""
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, wd = x.shape[1:3]
    out = sum(jnp.einsum("bhwc,cf->bhwf", xp[:, i:i + h, j:j + wd], w[i, j])
              for i in range(3) for j in range(3))
    return out + b


def conv_valid_3x3_stride2(x, w, b):
    h, wd = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    out = sum(jnp.einsum("bhwc,cf->bhwf", x[:, i:i + 2 * h:2, j:j + 2 * wd:2], w[i, j])
              for i in range(3) for j in range(3))
    return out + b


def max_pool_2x2(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@partial(jax.jit, static_argnames="train")
def hand_cnn(p, s, x, train=False):
    """Returns (logits, new batch-norm statistics) like the compiled graph does."""
    h = conv_same_3x3(x, p["cnn.h.conv.w"], p["cnn.h.conv.b"])
    bn = "cnn.h.batch_norm."
    if train:
        mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
        new = {bn + "mean": 0.9 * s[bn + "mean"] + 0.1 * mean,
               bn + "var": 0.9 * s[bn + "var"] + 0.1 * var}
    else:
        mean, var, new = s[bn + "mean"], s[bn + "var"], dict(s)
    h = (h - mean) / jnp.sqrt(var + 1e-5) * p[bn + "scale"] + p[bn + "bias"]
    h = max_pool_2x2(jax.nn.relu(h))
    h = jax.nn.relu(conv_valid_3x3_stride2(h, p["cnn.h.conv_1.w"], p["cnn.h.conv_1.b"]))
    h = h.reshape(h.shape[0], -1)
    return h @ p["cnn.out.dense.w"] + p["cnn.out.dense.b"], new


def randomize(variables, seed=0):
    """Random values for every parameter (init gives zero biases, unit scales)."""
    rng = np.random.default_rng(seed)
    out = {"params": {k: jnp.asarray(0.5 * rng.normal(size=v.shape), v.dtype)
                      for k, v in variables["params"].items()}}
    if "stats" in variables:
        out["stats"] = {k: jnp.asarray(rng.uniform(0.5, 1.5, size=v.shape), v.dtype)
                        for k, v in variables["stats"].items()}
    return out


# -- load / loads / graphs / ir ----------------------------------------------------------
def test_load_and_loads(tmp_path, model):
    assert model.graphs == ["mlp", "cnn", "loss", "plain"]
    path = tmp_path / "m.gdl"
    path.write_text(SOURCE)
    loaded = graphdl.load(path)
    assert loaded.graphs == model.graphs
    assert isinstance(graphdl.load(str(path)), graphdl.Model)
    # constants override graph constants, like --set
    big = graphdl.load(path, H=32)
    v = big.compile("mlp").init(jax.random.key(0), x_batch(2, 5))
    assert v["params"]["mlp.out.dense.w"].shape == (5, 32)


def test_load_reports_errors_as_gdl_error(tmp_path):
    with pytest.raises(GdlError) as err:
        graphdl.loads("graph g(x: f32[B, 3]) {\n    return x |> relux\n}\n", name="bad.gdl")
    text = str(err.value)
    assert text.startswith("bad.gdl:2:17: error: ") and "`relux`" in text.splitlines()[0]
    assert "did you mean `relu`?" in text
    assert err.value.diagnostics[0].span.line == 2


def test_unknown_graph_name_lists_the_graphs(model):
    with pytest.raises(KeyError, match="mlp, cnn, loss, plain"):
        model.compile("mpl")
    with pytest.raises(KeyError):
        model.ir("nope")


def test_ir_is_networkx_with_op_shape_dtype_span(model):
    ir = model.ir("cnn")
    assert isinstance(ir, nx.DiGraph)
    ops = [n.op for _, n in nodes(ir)]
    for op in ("input", "param", "conv", "batch_norm", "max_pool", "flatten", "dense"):
        assert op in ops
    assert nx.is_directed_acyclic_graph(ir)
    for _, n in nodes(ir):
        assert isinstance(n, Node) and isinstance(n.span, Span)
    (pool,) = [n for _, n in nodes(ir) if n.op == "max_pool"]
    assert [str(s) for s in pool.shape] == ["B", "4", "4", "4"]
    assert pool.dtype == "f32"
    assert pool.span.line == 6  # line 6 of SOURCE: the first `h = ...` of cnn
    (dense,) = [n for _, n in nodes(ir) if n.op == "dense"]
    assert [str(s) for s in dense.shape] == ["B", "10"]
    assert ir.graph["outputs"] and node(ir, ir.graph["outputs"][0]).op == "dense"


# -- compile / init / call ------------------------------------------------------------------
def test_param_names_are_hierarchical(model):
    x = x_batch(2, 8, 8, 1)
    v = model.compile("cnn").init(jax.random.key(0), x)
    assert sorted(v["params"]) == sorted([
        "cnn.h.conv.w", "cnn.h.conv.b", "cnn.h.batch_norm.scale", "cnn.h.batch_norm.bias",
        "cnn.h.conv_1.w", "cnn.h.conv_1.b", "cnn.out.dense.w", "cnn.out.dense.b"])
    assert sorted(v["stats"]) == ["cnn.h.batch_norm.mean", "cnn.h.batch_norm.var"]
    assert v["params"]["cnn.h.conv_1.w"].shape == (3, 3, 4, 6)
    # a graph called inside another: the caller's instance path comes first
    v = model.compile("loss").init(jax.random.key(0), x_batch(2, 5), np.zeros(2, np.int32))
    assert sorted(v["params"]) == ["loss.out.mlp.out.dense.b", "loss.out.mlp.out.dense.w",
                                   "loss.out.mlp.out.dense_1.b", "loss.out.mlp.out.dense_1.w"]


def test_models_mlp_param_names():
    m = graphdl.load(REPO / "models" / "mlp.gdl")
    v = m.compile("mlp").init(jax.random.key(0), x_batch(2, 40))
    names = sorted(v["params"])
    assert "mlp.out.dense.w" in names and "mlp.out.dense.b" in names
    assert all(n.startswith("mlp.") and n.count(".") == 3 for n in names)


def test_stats_only_when_the_graph_has_some(model):
    v = model.compile("plain").init(jax.random.key(0), x_batch(2, 3))
    assert set(v) == {"params"}
    v = model.compile("cnn").init(jax.random.key(0), x_batch(2, 8, 8, 1))
    assert set(v) == {"params", "stats"}


def test_init_is_deterministic_in_the_key(model):
    fn = model.compile("cnn")
    x = x_batch(2, 8, 8, 1)
    a, b = fn.init(jax.random.key(0), x), fn.init(jax.random.key(0), x)
    c = fn.init(jax.random.key(1), x)
    for k in a["params"]:
        np.testing.assert_array_equal(a["params"][k], b["params"][k])
    assert any(not np.array_equal(a["params"][k], c["params"][k]) for k in a["params"]
               if k.endswith(".w"))
    # the batch size does not change the parameters
    d = fn.init(jax.random.key(0), x_batch(5, 8, 8, 1))
    for k in a["params"]:
        np.testing.assert_array_equal(a["params"][k], d["params"][k])


def test_mlp_equals_hand_written(model):
    fn = model.compile("mlp")
    x = x_batch(4, 5)
    v = randomize(fn.init(jax.random.key(0), x))
    np.testing.assert_allclose(fn(v, x), hand_mlp(v["params"], x), rtol=1e-5, atol=1e-5)


def test_cnn_equals_hand_written_eval_and_train(model):
    fn = model.compile("cnn")
    x = x_batch(3, 8, 8, 1)
    v = randomize(fn.init(jax.random.key(0), x))
    want, _ = hand_cnn(v["params"], v["stats"], x)
    np.testing.assert_allclose(fn(v, x), want, rtol=1e-4, atol=1e-4)
    # train mode: batch statistics, and the new running statistics come out
    y, stats = fn(v, x, train=True)
    want, want_stats = hand_cnn(v["params"], v["stats"], x, train=True)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    assert set(stats) == set(want_stats)
    for k in stats:
        np.testing.assert_allclose(stats[k], want_stats[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(stats["cnn.h.batch_norm.mean"], v["stats"]["cnn.h.batch_norm.mean"])
    # gradients equal too
    def g_loss(p):
        return jnp.sum(fn({"params": p, "stats": v["stats"]}, x, train=True)[0] ** 2)

    def h_loss(p):
        return jnp.sum(hand_cnn(p, v["stats"], x, train=True)[0] ** 2)
    ga, gb = jax.jit(jax.grad(g_loss))(v["params"]), jax.jit(jax.grad(h_loss))(v["params"])
    for k in ga:
        np.testing.assert_allclose(ga[k], gb[k], rtol=2e-3, atol=2e-4, err_msg=k)


def test_key_needed_only_when_something_random_runs(model):
    fn = model.compile("mlp")
    x = x_batch(4, 5)
    v = fn.init(jax.random.key(0), x)
    y = fn(v, x)  # eval: dropout is off, no key
    with pytest.raises(GdlError, match=r"mlp draws random numbers.*pass key="):
        fn(v, x, train=True)
    y1, stats = fn(v, x, key=jax.random.key(1), train=True)
    y2, _ = fn(v, x, key=jax.random.key(1), train=True)
    assert stats == {}
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(y1, y)  # dropout was active
    # nothing random in the graph: train mode needs no key either
    fn = model.compile("plain")
    v = fn.init(jax.random.key(0), x_batch(2, 3))
    out, stats = fn(v, x_batch(2, 3), train=True)
    assert out.shape == (2, 2) and stats == {}


def test_wrong_number_of_inputs(model):
    fn = model.compile("plain")
    with pytest.raises(TypeError, match="takes 1 inputs"):
        fn.init(jax.random.key(0), x_batch(2, 3), x_batch(2, 3))


def test_wrong_input_shape_is_a_gdl_error(model):
    fn = model.compile("cnn")
    v = fn.init(jax.random.key(0), x_batch(2, 8, 8, 1))
    with pytest.raises(GdlError, match="8"):
        fn(v, x_batch(2, 7, 8, 1))


def test_composes_with_grad_jit_vmap(model):
    fn = model.compile("mlp")
    x, labels = x_batch(6, 5), RNG.integers(0, 10, 6)
    v = randomize(fn.init(jax.random.key(0), x))

    def loss(p, x):
        logits = fn({"params": p}, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    def hand_loss(p, x):
        logits = hand_mlp(p, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    g = jax.jit(jax.grad(loss))(v["params"], x)
    h = jax.jit(jax.grad(hand_loss))(v["params"], x)
    for k in g:
        np.testing.assert_allclose(g[k], h[k], rtol=1e-4, atol=1e-6)
    gx = jax.jit(jax.grad(loss, argnums=1))(v["params"], x)
    np.testing.assert_allclose(gx, jax.jit(jax.grad(hand_loss, argnums=1))(v["params"], x),
                               rtol=1e-4, atol=1e-6)
    # vmap over a stack of batches, and over an ensemble of parameter sets
    xs = x_batch(3, 4, 5)
    ys = jax.vmap(lambda xb: fn(v, xb))(xs)
    np.testing.assert_allclose(ys, np.stack([hand_mlp(v["params"], xb) for xb in xs]),
                               rtol=1e-5, atol=1e-5)
    ens = [randomize(v, seed) for seed in range(3)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ens)
    out = jax.jit(jax.vmap(lambda vv: fn(vv, x)))(stacked)
    for i, e in enumerate(ens):
        np.testing.assert_allclose(out[i], hand_mlp(e["params"], x), rtol=1e-5, atol=1e-5)
    # per-example gradients: vmap(grad) with one-example batches
    per = jax.jit(jax.vmap(lambda xi: jax.grad(lambda xx: jnp.sum(fn(v, xx[None])))(xi)))(x)
    assert per.shape == x.shape


def test_value_and_grad(model):
    step = model.value_and_grad("loss")
    x, y = x_batch(8, 5), RNG.integers(0, 10, 8).astype(np.int32)
    v = randomize(model.compile("loss").init(jax.random.key(0), x, y))
    # the loss graph's mlp has dropout: value_and_grad runs in train mode, so it needs a key
    loss, grads = step(v, x, y, key=jax.random.key(3))
    assert set(grads) == set(v["params"])
    loss2, grads2 = step(v, x, y, key=jax.random.key(3))
    assert float(loss) == float(loss2)

    fn = model.compile("loss")
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(
        lambda p: fn({"params": p}, x, y, key=jax.random.key(3), train=True)[0]))(v["params"])
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for k in grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-5, atol=1e-7)
    # with the dropout draw removed (rate 0 through a constant), it equals the hand-written loss
    m0 = graphdl.loads(SOURCE.replace("dropout(0.1)", "dropout(0.0)"))
    loss0, grads0 = m0.value_and_grad("loss")(v, x, y)

    def hand(p):
        logits = hand_mlp(p, x, prefix="loss.out.mlp.out.")
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
    want, want_g = jax.jit(jax.value_and_grad(hand))(v["params"])
    np.testing.assert_allclose(loss0, want, rtol=1e-5)
    for k in grads0:
        np.testing.assert_allclose(grads0[k], want_g[k], rtol=1e-4, atol=1e-6)


def test_value_and_grad_needs_a_scalar(model):
    x = x_batch(2, 3)
    v = model.compile("plain").init(jax.random.key(0), x)
    with pytest.raises(Exception, match="scalar"):
        model.value_and_grad("plain")(v, x)


def test_tuple_outputs():
    m = graphdl.loads("graph two(x: f32[B, 6]) {\n    a, b, c = split(x, 3)\n"
                      "    return a * 2, b\n}\n")
    fn = m.compile("two")
    x = x_batch(2, 6)
    a, b = fn(fn.init(None, x), x)
    np.testing.assert_allclose(a, 2 * x[:, :2])
    np.testing.assert_allclose(b, x[:, 2:4])


# -- model.train -----------------------------------------------------------------------------
TRAIN_SOURCE = """\
graph net[H = 16](x: f32[B, 4]) -> f32[B, 3] {
    return x |> dense(H) |> relu |> dropout(0.1) |> dense(3)
}

data blobs = npz("blobs.npz", split = [0.75, 0.25], seed = 0)

train {
    data      = blobs.train(batch = 16, shuffle = true)
    loss      = mean(cross_entropy(net(data.x), data.y))
    optimizer = adam(lr = 1e-2)
    epochs    = 3
    seed      = 5
    evaluate on blobs.test every 1 epoch {
        accuracy = mean(argmax(net(data.x), -1) == data.y)
    }
}
"""


def write_blobs(folder: Path, n=128, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], np.float32)
    x = (centres[y] + 0.5 * rng.normal(size=(n, 4))).astype(np.float32)
    np.savez(folder / "blobs.npz", x=x, y=y)
    (folder / "t.gdl").write_text(TRAIN_SOURCE)
    return folder / "t.gdl"


def test_train_runs_the_block(tmp_path):
    path = write_blobs(tmp_path)
    m = graphdl.load(path)
    result = m.train(epochs=4)
    assert result.steps == 4 * (96 // 16)
    params = result.variables["params"]
    assert sorted(params) == ["net.out.dense.b", "net.out.dense.w", "net.out.dense_1.b",
                              "net.out.dense_1.w"]
    assert result.metrics["test"]["accuracy"] > 0.8
    losses = [r["loss"] for r in result.history if r["split"] == "train"]
    assert losses[-1] < losses[0]
    # the trained parameters work with the compiled graph (same names everywhere)
    fn = m.compile("net")
    x = np.load(tmp_path / "blobs.npz")["x"]
    y = np.load(tmp_path / "blobs.npz")["y"]
    acc = float(np.mean(np.argmax(fn(result.variables, x), -1) == y))
    assert acc > 0.8


def test_same_seed_same_training_numbers(tmp_path):
    path = write_blobs(tmp_path)
    a = graphdl.load(path).train(epochs=2)
    b = graphdl.load(path).train(epochs=2)
    strip = [{k: v for k, v in r.items() if k != "examples_per_s"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "examples_per_s"} for r in b.history]
    for k in a.variables["params"]:
        np.testing.assert_array_equal(a.variables["params"][k], b.variables["params"][k])
    c = graphdl.load(path).train(epochs=2, seed=6)
    assert any(not np.array_equal(a.variables["params"][k], c.variables["params"][k])
               for k in a.variables["params"])


def test_init_matches_train_init(tmp_path):
    """compile().init with the train block's seed gives the parameters training starts from."""
    path = write_blobs(tmp_path)
    m = graphdl.load(path)
    from graphdl.runtime.train import Trainer  # the parameters before the first step
    trainer = Trainer(m.plan(), m.sources)
    v = m.compile("net").init(jax.random.key(5), np.zeros((16, 4), np.float32))
    for k in v["params"]:
        np.testing.assert_array_equal(v["params"][k], trainer.params[k])


def test_bad_variables_are_named(model):
    fn = model.compile("cnn")
    x = x_batch(2, 8, 8, 1)
    v = fn.init(jax.random.key(0), x)
    with pytest.raises(GdlError, match=r'variables\["stats"\] has no `cnn.h.batch_norm.mean`'):
        fn({"params": v["params"]}, x)
    params = {k: a for k, a in v["params"].items() if k != "cnn.out.dense.w"}
    with pytest.raises(GdlError, match=r'variables\["params"\] has no `cnn.out.dense.w`'):
        fn({**v, "params": params}, x)
    wrong = {**v["params"], "cnn.out.dense.w": jnp.zeros((5, 10))}
    with pytest.raises(GdlError, match=r"`cnn.out.dense.w` has shape \(5, 10\), but f32\[6, 10\]"):
        fn({**v, "params": wrong}, x)
    with pytest.raises(TypeError, match="variables dict"):
        fn(v["params"], x)
    # extra entries are fine (a train block's variables hold every graph's parameters)
    extra = {**v, "params": {**v["params"], "other.dense.w": jnp.zeros(3)}}
    np.testing.assert_array_equal(fn(extra, x), fn(v, x))


def test_init_needs_a_key_only_with_parameters(model):
    x = x_batch(2, 3)
    with pytest.raises(TypeError, match=r"needs a random key first: init\(jax.random.key\(0\), x\)"):
        model.compile("plain").init(None, x)
    with pytest.raises(TypeError, match="random key"):
        model.compile("plain").init(0, x)
    old_style = model.compile("plain").init(jax.random.PRNGKey(0), x)
    assert set(old_style["params"]) == {"plain.out.dense.w", "plain.out.dense.b"}
    m = graphdl.loads("graph double(x: f32[B, 3]) {\n    return 2 * x\n}\n")
    assert m.compile("double").init(None, x) == {"params": {}}
