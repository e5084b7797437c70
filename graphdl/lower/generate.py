"""`generate(cell, init = s, start = tokens, steps = N, pick = ...)`: decoding with lax.scan.

The cell body (its own IR, as for scan) takes the previous token and the states and
returns logits over the vocabulary; each step picks the next token from them:

    argmax   greedy: the most likely token
    sample   a categorical draw from softmax(logits / temperature) (needs a key)
    beam(k)  per example, the sequence of highest total log-probability among k beams

The node's results are (out: i32[*S, N], *final states, logp: f32[*S]), where S is the
shape of `start` (usually [B]) and `logp` the sum of the log-softmax of the picks (of
the logits themselves, not divided by the temperature). With `stop = TOKEN`, a sequence
that picked TOKEN keeps "picking" TOKEN (the padding is the stop token itself) and its
`logp` stops growing; its states keep stepping on that token.

Beam search keeps k hypotheses per example. The cell runs on all k at once under
`jax.vmap` over a leading beam axis, so its IR keeps the shapes it was checked with
(`B`, not `B * k`). Each step expands every beam to its V successors with the beam's
cumulative score plus the log-softmax, keeps the k best of the k*V per example, and
reorders the states and the sequences so far by the survivors' parents. At the start
only beam 0 is live (the others score -1e30), so the k beams are k distinct sequences.
At the end the best-scoring beam is returned, with its final states; scores are total
log-probabilities, with no length normalization. beam(1) is greedy decoding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from graphdl.ir.graph import node, nodes
from graphdl.ir.node import Node
from graphdl.lower.context import LowerCtx

DEAD = -1e30  # the score of a beam that is not there (finite: no inf - inf = nan)


def lower_generate(ctx: LowerCtx, nid: int, n: Node, env: dict, run_ir, initial):
    """The node's results; evaluate.py passes its `run_ir` and `_initial` (a state's
    zeros/ones) in, so that this module does not import it back."""
    attrs = n.attrs
    body, steps, states, pick = attrs["body"], attrs["steps"], attrs["states"], attrs["pick"]
    stop = attrs.get("stop")
    temperature = attrs.get("temperature", 1.0)
    given = {name.split(".", 1)[1]: env[src] for src, name in n.operands()
             if name.startswith("init.")}
    start = env[n.inputs[0]]
    init = {}
    for name in states:
        snode = node(body, body.graph["states"][name][0])
        shape = tuple(ctx.size(d) for d in snode.shape)
        init[name] = given.get(name, initial(snode.attrs["init"], shape, jnp.float32))
    x_name = node(body, body.graph["inputs"][0]).attrs["name"]
    (out_id,) = body.graph["outputs"][:1]
    n_steps = int(ctx.size(steps))
    base = ctx.base_key
    pick_key = ctx.key() if pick == "sample" else None  # NeedsKey when there is none
    # statistics are read, never updated, while decoding
    stat_names = sorted({b.attrs["name"] for _, b in nodes(body) if b.op == "stat"})
    stats = {name: ctx.stats[name] for name in stat_names}

    def cell(tok, state, t):
        """(logits, next states) of one step of the body."""
        sub = LowerCtx(ctx.params, {**ctx.stats, **stats}, None if base is None else
                       jax.random.fold_in(jax.random.fold_in(base, nid), t), False,
                       ctx.stochastic)
        sub.dims = dict(ctx.dims)
        values = run_ir(body, sub, {x_name: tok}, state)
        nxt = {name: values[body.graph["states"][name][1]] for name in states}
        return values[out_id], nxt

    ts = jnp.arange(n_steps)
    if isinstance(pick, list) and pick[:1] == ["beam"]:
        seqs, final, logp = _beam(cell, start, init, ts, int(pick[1]), stop)
    else:
        seqs, final, logp = _single(cell, start, init, ts, pick, stop, temperature, pick_key)
    return (seqs.astype(start.dtype), *[final[name] for name in states], logp)


def _log_softmax(logits):
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def _single(cell, start, init, ts, pick, stop, temperature, key):
    """argmax or sample: one sequence per example."""
    done0 = jnp.zeros(start.shape, bool)
    logp0 = jnp.zeros(start.shape, jnp.float32)

    def step(carry, t):
        tok, state, logp, done = carry
        logits, nxt = cell(tok, state, t)
        lsm = _log_softmax(logits)
        if pick == "sample":
            scaled = logits.astype(jnp.float32) / temperature
            new = jax.random.categorical(jax.random.fold_in(key, t), scaled, axis=-1)
        else:
            new = jnp.argmax(logits, axis=-1)
        new = new.astype(start.dtype)
        gained = jnp.take_along_axis(lsm, new[..., None].astype(jnp.int32), -1)[..., 0]
        if stop is not None:
            new = jnp.where(done, jnp.asarray(stop, start.dtype), new)
            gained = jnp.where(done, 0.0, gained)
            done = done | (new == stop)
        return (new, nxt, logp + gained, done), new

    (_, final, logp, _), picks = lax.scan(step, (start, init, logp0, done0), ts)
    return jnp.moveaxis(picks, 0, -1), final, logp


def _beam(cell, start, init, ts, k, stop):
    """beam(k): k hypotheses per example, the cell vmapped over a leading beam axis."""
    shape = start.shape  # S: the example axes (usually [B])
    rank = len(shape)
    n_steps = ts.shape[0]
    for name, value in init.items():
        if tuple(value.shape[:rank]) != tuple(shape):
            raise ValueError(f"beam search reorders states by example, so state `{name}` "
                             f"{tuple(value.shape)} must start with the axes of `start` "
                             f"{tuple(shape)}")
    vcell = jax.vmap(cell, in_axes=(0, 0, None))
    tile = lambda a: jnp.broadcast_to(a[None], (k, *a.shape))  # noqa: E731
    tok0 = tile(start)
    state0 = {name: tile(v) for name, v in init.items()}
    score0 = jnp.where(jnp.arange(k) == 0, 0.0, DEAD).astype(jnp.float32)
    score0 = jnp.broadcast_to(score0.reshape((k,) + (1,) * rank), (k, *shape))
    seqs0 = jnp.zeros((k, *shape, n_steps), start.dtype)
    done0 = jnp.zeros((k, *shape), bool)

    def reorder(a, parent):
        """a: [k, *S, ...]; parent: [k, *S] -> a[parent[j, s], s, ...] at [j, s, ...]."""
        idx = parent.reshape(parent.shape + (1,) * (a.ndim - parent.ndim))
        return jnp.take_along_axis(a, jnp.broadcast_to(idx, (k, *a.shape[1:])), axis=0)

    def step(carry, t):
        tok, state, score, seqs, done = carry
        logits, nxt = vcell(tok, state, t)  # [k, *S, V]
        lsm = _log_softmax(logits)
        vocab = lsm.shape[-1]
        if stop is not None:  # a finished beam has one successor: stop again, for free
            only_stop = jnp.where(jnp.arange(vocab) == stop, 0.0, DEAD).astype(jnp.float32)
            lsm = jnp.where(done[..., None], only_stop, lsm)
        cand = score[..., None] + lsm  # [k, *S, V]
        flat = jnp.moveaxis(cand, 0, -2).reshape((*shape, k * vocab))
        best, idx = lax.top_k(flat, k)  # [*S, k]
        parent = jnp.moveaxis(idx // vocab, -1, 0)  # [k, *S]
        new = jnp.moveaxis(idx % vocab, -1, 0).astype(start.dtype)
        seqs = reorder(seqs, parent).at[..., t].set(new)
        nxt = {name: reorder(v, parent) for name, v in nxt.items()}
        done = reorder(done, parent)
        if stop is not None:
            done = done | (new == stop)
        return (new, nxt, jnp.moveaxis(best, -1, 0), seqs, done), None

    (_, final, score, seqs, _), _ = lax.scan(step, (tok0, state0, score0, seqs0, done0), ts)
    top = jnp.argmax(score, axis=0)[None]  # [1, *S]: the best beam of each example
    pick_best = lambda a: jnp.take_along_axis(  # noqa: E731
        a, jnp.broadcast_to(top.reshape(top.shape + (1,) * (a.ndim - top.ndim)),
                            (1, *a.shape[1:])), axis=0)[0]
    return pick_best(seqs), {name: pick_best(v) for name, v in final.items()}, pick_best(score)
