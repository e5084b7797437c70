"""The gradients the surrogate pass (graphdl/passes/surrogate.py) gives each estimator,
against analytic ones: Monte-Carlo over 10k vmapped keys for `reinforce` (within 5
standard errors), exact for `enumerate`; baselines, per-example costs, DiCE's second
derivatives, and the pass's errors at their lines."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphdl.api import loads
from graphdl.cli.main import main
from graphdl.elaborate.check import check_program
from graphdl.errors import GdlError
from graphdl.ir import format_ir, node, nodes
from graphdl.lower.context import LowerCtx
from graphdl.lower.evaluate import run_ir
from graphdl.passes.pipeline import run_passes, surrogate_of
from graphdl.runtime.data import SOURCES

KEYS = 10000
R = np.array([[1.0, 3.0, -2.0]], np.float32)  # the reward of each class
W = np.array([[0.2, -0.4, 1.0]], np.float32)  # the logits

BANDIT = """graph g(r: f32[1, 3]) -> f32[] {
    param w: f32[1, 3] = zeros
    a ~ categorical(logits = w) by ESTIMATOR
    return mean(sum(r * onehot(a, 3), axis = -1))
}
"""


def bandit(estimator: str) -> str:
    return BANDIT.replace("ESTIMATOR", estimator)


def expected_reward(w, r=R):
    """E[r_a] for a ~ softmax(w), exactly."""
    return jax.nn.softmax(w[0]) @ r[0]


def estimates(src: str, inputs: tuple, params: dict, stats: dict | None = None,
              n: int = KEYS) -> tuple[np.ndarray, dict]:
    """(loss, gradients) of graph `g` under n keys, in float64."""
    step = loads(src).value_and_grad("g")
    variables = {"params": params, **({"stats": stats} if stats else {})}
    keys = jax.random.split(jax.random.key(1), n)
    losses, grads = jax.jit(jax.vmap(lambda k: step(variables, *inputs, key=k)))(keys)
    return np.asarray(losses, np.float64), {k: np.asarray(v, np.float64) for k, v in grads.items()}


def assert_mc_close(samples: np.ndarray, want, sigmas: float = 5.0) -> None:
    """The mean of `samples` (over axis 0) is `want` within `sigmas` standard errors."""
    mean = samples.mean(0)
    error = samples.std(0) / np.sqrt(len(samples))
    assert np.all(np.abs(mean - np.asarray(want)) <= sigmas * error + 1e-6), \
        f"mean {mean} is not {want} within {sigmas} x {error}"


def ir_after(src: str, name: str = "g"):
    c = check_program("m.gdl", src, sources=SOURCES)
    assert not c.diagnostics, c.diagnostics
    return run_passes(c.irs[name])


# -- each estimator against its analytic gradient ------------------------------------------
def test_reinforce_on_a_categorical():
    """d E[r_a] / d w = p (r - p . r) for p = softmax(w)."""
    losses, grads = estimates(bandit("reinforce"), (R,), {"g.w": W})
    assert_mc_close(losses, float(expected_reward(W)))
    assert_mc_close(grads["g.w"][:, 0], jax.grad(expected_reward)(W)[0])


@pytest.mark.parametrize("estimator", ["reinforce", "reparam"])
def test_a_gaussian_second_moment(estimator):
    """E[z^2] = mu^2 + sigma^2 for z ~ normal(mu, sigma): gradient (2 mu, 2 sigma)."""
    src = ("graph g(x: f32[1]) -> f32[] {\n    param mu: f32[1] = zeros\n"
           "    param sigma: f32[1] = ones\n"
           f"    z ~ normal(mu + x, sigma) by {estimator}\n    return mean(z * z)\n}}\n")
    mu, sigma = np.array([0.5], np.float32), np.array([0.8], np.float32)
    losses, grads = estimates(src, (np.zeros(1, np.float32),), {"g.mu": mu, "g.sigma": sigma})
    assert_mc_close(losses, mu ** 2 + sigma ** 2)
    assert_mc_close(grads["g.mu"], 2 * mu)
    assert_mc_close(grads["g.sigma"], 2 * sigma)


def test_enumerate_is_exact_on_a_categorical():
    step = loads(bandit("enumerate")).value_and_grad("g")
    want = np.asarray(jax.grad(expected_reward)(W))
    for seed in range(3):  # every key gives the exact gradient
        _, grads = step({"params": {"g.w": W}}, R, key=jax.random.key(seed))
        np.testing.assert_allclose(np.asarray(grads["g.w"]), want, atol=1e-5)


def _bernoulli_expectation(logits, r, f) -> float:
    """E[f(b)] over b ~ bernoulli(sigmoid(logits)), summed over every joint value of b."""
    p = jax.nn.sigmoid(logits)
    total = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=logits.size):
        b = jnp.asarray(bits, jnp.float32).reshape(logits.shape)
        total = total + jnp.prod(jnp.where(b > 0, p, 1 - p)) * f(b, r)
    return total


@pytest.mark.parametrize("over,loss,f", [
    ("example", "mean(square(sum(b * r, axis = -1)))",
     lambda b, r: jnp.mean(jnp.square(jnp.sum(b * r, -1)))),
    # log() of the batch mean does not split per example: the support is the whole node's
    ("whole", "log(10 + mean(sum(b * r, axis = -1)))",
     lambda b, r: jnp.log(10 + jnp.mean(jnp.sum(b * r, -1)))),
])
def test_enumerate_is_exact_on_bernoullis(over, loss, f):
    src = (f"graph g(r: f32[2, 3]) -> f32[] {{\n    param w: f32[2, 3] = zeros\n"
           f"    b ~ bernoulli(logits = w) by enumerate\n    return {loss}\n}}\n")
    model = loads(src)
    w = np.array([[0.3, -1.0, 0.5], [1.5, 0.2, -0.7]], np.float32)
    r = np.array([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]], np.float32)
    _, grads = model.value_and_grad("g")({"params": {"g.w": w}}, r, key=jax.random.key(0))
    want = jax.grad(_bernoulli_expectation)(jnp.asarray(w), r, f)
    np.testing.assert_allclose(np.asarray(grads["g.w"]), np.asarray(want), atol=1e-5)
    (expect,) = [n for _, n in nodes(ir_after(src)) if n.op == "expect"]
    assert expect.attrs["over"] == over
    assert (int(expect.attrs["values"]), int(expect.attrs["draws"])) == \
        ((2, 3) if over == "example" else (2, 6))


# -- baselines ---------------------------------------------------------------------------
OFFSET = R + 10.0  # rewards far from 0: a baseline has much to take away


def test_a_moving_average_keeps_the_mean_and_lowers_the_variance():
    want = jax.grad(expected_reward)(W, OFFSET)[0]
    _, plain = estimates(bandit("reinforce"), (OFFSET,), {"g.w": W})
    # the running average as training would have left it: the expected cost
    _, based = estimates(bandit("reinforce(baseline = moving_average(0.9))"), (OFFSET,),
                         {"g.w": W}, {"g.a.moving_average": expected_reward(W, OFFSET)})
    assert_mc_close(plain["g.w"][:, 0], want)
    assert_mc_close(based["g.w"][:, 0], want)
    assert based["g.w"].var(0).sum() < 0.05 * plain["g.w"].var(0).sum()


def test_a_moving_average_is_updated_after_it_is_used():
    """In training the statistic becomes decay * old + (1 - decay) * the mean cost."""
    src = ("graph g(l: f32[B, 3], r: f32[B, 3]) -> f32[] {\n"
           "    a ~ categorical(logits = l) by reinforce(baseline = moving_average(0.75))\n"
           "    return mean(sum(r * onehot(a, 3), axis = -1))\n}\n")
    fn = loads(src).compile("g")
    logits, r = np.zeros((64, 3), np.float32), np.tile(OFFSET, (64, 1))
    variables = fn.init(None, logits, r)
    assert list(variables["stats"]) == ["g.a.moving_average"]
    assert float(variables["stats"]["g.a.moving_average"]) == 0.0
    variables["stats"] = {"g.a.moving_average": jnp.asarray(2.0)}
    loss, stats = fn(variables, logits, r, key=jax.random.key(0), train=True)
    # here the cost of example i is r[a_i], whose batch mean is the loss
    np.testing.assert_allclose(stats["g.a.moving_average"], 0.75 * 2.0 + 0.25 * loss, rtol=1e-6)
    assert fn(variables, logits, r, key=jax.random.key(0)).shape == ()  # eval: no update


def test_a_tensor_baseline_lowers_the_variance_and_is_fitted_to_the_cost():
    src = bandit("reinforce(baseline = b0)").replace(
        "    a ~", "    param b0: f32[] = zeros\n    a ~")
    want = jax.grad(expected_reward)(W, OFFSET)[0]
    mean_cost = float(expected_reward(W, OFFSET))
    _, plain = estimates(bandit("reinforce"), (OFFSET,), {"g.w": W})
    _, based = estimates(src, (OFFSET,), {"g.w": W, "g.b0": np.float32(mean_cost)})
    assert_mc_close(based["g.w"][:, 0], want)
    assert based["g.w"].var(0).sum() < 0.05 * plain["g.w"].var(0).sum()
    # its own gradient is that of the regression mean((b - cost)^2): 2 (b - E cost)
    _, zero = estimates(src, (OFFSET,), {"g.w": W, "g.b0": np.float32(0.0)})
    assert_mc_close(zero["g.b0"], -2 * mean_cost)


# -- what scores a sample ----------------------------------------------------------------
def test_an_unrelated_loss_term_leaves_the_gradient_alone():
    """A large cost that does not depend on the sample adds nothing to its score: the
    gradient is the same for every key, not only in variance."""
    alone = bandit("reinforce").replace("(r: f32[1, 3])", "(r: f32[1, 3], u: f32[1, 8])")
    big = alone.replace("return mean(", "return 1000 * mean(square(u)) + mean(")
    u = np.full((1, 8), 30.0, np.float32)  # the same draws: the sample is the same node
    _, alone = estimates(alone, (R, u), {"g.w": W}, n=2000)
    _, with_big = estimates(big, (R, u), {"g.w": W}, n=2000)
    np.testing.assert_allclose(with_big["g.w"], alone["g.w"], rtol=1e-5, atol=1e-5)


PER_BATCH = """graph g(x: f32[B, 3], r: f32[1, 3]) -> f32[] {
    param w: f32[3] = zeros
    a ~ categorical(logits = x + w) by reinforce
    return LOSS
}
"""
SPLIT = "mean(sum(r * onehot(a, 3), axis = -1))"
WHOLE = "log(exp(mean(sum(r * onehot(a, 3), axis = -1))))"  # the same value, not additive


def _variance(loss: str, batch: int) -> tuple[np.ndarray, float]:
    x = np.zeros((batch, 3), np.float32)
    _, grads = estimates(PER_BATCH.replace("LOSS", loss), (x, R), {"g.w": W[0]}, n=2000)
    return grads["g.w"].mean(0), float(grads["g.w"].var(0).sum())


def test_per_example_costs_shrink_the_variance_with_the_batch():
    """Example i's draw is scored by example i's reward: the variance of the estimate
    falls like 1 / B. Scored by the whole batch's loss, it does not fall at all."""
    _, one = _variance(SPLIT, 1)
    _, split = _variance(SPLIT, 64)
    _, whole = _variance(WHOLE, 64)
    assert split < one / 16
    assert whole > one / 2 and whole > 30 * split
    ir = ir_after(PER_BATCH.replace("LOSS", WHOLE))
    (cost,) = [n for _, n in nodes(ir) if n.op == "cost"]
    assert cost.attrs["terms"][0]["split"] == "log() at 4:12 is not a sum over the examples"


