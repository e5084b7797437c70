"""`graphdl gradvar` (graphdl/runtime/gradvar.py): each estimator's gradient noise, measured.

Against answers known exactly: a categorical bandit whose batch gradient takes 3^B values
(every one enumerated here, so the mean, the total variance and the spread of the
variance's own estimate are exact), where `enumerate` has no variance and the exact mean,
and a baseline keeps the mean and removes most of the variance; a Gaussian second moment,
where `reparam`'s variance is known in closed form and far below `reinforce`'s. Then the
command: its table, its json, the checkpoint it reads, and its errors (exit 2).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import graphdl
from graphdl.cli.main import main
from graphdl.runtime.gradvar import keys_problem

B = 4  # examples in the batch
R = np.array([1.0, 3.0, -2.0], np.float32) + 10.0  # rewards far from 0: much to take away
W = np.array([0.2, -0.4, 1.0], np.float32)  # the policy's logits

BANDIT = """\
data d = npz("bandit.npz", split = [0.5, 0.5])

graph policy(r: f32[B, 3]) -> f32[B, 3] {
    param w: f32[3] = zeros
    return r * 0.0 + w
}

train {
    data = d.train(batch = 4)
    a ~ categorical(logits = policy(data.x)) by reinforce(baseline = moving_average(0.9))
    loss = -mean(sum(data.x * onehot(a, 3), axis = -1))
    optimizer = sgd(lr = 0.1)
    steps = 2
}
"""

GAUSS = """\
data d = npz("zeros.npz", split = [0.5, 0.5])

graph loc(x: f32[B, 1]) -> f32[B, 1] {
    param mu: f32[1] = zeros
    return x + mu
}

graph scale(x: f32[B, 1]) -> f32[B, 1] {
    param sigma: f32[1] = ones
    return x * 0.0 + sigma
}

train {
    data = d.train(batch = 4)
    z ~ normal(loc(data.x), scale(data.x))
    loss = mean(z * z)
    steps = 1
}
"""

PLAIN = """\
data d = npz("zeros.npz", split = [0.5, 0.5])

