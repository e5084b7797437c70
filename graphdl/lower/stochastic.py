"""Lowering of stochastic nodes (`sample`) and distribution functions (`dist_*`).

Both dispatch through the tables in graphdl/ops: the family entry gives the JAX
functions, the estimator entry gives how a sample is drawn and whether it adds a
score-function term. No family or estimator is named here, so a new table entry
lowers without an edit to this file.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from graphdl.dims import numpy_name
from graphdl.ir.node import Node
from graphdl.lower.context import LowerCtx
from graphdl.ops.distributions import FAMILIES, analytic_kl
from graphdl.ops.estimators import ESTIMATORS


def lower_sample(ctx: LowerCtx, n: Node, kwargs: dict):
    """A `sample` node's value (a score-function estimator's log p is a node of its own,
    added by the surrogate pass)."""
    attrs = n.attrs
    family = FAMILIES[attrs["family"]]
    p = {k: v for k, v in kwargs.items() if k != "baseline"}
    shape = tuple(ctx.size(d) for d in n.shape)
    if not ctx.train and ctx.stochastic == "mean":
        # eval with stochastic="mean": the distribution's mean, typed like a sample; no key
        return family.mean(p).astype(jnp.dtype(numpy_name(family.sample_dtype)))
    estimator = ESTIMATORS[attrs["estimator"]]
    return estimator.lower(ctx.key(), family, p, shape, attrs["options"])


def lower_dist(n: Node, kwargs: dict):
    """`log_prob`, `entropy`, `mean` or `kl` of a distribution (IR ops `dist_*`)."""
    fn = n.op[len("dist_"):]
    p = {k[2:]: v for k, v in kwargs.items() if k.startswith("p.")}
    family = FAMILIES[n.attrs["family"]]
    if fn == "log_prob":
        return family.log_prob(p, kwargs["x"])
    if fn == "entropy":
        return family.entropy(p)
    if fn == "mean":
        return family.mean(p)
    q = {k[2:]: v for k, v in kwargs.items() if k.startswith("q.")}
    kl = analytic_kl(family.name, n.attrs["q_family"])
    if kl is None:  # the elaboration refuses these; an IR built by hand may not
        raise KeyError((family.name, n.attrs["q_family"]))
    return kl(p, q)


def lower_surrogate(kwargs: dict):
    """loss + sum_i stop_gradient(loss) * (sum log p_i - stop_gradient(sum log p_i)):
    the loss in value, with the score-function gradient (see passes/surrogate.py)."""
    loss = kwargs["loss"]
    extra = 0.0
    for logp in kwargs["terms"]:
        total = jnp.sum(logp)
        extra = extra + lax.stop_gradient(loss) * (total - lax.stop_gradient(total))
    return loss + extra