def test_dice_gives_the_second_derivative():
    """The magic box keeps higher orders right: the Hessian of the surrogate averages to
    the Hessian of E[r_a] (a stop_gradient(cost) * log p surrogate gets it wrong)."""
    model = loads(bandit("reinforce"))
    ir, _ = model.compile("g").lowered((R,))
    loss = ir.graph["outputs"][0]

    def surrogate(w, key):
        values = run_ir(ir, LowerCtx({"g.w": w}, {}, key, train=True), {"r": R})
        return values[surrogate_of(ir, loss)]

    keys = jax.random.split(jax.random.key(2), KEYS)
    hessians = jax.jit(jax.vmap(lambda k: jax.hessian(surrogate)(jnp.asarray(W), k)))(keys)
    want = jax.hessian(expected_reward)(jnp.asarray(W))
    assert_mc_close(np.asarray(hessians, np.float64).reshape(KEYS, -1), np.ravel(want))


def test_show_prints_what_the_pass_built(tmp_path, capsys):
    path = tmp_path / "b.gdl"
    path.write_text(bandit("reinforce(baseline = moving_average(0.9))"))
    assert main(["show", str(path), "--after", "surrogate"]) == 0
    out = capsys.readouterr().out
    assert 'cost(term.0=%' in out and 'split = "example"' in out
    assert "baselines=[{moving_average = 0.9, update = true}]" in out
    assert "surrogate(loss=%" in out


