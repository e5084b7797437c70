"""`graphdl run --input-grads FIELD[:AXIS]`: the norm of d loss / d data.FIELD[:, t] per t.

Checked against the gradient computed independently (jax.grad of the compiled graph's
loss on the same first batch), against a graph that reads only the last step (every
other position has gradient 0), and for its user errors.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import graphdl
from graphdl.runtime.data import batches

T = 6

MODEL = """\
data sums = adding(6, n = 256, seed = 0)

graph net(x: f32[B, T, 2]) -> f32[B, 1] {
    run = scan(x, rnn[8])
    return dense(run.state.h, 1)
}

graph last(x: f32[B, T, 2]) -> f32[B, 1] {
    return dense(x[:, 5, :], 1)
}

train {
    data = sums.train(batch = 32, shuffle = true)
    loss = mean(mse(net(data.x), data.y))
    steps = 4
    seed = 3
}

train only_last {
    data = sums.train(batch = 32, shuffle = true)
    loss = mean(mse(last(data.x), data.y))
    steps = 2
}
"""


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.gdl"
    path.write_text(MODEL)
    return graphdl.load(path)


def test_norms_match_jax_grad_on_the_first_batch(model, tmp_path):
    result = model.train(out=str(tmp_path / "run"), input_grads="x")
    curves = result.input_grads
    assert sorted(curves) == [0, 4]
    assert all(c.shape == (T,) for c in curves.values())
    # the first training batch, drawn as the run draws it (seed 3, epoch 0)
    arrays = model.sources["sums"].arrays("train")
    first = next(batches(arrays, 32, shuffle=True, seed=3, epoch=0, drop_last=True))
    net = model.compile("net")

    def loss(x):
        return jnp.mean((net(result.variables, x) - first["y"]) ** 2)

    grad = jax.grad(loss)(jnp.asarray(first["x"]))
    expected = np.sqrt(np.sum(np.square(np.asarray(grad)), axis=(0, 2)))
    np.testing.assert_allclose(curves[4], expected, rtol=1e-4, atol=1e-9)
    assert not np.allclose(curves[0], curves[4])  # training moved the parameters
    record = json.loads((tmp_path / "run" / "input_grads.json").read_text())
    assert record["field"] == "x" and record["axis"] == 1 and record["loss"] == "loss"
    np.testing.assert_allclose(record["curves"]["4"], curves[4], rtol=1e-6)
    assert (tmp_path / "run" / "input_grads.png").read_bytes()[:4] == b"\x89PNG"


def test_a_graph_reading_one_step_has_gradient_there_only(model):
    curves = model.train("only_last", input_grads="x:1").input_grads
    for curve in curves.values():
        assert np.all(curve[:-1] == 0) and curve[-1] > 0


def test_another_axis(model):
    curves = model.train(input_grads="x:2").input_grads  # the (value, marker) axis
    assert all(c.shape == (2,) for c in curves.values())


def _run(tmp_path, *flags, source: str = MODEL, name: str = "m.gdl"):
    path = tmp_path / name
    path.write_text(source)
    return subprocess.run([sys.executable, "-m", "graphdl", "run", str(path), "--quiet",
                           "--out", str(tmp_path / "out"), *flags],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag,message,hint", [
    ("z", "--input-grads z: the training data has no field `z`", "its fields: x, y"),
    ("x:3", "--input-grads x:3: the field has shape [32, 6, 2], whose axes other than the "
            "batch axis 0 are 1..2", "name the axis whose positions to plot"),
    ("x:0", "--input-grads x:0: the field has shape [32, 6, 2]", None),
    ("x:a", "--input-grads 'x:a': the axis 'a' is not an integer", None),
    ("3", "--input-grads '3': expected FIELD or FIELD:AXIS", None),
])
def test_bad_flags_are_user_errors(tmp_path, flag, message, hint):
    done = _run(tmp_path, "--input-grads", flag)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    if hint:
        assert hint in done.stderr
    out = tmp_path / "out"  # refused before training: nothing written
    assert not (out / "metrics.jsonl").exists()
    assert not list(out.glob("checkpoint/*"))


def test_an_integer_field_is_refused(tmp_path):
    done = _run(tmp_path, "--input-grads", "x", name="c.gdl", source="""\
data copies = copy(5, 4, n = 64)

graph net(x: i32[B, T]) -> f32[B, T, 4] {
    return dense(embedding(x, vocab = 4, dim = 3), 4)
}

train {
    data = copies.train(batch = 16)
    loss = mean(cross_entropy(net(data.x), data.y))
    steps = 1
}
""")
    assert done.returncode == 2
    assert "c.gdl:7:1: error: --input-grads x: the field is int32 (integers)" in done.stderr
    assert "the gradient stops at the embedding" in done.stderr
