"""Analytic `kl(p, q)` against Monte-Carlo, through .gdl graphs compiled by the Python API.

For every pair with a closed form (normal, bernoulli, categorical, onehot_categorical,
each against its own family), a graph returns `kl(p, q)` and, for S draws `s ~ p`
(`shape = [S, ...]`), `log_prob(p, s) - log_prob(q, s)`, whose mean estimates the KL
with a standard error we know; the two must agree within a few standard errors. The
reverse KL(q || p) must not, so the test can tell a KL from its mirror image.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from graphdl.api import loads

S = 20_000      # draws per distribution
TOLERANCE = 4.5  # standard errors (each estimate has S draws; 3 or 4 pairs of each)

# per family: (the parameters' type, p's and q's parameters as GDL, the draws' type)
PAIRS = {
    "normal": ("f32[3]", "normal(a, exp(b))", "normal(c, exp(d))", "f32[{S}, 3]", ""),
    "bernoulli": ("f32[3]", "bernoulli(logits = a)", "bernoulli(logits = c)", "f32[{S}, 3]",
                  " by reinforce"),
    "categorical": ("f32[3, 4]", "categorical(logits = a)", "categorical(logits = c)",
                    "i32[{S}, 3]", " by reinforce"),
    "onehot_categorical": ("f32[3, 4]", "onehot_categorical(logits = a)",
                           "onehot_categorical(logits = c)", "f32[{S}, 3, 4]",
                           " by reinforce"),
}


def _graph(family: str) -> str:
    t, p, q, draws, by = PAIRS[family]
    draws = draws.format(S=S)
    return (
        f"graph pair(a: {t}, b: {t}, c: {t}, d: {t}) -> (f32[3], f32[3], f32[{S}, 3]) {{\n"
        f"    p = {p}\n"
        f"    q = {q}\n"
        f"    s ~ {p[:-1]}, shape = [{draws[4:-1]}]){by}\n"
        f"    return kl(p, q), kl(q, p), log_prob(p, s) - log_prob(q, s)\n"
        f"}}\n")


def _run(family: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (3, 4) if "categorical" in family else (3,)
    # p and q apart (means 1 and -1), so that KL(p || q) and KL(q || p) differ clearly
    a, c = (rng.normal(m, 1.5, size=shape).astype(np.float32) for m in (1.0, -1.0))
    b, d = (rng.normal(0, 0.5, size=shape).astype(np.float32) for _ in range(2))
    graph = loads(_graph(family)).compile("pair")
    variables = graph.init(jax.random.key(0), a, b, c, d)
    return [np.asarray(v) for v in graph(variables, a, b, c, d, key=jax.random.key(seed + 1))]


@pytest.mark.parametrize("family", sorted(PAIRS))
def test_analytic_kl_matches_monte_carlo(family):
    kl, reverse, log_ratio = _run(family)
    assert log_ratio.shape == (S, 3)
    estimate = log_ratio.mean(0)
    stderr = log_ratio.std(0) / np.sqrt(S)
    assert np.all(kl >= 0) and np.all(kl > 1e-3), kl
    off = np.abs(estimate - kl) / stderr
    assert np.all(off < TOLERANCE), f"{family}: KL {kl}, Monte-Carlo {estimate} ± {stderr}"
    # the estimate tells KL(p || q) from KL(q || p): the test has the power to fail
    assert np.max(np.abs(estimate - reverse) / stderr) > TOLERANCE


def test_the_kl_of_a_distribution_with_itself_is_zero():
    src = ("graph self_kl(a: f32[3, 4], m: f32[3], s: f32[3]) -> (f32[3], f32[3], f32[3, 4]) {\n"
           "    return kl(categorical(a), categorical(a)), kl(normal(m, s), normal(m, s)),\n"
           "           kl(bernoulli(logits = a), bernoulli(logits = a))\n}\n")
    graph = loads(src).compile("self_kl")
    a = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    m, s = np.zeros(3, np.float32), np.full(3, 0.5, np.float32)
    for value in graph(graph.init(jax.random.key(0), a, m, s), a, m, s):
        np.testing.assert_allclose(np.asarray(value), 0.0, atol=1e-6)


# `shape = [S, ...]` draws S samples of each distribution. The categorical families (and
# gumbel_softmax) used to ignore it and drew one per distribution, typed as S.
@pytest.mark.parametrize("family,by", [
    ("categorical", "reinforce"), ("onehot_categorical", "reinforce"),
    ("onehot_categorical", "gumbel_softmax(hard = true)"),
    ("onehot_categorical", "straight_through"),
])
def test_discrete_draws_take_the_shape_given(family, by):
    n = 4000
    out = f"i32[{n}, 3]" if family == "categorical" else f"f32[{n}, 3, 4]"
    extra = "" if family == "categorical" else ", 4"
    src = (f"graph draws(a: f32[3, 4]) -> {out} {{\n"
           f"    s ~ {family}(logits = a, shape = [{n}, 3{extra}]) by {by}\n"
           f"    return s\n}}\n")
    graph = loads(src).compile("draws")
    a = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    s = np.asarray(graph(graph.init(jax.random.key(0), a), a, key=jax.random.key(1)))
    onehot = np.eye(4)[s] if family == "categorical" else s
    assert onehot.shape == (n, 3, 4)
    np.testing.assert_allclose(onehot.sum(-1), 1.0)
    probs = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    stderr = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(onehot.mean(0) - probs) < 5 * stderr + 1e-6)
    assert len({tuple(row.ravel()) for row in onehot[:50]}) > 1   # the draws differ