# -- errors, each at the sample's line ---------------------------------------------------
ERRORS = [
    pytest.param("graph g(l: f32[B, 2000]) -> f32[] {\n"
                 "    a ~ categorical(logits = l) by enumerate\n"
                 "    return mean(cast(a, \"f32\"))\n}\n",
                 (2, 5, "`a` is too large to enumerate: its support has 2000^1 = 2000 "
                        "points, more than 1024"), id="support"),
    pytest.param("graph g(l: f32[B, 3]) -> f32[] {\n"
                 "    a ~ categorical(logits = l) by enumerate\n"
                 "    b ~ categorical(logits = l) by enumerate\n"
                 "    return mean(cast(a + b, \"f32\"))\n}\n",
                 (3, 5, "`a` and `b` are both enumerated and reach one term of the loss; "
                        "they cannot be summed over jointly here"), id="two_enumerated"),
    pytest.param("graph g(l: f32[B, 3]) -> f32[] {\n"
                 "    a ~ categorical(logits = l) by enumerate\n"
                 "    b ~ bernoulli(logits = cast(a, \"f32\")) by reinforce\n"
                 "    return mean(b)\n}\n",
                 (3, 5, "`b` is drawn below the enumerated `a`; enumerating `a` would need "
                        "it drawn once per value"), id="drawn_below"),
    pytest.param("cell c(x: f32[B, 2]) -> f32[B, 1] {\n    state h: f32[B, 1] = zeros\n"
                 "    a ~ bernoulli(logits = dense(x, 1)) by enumerate\n    h = a\n"
                 "    return a\n}\n"
                 "graph g(xs: f32[B, T, 2]) -> f32[] {\n    return mean(scan(xs, c).out)\n}\n",
                 (3, 5, "`a` cannot be enumerated inside a cell: its support would grow "
                        "with the steps"), id="enumerate_in_cell"),
    pytest.param("cell c(x: f32[B, 2]) -> f32[B, 1] {\n    state h: f32[B, 1] = zeros\n"
                 "    a ~ bernoulli(logits = dense(x, 1)) by reinforce(baseline = x[:, 0])\n"
                 "    h = a\n    return a\n}\n"
                 "graph g(xs: f32[B, T, 2]) -> f32[] {\n    return mean(scan(xs, c).out)\n}\n",
                 (3, 5, "`a` is drawn inside a cell, so a tensor cannot be its baseline: its "
                        "cost is the whole loss, not one per example"), id="tensor_in_cell"),
]