train {
    data = d.train(batch = 4)
    loss = mean(square(dense(data.x, 1)))
    steps = 1
}
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working directory with the files the models read."""
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "bandit.npz", x=np.tile(R, (16, 1)), y=np.zeros(16, np.int32))
    np.savez(tmp_path / "zeros.npz", x=np.zeros((16, 1), np.float32),
             y=np.zeros(16, np.int32))
    for name, text in (("bandit.gdl", BANDIT), ("gauss.gdl", GAUSS), ("plain.gdl", PLAIN)):
        (tmp_path / name).write_text(text)
    return tmp_path


def exact_batch_gradient(w, r, b: float = 0.0):
    """Every value of the batch gradient of -mean(r_a) w.r.t. the logits, with its
    probability: (1/B) sum_i (cost_i - b) (e_a_i - p), cost_i = -r_a_i."""
    w, r = np.asarray(w, np.float64), np.asarray(r, np.float64)
    p = np.exp(w - w.max())
    p /= p.sum()
    one = [((-r[a] - b) * (np.eye(3)[a] - p), p[a]) for a in range(3)]
    values, probs = [], []
    for picks in itertools.product(one, repeat=B):
        values.append(sum(g for g, _ in picks) / B)
        probs.append(np.prod([q for _, q in picks]))
    return np.array(values), np.array(probs)


def exact_moments(values, probs):
    """The mean, the total variance E|G - mean|^2, and the standard deviation of |G - mean|^2
    (what an N-key estimate of the variance varies by, times sqrt(N))."""
    mean = probs @ values
    sq = np.sum(np.square(values - mean), axis=1)
    variance = probs @ sq
    return mean, variance, np.sqrt(probs @ np.square(sq - variance))


def test_a_bandit_against_its_exact_moments(folder):
    keys = 2000
    result = graphdl.load("bandit.gdl").gradvar(keys=keys, variables={"params": {"policy.w": W}})
    rows = {r.estimator: r for r in result.rows}
    assert list(rows) == ["reinforce", "reinforce + moving_average(0.9)", "enumerate"]
    assert [r.declared for r in result.rows] == [False, True, False]
    assert {r.node for r in result.rows} == {"a"} and result.parameters == "given"
    plain, based, exact = rows["reinforce"], rows["reinforce + moving_average(0.9)"], \
        rows["enumerate"]
    # without a checkpoint, the baseline is the mean cost, where the average settles
    mean, _, _ = exact_moments(*exact_batch_gradient(W, R))
    p = np.exp(W) / np.exp(W).sum()
    assert based.baseline_from == "mean cost"
    assert abs(based.baseline_value - (-p @ R)) < 0.05
    for row, b in ((plain, 0.0), (based, based.baseline_value)):
        want_mean, want_var, spread = exact_moments(*exact_batch_gradient(W, R, b))
        np.testing.assert_allclose(want_mean, mean, atol=1e-12)  # a baseline keeps the mean
        got = row.mean["policy.w"]
        error = np.sqrt(row.variances["policy.w"] / keys)
        assert np.all(np.abs(got - want_mean) <= 5 * error), (row.estimator, got, want_mean)
        assert abs(row.variance - want_var) <= 5 * spread / np.sqrt(keys), \
            (row.estimator, row.variance, want_var)
        assert row.snr == pytest.approx(row.mean_norm / np.sqrt(row.variance))
        assert row.stderr == pytest.approx(np.sqrt(row.variance / keys))
    assert based.variance < 0.05 * plain.variance
    # enumerate: the exact gradient for every key
    np.testing.assert_allclose(exact.mean["policy.w"], mean, rtol=1e-4, atol=1e-5)
    assert exact.variance < 1e-8 * exact.mean_norm ** 2
    # the loss reported is the sampled one, the same under each estimator (within MC error)
    assert all(abs(r.loss - (-p @ R)) < 0.1 for r in result.rows)


def test_reparam_is_far_quieter_than_reinforce_on_a_gaussian_second_moment(folder):
    """d E[z^2] for z ~ normal(mu, sigma): reparam's per-draw gradient (2z, 2z eps) has
    variances 4 sigma^2 and 4 (mu^2 + 2 sigma^2); the batch mean divides them by B.
    reinforce's, z^2 (eps, eps^2 - 1) / sigma, is several times larger."""
    mu, sigma, keys = 0.5, 0.8, 2000
    result = graphdl.load("gauss.gdl").gradvar(
        keys=keys, variables={"params": {"loc.mu": np.array([mu], np.float32),
                                         "scale.sigma": np.array([sigma], np.float32)}})
    rows = {r.estimator: r for r in result.rows}
    assert list(rows) == ["reparam", "reinforce"] and rows["reparam"].declared
    reparam, reinforce = rows["reparam"], rows["reinforce"]
    want = np.array([4 * sigma ** 2, 4 * (mu ** 2 + 2 * sigma ** 2)]) / B
    got = np.array([reparam.variances["loc.mu"][0], reparam.variances["scale.sigma"][0]])
    np.testing.assert_allclose(got, want, rtol=0.2)
    for row in (reparam, reinforce):  # both unbiased: (2 mu, 2 sigma)
        for name, target in (("loc.mu", 2 * mu), ("scale.sigma", 2 * sigma)):
            error = np.sqrt(row.variances[name][0] / keys)
            assert abs(row.mean[name][0] - target) <= 5 * error, (row.estimator, name)
    # reinforce's is 8.7 times reparam's here (by quadrature), and its estimate spreads by
    # some 17% over 2000 keys (heavy tails)
    assert reinforce.variance > 4 * reparam.variance


