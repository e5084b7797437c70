"""Lowering of stochastic nodes (`sample`), distribution functions (`dist_*`) and what the
surrogate pass adds for them (`cost`, `expect`, `surrogate`; see passes/surrogate.py).

Both dispatch through the tables in graphdl/ops: the family entry gives the JAX
functions, the estimator entry gives how a sample is drawn and whether it adds a
score-function term. No family or estimator is named here, so a new table entry
lowers without an edit to this file.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from graphdl.dims import numpy_name
from graphdl.errors import GdlError, UserError
from graphdl.ir.graph import node
from graphdl.ir.node import Node
from graphdl.lower.context import LowerCtx
from graphdl.ops.distributions import FAMILIES, analytic_kl
from graphdl.ops.estimators import ESTIMATORS, support_problem


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


def magic(x):
    """DiCE's magic box: 1 in value, d magic(x) = magic(x) dx, to every order."""
    return jnp.exp(x - lax.stop_gradient(x))


def _per_example(x):
    """Sum over every axis but the first (the examples)."""
    return jnp.sum(x, axis=tuple(range(1, jnp.ndim(x))))


def _scale(ctx: LowerCtx, term: dict):
    """A term's factor in the loss: coef * prod(times) / prod(per) (passes/costs.py)."""
    times = math.prod(ctx.size(d) for d in term["times"])
    per = math.prod(ctx.size(d) for d in term["per"])
    return term["coef"] * times / per


def lower_cost(ctx: LowerCtx, n: Node, values: dict):
    """A sample's cost per example, no gradient: each term's share of the loss times the
    number of examples N (a term that does not split per example adds its whole share)."""
    examples = ctx.size(n.shape[0]) if n.shape else 1
    out = jnp.zeros(tuple(ctx.size(d) for d in n.shape), jnp.float32)
    for k, term in enumerate(n.attrs["terms"]):
        v = values[f"term.{k}"]
        share = _per_example(v) if term["split"] == "example" else jnp.sum(v)
        out = out + _scale(ctx, term) * examples * share
    return lax.stop_gradient(out)


def lower_surrogate(ctx: LowerCtx, n: Node, values: dict):
    """loss + D - stop_gradient(D): the loss in value, DiCE's gradients (see
    passes/surrogate.py for D); updates each moving-average baseline it owns."""
    attrs = n.attrs
    logp = [values[f"logp.{j}"] for j in range(len(attrs["samples"]))]
    delta = jnp.zeros((), jnp.float32)
    for k, term in enumerate(attrs["terms"]):
        sampled = values[f"term.{k}"]
        value = values.get(f"exact.{k}", sampled)
        whole = sum((jnp.sum(logp[j]) for j in term["whole"]), jnp.zeros(()))
        if term["example"]:
            tau = sum(_per_example(logp[j]) for j in term["example"]) + whole
            scored = jnp.sum(magic(tau) * _per_example(value))
        else:
            scored = magic(whole) * jnp.sum(value)
        delta = delta + _scale(ctx, term) * (scored - jnp.sum(sampled))
    for j, spec in enumerate(attrs["baselines"]):
        if spec is None:
            continue
        cost, b = values[f"cost.{j}"], values[f"baseline.{j}"]
        if spec == "tensor":  # the value network learns to predict the cost
            delta = delta + jnp.mean(jnp.square(b - cost))
        elif spec["update"] and ctx.train:
            decay = spec["moving_average"]
            ctx.update(f"baseline.{j}", decay * b + (1 - decay) * jnp.mean(cost))
        b = jnp.broadcast_to(lax.stop_gradient(b), cost.shape)
        lp = _per_example(logp[j]) if cost.ndim else jnp.sum(logp[j])
        delta = delta + jnp.mean((1 - magic(lp)) * b)
    return values["loss"] + delta - lax.stop_gradient(delta)


def lower_expect(ctx: LowerCtx, nid: int, n: Node, env: dict, run_ir):
    """The expectation of each body output over the support of the sample the body
    reads as `x`: the body runs once per point (vmapped), weighted by its probability;
    per example (the points vary the draws of one example, the same for all) or jointly."""
    attrs = n.attrs
    family = FAMILIES[attrs["family"]]
    operands = {arg: env[src] for src, arg in n.operands()}
    p = {arg[2:]: v for arg, v in operands.items() if arg.startswith("p.")}
    frees = {arg: v for arg, v in operands.items() if arg.startswith("in.")}
    body = attrs["body"]
    x_node = node(body, body.graph["inputs"][0])
    shape = tuple(int(ctx.size(d)) for d in x_node.shape)
    classes = jnp.shape(p[family.event_from])[-1]
    one = family.support(classes)  # [V, *one draw]
    lead = 0 if attrs["over"] == "whole" else 1  # the leading axes every point shares
    draws = shape[lead:len(shape) - (1 if family.one_hot else 0)]
    problem = support_problem(attrs["name"], one.shape[0], math.prod(draws))
    if problem:
        raise GdlError([UserError(problem, n.span).diagnostic])
    grid = np.indices((one.shape[0],) * math.prod(draws)).reshape(math.prod(draws), -1).T
    points = one[jnp.asarray(grid)].reshape((len(grid), *shape[lead:]))
    points = jnp.broadcast_to(points[:, None] if lead else points, (len(grid), *shape))
    key = None if ctx.base_key is None else jax.random.fold_in(ctx.base_key, nid)

    def at(x):
        sub = LowerCtx(ctx.params, ctx.stats, key, ctx.train, ctx.stochastic)
        sub.dims = dict(ctx.dims)
        out = run_ir(body, sub, {"x": x, **frees})
        weight = jnp.sum(family.log_prob(p, x), axis=tuple(range(lead, len(draws) + lead)))
        return [out[o].astype(jnp.float32) for o in body.graph["outputs"]], weight

    values, logw = jax.vmap(at)(points)
    w = jnp.exp(logw)  # [points] or [points, examples]
    return tuple(jnp.sum(w.reshape(w.shape + (1,) * (v.ndim - w.ndim)) * v, axis=0)
                 for v in values)
