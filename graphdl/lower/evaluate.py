"""Walk an IR in execution order (`graphdl.ir.order`) and compute each node with JAX.

The walk happens once, while `jax.jit` traces; the compiled function holds only the
JAX operations, so a graph runs as fast as the same JAX written by hand.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from graphdl.dims import numpy_name
from graphdl.errors import GdlError, UserError
from graphdl.ir.graph import IR, node, nodes, order
from graphdl.ir.node import Node
from graphdl.lower import autotune
from graphdl.lower.context import LowerCtx, NeedsKey
from graphdl.lower.generate import lower_generate
from graphdl.lower.masked import masked_reduce
from graphdl.lower.stochastic import (
    lower_cost,
    lower_dist,
    lower_expect,
    lower_sample,
    lower_surrogate,
)
from graphdl.ops import REGISTRY


def _operands(n: Node, env: dict) -> dict:
    kwargs: dict = {}
    for src, name in n.operands():
        value = env[src]
        if "." in name and name.split(".", 1)[0] == "xs":  # a list: xs.0, xs.1
            kwargs.setdefault(name.split(".", 1)[0], []).append(value)
        else:
            kwargs[name] = value
    return kwargs


def _initial(init: tuple, shape, dtype):
    name = init[0]
    if name == "zeros":
        return jnp.zeros(shape, dtype)
    if name == "ones":
        return jnp.ones(shape, dtype)
    raise ValueError(f"a state must start from zeros or ones here, not {name}")


def lower_scan(ctx: LowerCtx, nid: int, n: Node, env: dict):
    """`scan`: lax.scan over axis `axis` of xs; each state starts in its declared dtype.

    With a `lengths` operand (i32[B], B the step input's axis 0), step t of sequence b
    runs only while t < lengths[b]: past it the state keeps its value and the output is
    0 (so is a sample's log-probability that the surrogate pass adds, when it has the
    batch axis first). Sequences are right-padded either way, so a reversed scan skips
    the padding first and starts each sequence at its last real step.
    """
    attrs = n.attrs
    body, axis, states = attrs["body"], attrs["axis"], attrs["states"]
    operands = {name: env[src] for src, name in n.operands()}
    given = {name.split(".", 1)[1]: v for name, v in operands.items() if name.startswith("init.")}
    lengths = operands.get("lengths")
    xs = jnp.moveaxis(env[n.inputs[0]], axis, 0)
    init = {}
    for name in states:
        snode = node(body, body.graph["states"][name][0])
        shape = tuple(ctx.size(d) for d in snode.shape)
        dtype = jnp.dtype(numpy_name(snode.type.dtype))
        init[name] = jnp.asarray(given[name], dtype) if name in given else \
            _initial(snode.attrs["init"], shape, dtype)
    x_name = node(body, body.graph["inputs"][0]).attrs["name"]
    base = ctx.base_key
    steps = jnp.arange(xs.shape[0])
    # statistics the body updates (batch norm in a cell) ride in the carry, step to step
    stat_names = sorted({b.attrs["name"] for _, b in nodes(body) if b.op == "stat"})
    stats0 = {name: ctx.stats[name] for name in stat_names}

    # with lengths: the output, and each extra output (a sample's log-probability) that
    # has the batch axis first, is 0 past a sequence's length
    batch = node(body, body.graph["inputs"][0]).shape[:1]
    masked = {0} | {i for i, o in enumerate(body.graph["outputs"])
                    if i and batch and (node(body, o).shape or ())[:1] == batch}

    invariants = loop_invariants(body, ctx)

    def step(carry, inp):
        state, stats = carry
        x_t, t = inp
        sub = LowerCtx(ctx.params, {**ctx.stats, **stats}, None if base is None else
                       jax.random.fold_in(jax.random.fold_in(base, nid), t), ctx.train,
                       ctx.stochastic)
        sub.dims = dict(ctx.dims)
        values = run_ir(body, sub, {x_name: x_t}, state, invariants)
        nxt = {name: values[body.graph["states"][name][1]] for name in states}
        new_stats = {name: sub.stats[name] for name in stat_names}
        outs = [values[o] for o in body.graph["outputs"]]
        if lengths is not None:
            live = t < lengths  # [B]: this step is a real one of sequence b
            nxt = {name: _where(live, nxt[name], state[name]) for name in states}
            outs = [_where(live, o, jnp.zeros_like(o)) if i in masked else o
                    for i, o in enumerate(outs)]
        return (nxt, new_stats), outs

    if attrs.get("remat"):  # the scan_remat pass: recompute the step in the backward pass
        step = jax.checkpoint(step)
    # lax.scan unrolls a loop of known length only (`graphdl export` with a symbolic T)
    unroll = attrs["unroll"] if isinstance(xs.shape[0], int) else 1
    (final, stats), (ys, *extra) = lax.scan(step, (init, stats0), (xs, steps),
                                            reverse=attrs["reverse"], unroll=unroll)
    if ctx.train:
        for name in stat_names:
            ctx.new_stats[name] = ctx.stats[name] = stats[name]
    # extra body outputs (the surrogate pass's log-probabilities) stay stacked on axis 0
    return (jnp.moveaxis(ys, 0, axis), *[final[name] for name in states], *extra)


def _where(live, new, old):
    """`new` where `live` (over axis 0, the batch), else `old`."""
    return jnp.where(live.reshape(live.shape + (1,) * (new.ndim - 1)), new, old)


def run_ir(ir: IR, ctx: LowerCtx, inputs: dict, states: dict | None = None,
           given: dict | None = None) -> dict:
    """Values of every node of `ir`, keyed by node id; inputs by name. The nodes in
    `given` (id -> value) are not computed again."""
    env: dict = dict(given or {})
    _run_nodes(ir, ctx, [nid for nid in order(ir) if nid not in env], env, inputs, states)
    return env


def loop_invariants(body: IR, ctx: LowerCtx) -> dict:
    """The values of a loop body's nodes that are the same at every step (computed from
    parameters and constants alone: no input, state, statistic or random draw), computed
    once, before the loop.

    XLA hoists such values out of the forward loop by itself, but not out of the loop
    the gradient runs: there a weight that `fuse_dense` concatenated inside the body is
    sliced back into its parts at every step and each part's gradient summed on its own
    (a few percent of an LSTM train step); computed before the loop, its gradient is
    summed as one and sliced once.
    """
    invariant: set[int] = set()
    for nid in order(body):
        n = node(body, nid)
        op = REGISTRY.get(n.op)
        if n.op == "param" or (op is not None and not op.random and not op.stats
                               and all(i in invariant for i in n.inputs)):
            invariant.add(nid)
    outside = LowerCtx(ctx.params, ctx.stats, None, ctx.train, ctx.stochastic)  # no draws
    outside.dims = dict(ctx.dims)
    env: dict = {}
    _run_nodes(body, outside, [nid for nid in order(body) if nid in invariant], env, {}, None)
    return env


def _run_nodes(ir: IR, ctx: LowerCtx, ids: list[int], env: dict, inputs: dict, states) -> None:
    """Compute the nodes `ids` of `ir`, in that order, into `env`."""
    for nid in ids:
        n = node(ir, nid)
        ctx.node_id, ctx._draws = nid, 0
        try:
            ctx.stat_names = {arg: node(ir, src).attrs["name"] for src, arg in n.operands()
                              if node(ir, src).op == "stat"}
            if "lowering" in n.attrs and n.op in REGISTRY:  # measured once per shape
                n = autotune.resolve(ir, n, _operands(n, env))
            env[nid] = _lower_node(ctx, nid, n, env, inputs, states)
        except (NeedsKey, GdlError):
            raise
        except Exception as err:  # re-raise with the node's .gdl span
            raise GdlError([UserError(f"while computing {n.op}(): {type(err).__name__}: {err}",
                                      n.span).diagnostic]) from err


def _lower_node(ctx: LowerCtx, nid: int, n: Node, env: dict, inputs: dict, states):
    op = n.op
    attrs = n.attrs
    if op == "input":
        ctx.bind_dims(n.shape, inputs[attrs["name"]])
        return inputs[attrs["name"]]
    if op == "param":
        return ctx.params[attrs["name"]]
    if op == "stat":
        return ctx.stats[attrs["name"]]
    if op == "state":
        return states[attrs["name"]]
    if op == "getitem":
        return env[n.inputs[0]][attrs["index"]]
    if op == "generate":
        run_body = functools.partial(run_ir, given=loop_invariants(attrs["body"], ctx))
        return lower_generate(ctx, nid, n, env, run_body, _initial)
    if op == "scan":
        return lower_scan(ctx, nid, n, env)
    if op in ("cost", "surrogate"):  # operands by their own names: term.0, logp.1, ...
        values = {arg: env[src] for src, arg in n.operands()}
        return (lower_cost if op == "cost" else lower_surrogate)(ctx, n, values)
    if op == "expect":
        return lower_expect(ctx, nid, n, env, run_ir)
    kwargs = _operands(n, env)
    if op == "sample":
        return lower_sample(ctx, n, kwargs)
    if op.startswith("dist_"):
        return lower_dist(n, kwargs)
    compute = attrs.get("compute")
    dtype = None if compute is None else jnp.dtype(numpy_name(compute))
    if dtype is not None:
        # the precision pass's decision: float operands in, float results out, in `compute`
        kwargs = {k: _in_dtype(v, dtype) for k, v in kwargs.items()}
        attrs = {k: v for k, v in attrs.items() if k != "compute"}
    if id(n) in ctx.masked:  # a metric's reduction over a padded batch's examples
        out = masked_reduce(op, ctx.example_mask, **kwargs, **attrs)
    else:
        out = REGISTRY[op].lower(ctx, **kwargs, **attrs)
    return out if dtype is None else _in_dtype(out, dtype)


def _in_dtype(value, dtype):
    """`value` (an array, or a list or tuple of them) with its float arrays as `dtype`."""
    if isinstance(value, (list, tuple)):
        return type(value)(_in_dtype(v, dtype) for v in value)
    if hasattr(value, "dtype") and jnp.issubdtype(value.dtype, jnp.floating) \
            and value.dtype != dtype:
        return value.astype(dtype)
    return value