@pytest.mark.parametrize("src,expected", ERRORS)
def test_errors_are_at_the_samples_line(src, expected):
    c = check_program("m.gdl", src, sources=SOURCES)
    assert not c.diagnostics, c.diagnostics
    with pytest.raises(GdlError) as err:
        run_passes(c.irs["g"])
    got = [(d.span.line, d.span.col, d.message) for d in err.value.diagnostics]
    assert got == [expected]
    assert all(d.span.file == "m.gdl" and d.hint for d in err.value.diagnostics)


@pytest.mark.parametrize("src,expected", ERRORS)
def test_check_reports_the_pass_errors(tmp_path, capsys, src, expected):
    path = tmp_path / "m.gdl"
    path.write_text(src)
    assert main(["check", str(path)]) == 2
    line, col, message = expected
    assert f"{path}:{line}:{col}: error: {message}" in capsys.readouterr().err


def test_a_support_too_large_for_the_batch_is_an_error_when_compiled():
    """Not split per example, a node is enumerated jointly: 2^16 points for 16 examples."""
    src = ("graph g(l: f32[B, 1]) -> f32[] {\n    b ~ bernoulli(logits = l) by enumerate\n"
           "    return log(10 + mean(b))\n}\n")
    fn = loads(src).compile("g")
    with pytest.raises(GdlError) as err:
        fn({"params": {}}, np.zeros((16, 1), np.float32), key=jax.random.key(0))
    (d,) = err.value.diagnostics
    assert (d.span.line, d.span.col) == (2, 5)
    assert d.message == ("`b` is too large to enumerate: its support has 2^16 = 65536 points, "
                         "more than 1024")
    assert d.notes == ["it is summed over for the whole batch at once because log() at 3:12 "
                       "is not a sum over the examples"]


