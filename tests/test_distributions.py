"""The distribution and estimator tables, walked entry by entry.

Each family runs end to end (a .gdl graph that samples it and scores the sample)
against numpy references; each estimator is lowered on each family it admits; and a
family added to the table at test time lowers by reparameterization with no other edit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphdl.api import loads
from graphdl.dims import TensorType, numpy_name
from graphdl.elaborate import specials
from graphdl.elaborate.check import check_program
from graphdl.ir import Node, node, nodes
from graphdl.lower import LowerCtx
from graphdl.lower.stochastic import lower_sample
from graphdl.ops.distributions import FAMILIES, Family, per_draw_shape
from graphdl.ops.estimators import (
    ESTIMATORS,
    admitted,
    default_estimator,
    estimator_error,
)
from graphdl.passes.pipeline import run_passes
from graphdl.runtime.data import SOURCES

RNG = np.random.default_rng(7)
A = RNG.normal(size=(4, 3)).astype(np.float32)
B = (0.5 * RNG.normal(size=(4, 3))).astype(np.float32)

# each parameter name: its expression over the inputs a, b in .gdl, and its value here
PARAMS = {
    "loc": ("a", A), "scale": ("exp(b)", np.exp(B)),
    "low": ("a", A), "high": ("a + exp(b)", A + np.exp(B)),
    "logits": ("a", A),
}


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _softmax_entropy(p):
    ls = _log_softmax(p["logits"])
    return -(np.exp(ls) * ls).sum(-1)


# family -> numpy references: (log_prob(p, x), entropy(p), mean(p))
REFERENCE = {
    "normal": (lambda p, x: -0.5 * ((x - p["loc"]) / p["scale"]) ** 2 - np.log(p["scale"])
               - 0.5 * np.log(2 * np.pi),
               lambda p: 0.5 * np.log(2 * np.pi * np.e * p["scale"] ** 2),
               lambda p: p["loc"]),
    "uniform": (lambda p, x: np.where((x >= p["low"]) & (x <= p["high"]),
                                      -np.log(p["high"] - p["low"]), -np.inf),
                lambda p: np.log(p["high"] - p["low"]),
                lambda p: (p["low"] + p["high"]) / 2),
    "bernoulli": (lambda p, x: x * np.log(_sigmoid(p["logits"]))
                  + (1 - x) * np.log(1 - _sigmoid(p["logits"])),
                  lambda p: -(_sigmoid(p["logits"]) * np.log(_sigmoid(p["logits"]))
                              + (1 - _sigmoid(p["logits"])) * np.log(1 - _sigmoid(p["logits"]))),
                  lambda p: _sigmoid(p["logits"])),
    "categorical": (lambda p, x: np.take_along_axis(_log_softmax(p["logits"]), x[..., None],
                                                    -1)[..., 0],
                    _softmax_entropy,
                    lambda p: p["logits"].argmax(-1)),
    "onehot_categorical": (lambda p, x: (x * _log_softmax(p["logits"])).sum(-1),
                           _softmax_entropy,
                           lambda p: np.exp(_log_softmax(p["logits"]))),
}


def _params(fam: Family) -> dict:
    return {n: PARAMS[n][1] for n in fam.params}


def _sample_shape(fam: Family) -> tuple:
    return A.shape[:-1] if fam.drop_last else A.shape


def test_every_family_has_a_reference():
    assert set(REFERENCE) == set(FAMILIES), "add a numpy reference for the new family"
    assert all(n in PARAMS for fam in FAMILIES.values() for n in fam.params)


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if not f.continuous])
def test_a_discrete_family_has_its_support(name):
    """`enumerate` sums over `support`: one value per possible draw, in the sample's dtype
    and shape, whose probabilities add up to 1."""
    fam = FAMILIES[name]
    assert fam.support is not None, f"{name} is discrete: give it a support for enumerate"
    values = fam.support(A.shape[-1])
    assert values.dtype == jnp.dtype(numpy_name(fam.sample_dtype))
    assert values.shape[1:] == A.shape[-1:] if fam.one_hot else values.shape[1:] == ()
    x = jnp.broadcast_to(values.reshape((-1,) + (1,) * (len(_sample_shape(fam)) - fam.one_hot)
                                        + values.shape[1:]),
                         (len(values),) + _sample_shape(fam))
    probs = jnp.exp(jax.vmap(lambda v: fam.log_prob({"logits": jnp.asarray(A)}, v))(x))
    np.testing.assert_allclose(np.asarray(probs.sum(0)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_end_to_end(name):
    fam = FAMILIES[name]
    args = ", ".join(PARAMS[n][0] for n in fam.params)
    est = default_estimator(fam) or admitted(fam)[0]
    src = (f"graph g(a: f32[B, 3], b: f32[B, 3]) {{\n    q = {name}({args})\n"
           f"    z ~ q by {est}\n    return z, log_prob(q, z), entropy(q), mean(q)\n}}\n")
    fn = loads(src).compile("g")
    variables = fn.init(jax.random.key(0), A, B)
    z, logp, ent, mean = (np.asarray(v) for v in fn(variables, A, B, key=jax.random.key(3)))
    ref_logp, ref_entropy, ref_mean = REFERENCE[name]
    p = _params(fam)
    assert z.shape == _sample_shape(fam)
    assert z.dtype == np.dtype(numpy_name(fam.sample_dtype))
    assert logp.shape == per_draw_shape(fam, z.shape) and np.all(np.isfinite(logp))
    np.testing.assert_allclose(logp, ref_logp(p, z), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ent, ref_entropy(p), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, ref_mean(p), rtol=1e-4, atol=1e-5)
    # eval with stochastic="mean": the mean in the sample's type, and no key needed
    z_mean = np.asarray(fn(variables, A, B, stochastic="mean")[0])
    assert z_mean.dtype == z.dtype
    np.testing.assert_allclose(z_mean, ref_mean(p).astype(z.dtype), rtol=1e-5)


PAIRS = [(e, f) for e in ESTIMATORS for f in FAMILIES if ESTIMATORS[e].applies(FAMILIES[f])]


def _lower(fam: Family, est: str, params: dict, options: dict | None = None):
    ctx = LowerCtx({}, {}, jax.random.key(5), train=True)
    node = Node("sample", [], [], {"family": fam.name, "estimator": est, "name": "z",
                                   "options": options or {}},
                TensorType.make(fam.sample_dtype, _sample_shape(fam)))
    return lower_sample(ctx, node, params)


def _scored(fam: Family, est: str) -> tuple[list, object, list]:
    """The log-probability nodes the surrogate pass adds for a sample drawn by `est`
    under a loss, the sample, and the expectation nodes added for it."""
    args = ", ".join(PARAMS[n][0] for n in fam.params)
    src = (f"graph g(a: f32[B, 3], b: f32[B, 3]) -> f32[] {{\n"
           f"    z ~ {fam.name}({args}) by {est}\n    return mean(cast(z, \"f32\"))\n}}\n")
    c = check_program("<t>", src, sources=SOURCES)
    assert not c.diagnostics
    ir = run_passes(c.irs["g"])
    (sid,) = [nid for nid, n in nodes(ir) if n.op == "sample"]
    return [n for _, n in nodes(ir) if n.op == "dist_log_prob" and n.inputs[-1] == sid], \
        node(ir, sid), [n for _, n in nodes(ir) if n.op == "expect"]


@pytest.mark.parametrize("est,name", PAIRS, ids=[f"{e}-{f}" for e, f in PAIRS])
def test_estimator_on_each_family_it_admits(est, name):
    fam, estimator = FAMILIES[name], ESTIMATORS[est]
    params = {k: jnp.asarray(v) for k, v in _params(fam).items()}
    value = _lower(fam, est, params)
    # every estimator gives the family's sample type: the graph downstream is the same
    assert value.shape == _sample_shape(fam)
    assert value.dtype == jnp.dtype(numpy_name(fam.sample_dtype))
    # a score-function estimator is scored by the surrogate pass, once, per draw; an exact
    # one is summed over its support by an expectation node
    scores, sample, expectations = _scored(fam, est)
    assert len(scores) == (1 if estimator.score_function else 0)
    assert len(expectations) == (1 if estimator.exact else 0)
    if scores:
        assert scores[0].type.shape == per_draw_shape(fam, sample.type.shape)
    if value.dtype.kind != "f":
        return
    # a score-function estimator's value carries no gradient; the others' values do
    w = jnp.asarray(RNG.normal(size=value.shape).astype(np.float32))
    grads = jax.grad(lambda ps: jnp.sum(_lower(fam, est, ps) * w))(params)
    moved = any(np.any(np.asarray(g) != 0) for g in grads.values())
    assert moved != (estimator.score_function or estimator.exact)


@pytest.mark.parametrize("hard", [False, True])
def test_gumbel_softmax_options(hard):
    fam = FAMILIES["onehot_categorical"]
    value = _lower(fam, "gumbel_softmax", {"logits": jnp.asarray(A)},
                      {"temperature": 0.5, "hard": hard})
    np.testing.assert_allclose(np.asarray(value).sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.isin(np.asarray(value), [0.0, 1.0])) == hard


REFUSED = [(e, f) for e in ESTIMATORS for f in FAMILIES if (e, f) not in PAIRS]


@pytest.mark.parametrize("est,name", REFUSED, ids=[f"{e}-{f}" for e, f in REFUSED])
def test_estimator_refused_where_it_does_not_apply(est, name):
    fam = FAMILIES[name]
    args = ", ".join(PARAMS[n][0] for n in fam.params)
    src = (f"graph g(a: f32[B, 3], b: f32[B, 3]) {{\n    z ~ {name}({args}) by {est}\n"
           "    return z\n}\n")
    messages = [d.message for d in check_program("<t>", src, sources=SOURCES).diagnostics]
    assert messages == [estimator_error(fam, est)[0]]


# -- a family added to the table: reparameterizable, so it takes the reparam branch --------
LAPLACE = Family(
    "laplace", ("loc", "scale"), continuous=True, reparameterizable=True, sample_dtype="f32",
    event_from="loc",
    sample=lambda key, p, shape: p["loc"] + p["scale"] * jax.random.laplace(key, shape),
    log_prob=lambda p, x: -jnp.abs(x - p["loc"]) / p["scale"] - jnp.log(2 * p["scale"]),
    entropy=lambda p: 1 + jnp.log(2 * p["scale"]),
    mean=lambda p: p["loc"],
)


@pytest.fixture
def laplace(monkeypatch):
    monkeypatch.setitem(FAMILIES, "laplace", LAPLACE)
    monkeypatch.setitem(specials.SPECIALS, "laplace", specials._dist("laplace"))
    return LAPLACE


def test_new_family_takes_reparam_by_its_flag(laplace):
    assert default_estimator(laplace) == "reparam"
    assert admitted(laplace) == ("reparam", "reinforce")
    params = {"loc": jnp.asarray(A), "scale": jnp.asarray(np.exp(B))}
    value = _lower(laplace, "reparam", params)
    assert value.shape == A.shape and not _scored(laplace, "reparam")[0]
    grad = jax.grad(lambda ps: jnp.sum(_lower(laplace, "reparam", ps)))(params)
    np.testing.assert_allclose(np.asarray(grad["loc"]), 1.0)


def test_new_family_end_to_end(laplace):
    model = loads("graph g(m: f32[B, 3], s: f32[B, 3]) {\n    z ~ laplace(m, exp(s))\n"
                  "    return z, log_prob(laplace(loc = m, scale = exp(s)), z)\n}\n")
    (sample,) = [n for _, n in nodes(model.ir("g")) if n.op == "sample"]
    assert sample.attrs["estimator"] == "reparam"
    fn = model.compile("g")
    variables = fn.init(jax.random.key(0), A, B)
    z, logp = fn(variables, A, B, key=jax.random.key(1), train=True)[0]
    assert z.shape == A.shape and np.all(np.isfinite(np.asarray(logp)))
    grad = jax.grad(lambda m: jnp.sum(fn(variables, m, B, key=jax.random.key(1),
                                         train=True)[0][0]))(jnp.asarray(A))
    np.testing.assert_allclose(np.asarray(grad), 1.0)  # through the sample, not stopped


def test_bernoulli_log_prob_and_bce_hold_for_large_logits():
    """log p(x) = x z - log(1 + exp(z)) and bce = log(1 + exp(z)) - z t, against float64,
    with finite gradients where exp(z) overflows float32."""
    from graphdl.ops import REGISTRY
    z = np.array([-1e4, -90.0, -30.0, -1.5, 0.0, 1.5, 30.0, 90.0, 1e4], np.float32)
    x = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0], np.float32)
    z64 = z.astype(np.float64)
    softplus = np.logaddexp(0.0, z64)
    log_prob = FAMILIES["bernoulli"].log_prob
    np.testing.assert_allclose(log_prob({"logits": jnp.asarray(z)}, jnp.asarray(x)),
                               x * z64 - softplus, rtol=1e-6, atol=1e-6)
    bce = REGISTRY["bce"].lower(None, logits=jnp.asarray(z), target=jnp.asarray(x))
    np.testing.assert_allclose(bce, softplus - x * z64, rtol=1e-6, atol=1e-6)
    grad = jax.grad(lambda z: log_prob({"logits": z}, jnp.asarray(x)).sum())(jnp.asarray(z))
    sigmoid = np.exp(z64 - np.logaddexp(0.0, z64))  # no overflow at -1e4
    np.testing.assert_allclose(grad, x - sigmoid, atol=1e-6)