def test_the_command_prints_the_table_and_writes_the_json(folder, capsys):
    model = graphdl.load("bandit.gdl")
    trained = model.train(out="run")  # a checkpoint with a moving average in it
    stat = float(trained.variables["stats"]["a.moving_average"])
    assert stat != 0.0
    assert main(["gradvar", "bandit.gdl", "--keys", "40", "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert "the checkpoint in run/checkpoint (step 2)" in out
    header = next(line for line in out.splitlines() if line.startswith("node"))
    assert header.split() == ["node", "estimator", "|mean", "grad|", "variance", "snr",
                              "std", "err"]
    assert "* reinforce + moving_average(0.9)" in out and "  enumerate" in out
    assert f"b = {stat:.4g}, the checkpoint's value" in out
    assert "wrote run/gradvar.json" in out
    record = json.loads((folder / "run" / "gradvar.json").read_text())
    assert record["parameters"] == "checkpoint" and record["checkpoint_step"] == 2
    assert record["keys"] == 40 and record["seed"] == 0
    assert [r["estimator"] for r in record["rows"]] == \
        ["reinforce", "reinforce + moving_average(0.9)", "enumerate"]
    based = record["rows"][1]
    assert based["baseline_value"] == pytest.approx(stat) and based["baseline_from"] == "checkpoint"
    assert record["rows"][2]["snr"] is None or record["rows"][2]["snr"] > 1e3
    for row in record["rows"]:  # the table's numbers
        assert f"{row['variance']:.4g}" in out or row["variance"] == 0
    # the same seed gives the same numbers (the API agrees with the command); another
    # seed, others
    only = ["reinforce + moving_average(0.9)"]
    (again,) = model.gradvar(out="run", keys=40, only=only).rows
    assert (again.mean_norm, again.variance) == (based["mean_norm"], based["variance"])
    (other,) = model.gradvar(out="run", keys=40, seed=1, only=only).rows
    assert other.variance != based["variance"]


@pytest.mark.parametrize("argv,message", [
    (["gradvar", "plain.gdl"], "depends on no stochastic node"),
    (["gradvar", "bandit.gdl", "--keys", "1"], "--keys 1: needs at least 2 keys"),
    (["gradvar", "bandit.gdl", "--train", "nope"], "no train block named `nope`"),
    (["gradvar", "nofile.gdl"], "nofile.gdl: no such file"),
])
def test_errors_exit_2(folder, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_file_without_a_train_block_or_data(folder, capsys):
    (folder / "g.gdl").write_text("graph g(x: f32[B, 2]) -> f32[B] {\n"
                                  "    z ~ normal(x, 1.0)\n    return sum(z, axis = -1)\n}\n")
    assert main(["gradvar", "g.gdl"]) == 2
    assert "g.gdl has no train block" in capsys.readouterr().err
    np.savez(folder / "tiny.npz", x=np.zeros((4, 1), np.float32), y=np.zeros(4, np.int32))
    (folder / "small.gdl").write_text(GAUSS.replace("zeros.npz", "tiny.npz"))
    assert main(["gradvar", "small.gdl"]) == 2  # 2 training examples, a batch of 4
    assert "fewer than one batch of 4" in capsys.readouterr().err


def test_keys_problem():
    assert keys_problem(1000) is None
    assert "at least 2" in keys_problem(0)
    assert "whole number" in keys_problem(2.5)


# -- which nodes, which estimators, and the IR each row runs --------------------------------
NODES = """\
data d = npz("bandit.npz", split = [0.5, 0.5])

graph pick(r: f32[B, 3]) -> f32[B] {
    b ~ categorical(logits = r) by enumerate
    return sum(r * onehot(b, 3), axis = -1)
}

graph value(r: f32[B, 3]) -> f32[B] {
    return dense(r, 1)[:, 0]
}

train {
    data = d.train(batch = 4)
    g ~ onehot_categorical(logits = dense(data.x, 3)) by gumbel_softmax(temperature = 0.5)
    a ~ categorical(logits = dense(data.x, 3)) by reinforce(baseline = value(data.x))
    loss = -mean(sum(data.x * onehot(a, 3), axis = -1) * pick(data.x)) + mean(g)
    steps = 1
}
"""


def test_the_nodes_their_estimators_and_the_ir_of_a_row(folder):
    from graphdl.ir import node
    from graphdl.passes.pipeline import run_passes
    from graphdl.runtime.gradvar import (
        measured_params,
        node_name,
        stochastic_nodes,
        variants,
        with_variant,
    )

    (folder / "nodes.gdl").write_text(NODES)
    plan = graphdl.load("nodes.gdl").plan()
    loss = plan.steps[0].loss
    found = stochastic_nodes(plan.ir, loss)
    assert [node_name(n) for _, n in found] == ["g", "a", "pick.b"]  # called graphs too
    labels = {node_name(n): [(v.label, v.declared) for v in variants(n)] for _, n in found}
    assert labels["g"] == [("reinforce", False), ("enumerate", False),
                           ("gumbel_softmax(temperature = 0.5)", True),
                           ("straight_through", False)]
    assert labels["a"] == [("reinforce", False), ("reinforce + baseline tensor", True),
                           ("enumerate", False)]
    assert labels["pick.b"] == [("reinforce", False), ("enumerate", True)]
    # the row's copy: only the node under study changes, its baseline goes
    path, a = found[1]
    plain = with_variant(plan.ir, path, variants(a)[0])
    assert "baseline" in a.args and "baseline" not in node(plain, path[0]).args
    assert node(plan.ir, path[0]).attrs["estimator"] == "reinforce"  # the plan's IR is kept
    assert node(plain, found[0][0][0]).attrs["options"] == {"temperature": 0.5}
    run_passes(plain)  # a valid IR for the pipeline
    # the value network's own parameters are not the estimator's noise
    trainable = sorted(n for n in plan.ir.graph["params_by_name"])
    measured = measured_params(plan.ir, loss, trainable)
    assert not any(n.startswith("value.") for n in measured)
    assert any(n.startswith("value.") for n in trainable) and measured


def test_an_estimator_the_pass_cannot_build_is_a_row_with_its_reason(folder, capsys):
    (folder / "wide.gdl").write_text(
        'data d = npz("bandit.npz", split = [0.5, 0.5])\n\ntrain {\n'
        "    data = d.train(batch = 4)\n"
        "    c ~ bernoulli(logits = dense(data.x, 16)) by reinforce\n"
        "    loss = mean(c)\n    steps = 1\n}\n")
    (row,) = graphdl.load("wide.gdl").gradvar(keys=2, only=["enumerate"]).rows
    assert row.variance is None and "too large to enumerate" in row.problem
    assert row.problem.startswith("5:5: ")  # where the node is
    from graphdl.runtime.gradvar import GradVar, table_text
    text = table_text(GradVar("train", 2, 0, 4, "initial", None, rows=[row]))
    assert text.splitlines()[3].split() == ["c", "enumerate", "n/a", "n/a", "n/a", "n/a"]
    assert "c enumerate: n/a, 5:5: `c` is too large to enumerate" in text


def test_data_root_applies(folder, capsys):
    (folder / "inner").mkdir()
    (folder / "inner" / "b.gdl").write_text(BANDIT.replace("bandit.npz", "../bandit.npz"))
    assert main(["gradvar", "inner/b.gdl", "--data-root", "inner"]) == 2
    assert "is outside the data root" in capsys.readouterr().err


CELL = """\
data d = npz("bandit.npz", split = [0.5, 0.5])

cell walk(x: f32[B, 3]) -> f32[B, 3] {
    state h: f32[B, 3] = zeros
    e ~ bernoulli(logits = dense(x, 3)) by reinforce(baseline = moving_average(0.5))
    h = h + e * x
    return h
}

train {
    data = d.train(batch = 4)
    a ~ categorical(logits = dense(data.x, 3)) by reinforce
    run = scan(stack([data.x, data.x], axis = 1), walk, axis = 1)
    loss = mean(sum(run.out[:, -1, :], axis = -1)) - mean(sum(data.x * onehot(a, 3), axis = -1))
    steps = 1
}
"""


def test_a_node_drawn_in_a_cell_has_a_row_and_a_cost(folder):
    """A cell's node is found through its scan; the row without its baseline reads its
    cost (the moving average's estimate), and `enumerate` is refused in a cell."""
    from graphdl.ir import node
    from graphdl.passes.pipeline import run_passes
    from graphdl.runtime.gradvar import _cost_node, stochastic_nodes, variants, with_variant

    (folder / "cell.gdl").write_text(CELL)
    plan = graphdl.load("cell.gdl").plan()
    loss = plan.steps[0].loss
    found = stochastic_nodes(plan.ir, loss)
    assert [(len(path), n.attrs["name"]) for path, n in found] == [(1, "a"), (2, "e")]
    for path, n in found:
        ir = run_passes(with_variant(plan.ir, path, variants(n)[0]))
        cost = _cost_node(ir, loss, path, n.attrs["name"])
        assert node(ir, cost).op == "cost" and node(ir, cost).attrs["sample"] == n.attrs["name"]
    path, e = found[1]
    with pytest.raises(graphdl.GdlError, match="cannot be enumerated inside a cell"):
        run_passes(with_variant(plan.ir, path, variants(e)[2]))