@pytest.mark.parametrize("command", [["show", "--after", "surrogate"], ["check"]])
def test_a_pass_error_exits_2_at_its_line(tmp_path, capsys, command):
    """`graphdl check` runs the passes up to the surrogate too: it reports what they find."""
    path = tmp_path / "m.gdl"
    path.write_text(ERRORS[0].values[0])
    assert main([command[0], str(path), *command[1:]]) == 2
    out, err = capsys.readouterr()
    assert f"{path}:2:5: error: `a` is too large to enumerate" in err
    assert "Traceback" not in err and "ok" not in out


def test_the_ir_after_the_pass_verifies_and_prints():
    src = ("graph g(l: f32[B, 3], r: f32[B, 3]) -> f32[] {\n"
           "    a ~ categorical(logits = l) by enumerate\n"
           "    c ~ categorical(logits = l) by reinforce(baseline = moving_average(0.5))\n"
           "    return mean(sum(r * onehot(a, 3), axis = -1)) + 0.5 * mean(cast(c, \"f32\"))\n}\n")
    text = format_ir(ir_after(src))
    assert "expect(p.logits=%0" in text and "ir a_support(" in text
    assert 'over="example"' in text
    ir = ir_after(src)
    (sur,) = [n for _, n in nodes(ir) if n.op == "surrogate"]
    assert sur.attrs["samples"] == ["c"] and sur.attrs["terms"][0]["example"] == []
    assert any(arg.startswith("exact.") for arg in sur.args)
    assert node(ir, surrogate_of(ir, ir.graph["outputs"][0])).op == "surrogate"


@pytest.mark.parametrize("body,split", [
    ("cast(a == y, \"f32\")", "example"),
    ("sum(onehot(a, 3) * dense(l, 3), axis = -1)", "example"),
    ("(cast(a, \"f32\") |> expand_dims(-1) |> dense(4) |> relu)[:, 0]", "example"),
    ("split(onehot(a, 4) + l2, 2, axis = -1)[0][:, 1]", "example"),
    ("reshape(onehot(a, 4) + l2, [B, 2, 2])[:, 0, 1]", "example"),
    ("(onehot(a, 3) |> batch_norm)[:, 0]", "batch_norm() at 3:26 mixes the examples"),
    ("square(cast(a, \"f32\") - mean(cast(a, \"f32\"), 0))",
     "mean() at 3:33 leaves no axis of examples"),
    # linear in the batch mean: still a sum of per-example terms
    ("cast(a, \"f32\") - mean(cast(a, \"f32\"), 0)", "example"),
    ("transpose(onehot(a, 3))[0, :]", "transpose() at 3:9 mixes the examples"),
    ("cast(a, \"f32\")[::-1]", "index() at 3:9 mixes the examples"),
])
def test_what_splits_per_example(body, split):
    src = ("graph g(l: f32[B, 3], l2: f32[B, 4], y: i32[B]) -> f32[] {\n"
           "    a ~ categorical(logits = l) by reinforce\n"
           f"    v = {body}\n    return mean(v)\n}}\n")
    (cost,) = [n for _, n in nodes(ir_after(src)) if n.op == "cost"]
    assert {t["split"] for t in cost.attrs["terms"]} == {split}


@pytest.mark.parametrize("loss,coef,times,per", [
    ("-mean(v)", -1.0, [], ["B"]),
    ("sum(v) / B", 1.0, [], ["B"]),
    ("0.5 * sum(v) - mean(v) / 4", None, None, None),
    ("mean(v + mean(l))", 1.0, [], ["B"]),  # the scalar counts B times, then / B
    ("mean(expand_dims(v, 1) + l)", 1.0, [], ["B"]),  # v counts 3 times, then / (3 B)
])
def test_the_terms_of_a_loss(loss, coef, times, per):
    src = ("graph g(l: f32[B, 3], y: i32[B]) -> f32[] {\n"
           "    a ~ categorical(logits = l) by reinforce\n"
           f"    v = cast(a == y, \"f32\")\n    return {loss}\n}}\n")
    (cost,) = [n for _, n in nodes(ir_after(src)) if n.op == "cost"]
    terms = [(t["coef"], [str(d) for d in t["times"]], [str(d) for d in t["per"]])
             for t in cost.attrs["terms"]]
    if coef is None:  # two terms of the one node v
        assert terms == [(0.5, [], []), (-0.25, [], ["B"])]
    else:
        assert terms == [(coef, times, per)]
