"""Measure an op's candidate lowerings on this machine and keep the fastest.

A node whose `lowering` is "auto" (the `conv_lowering` pass writes it for a shape never
measured here) is resolved when it is first lowered, while the graph is traced: each
candidate of the op (`Op.extra["lowerings"]`) is compiled on random inputs of the node's
concrete shapes, its forward and backward timed, and the fastest kept in the autotuning
cache (graphdl/passes/autotune.py) under the node's key, so the next trace (and
`graphdl show --ir --after conv_lowering`) reads it instead of measuring.

The measurement runs eagerly inside the trace (`jax.ensure_compile_time_eval`): its
programs are compiled and run on their own and leave nothing in the traced program.
The candidates are compiled first, then run in turns (one run of each per round, so a
burst of load on a shared machine hits them alike): `MIN_ROUNDS` rounds, then more while
the rounds took less than `BUDGET_S` in all, up to `MAX_ROUNDS`; each one's best time
counts. Tests pass a fake `timer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from graphdl.ir.graph import IR, node
from graphdl.ir.node import Node
from graphdl.lower.compile import ask_options, compile_fn, vote_options
from graphdl.ops import REGISTRY
from graphdl.ops.registry import Op
from graphdl.passes import autotune
from graphdl.passes.conv_lowering import tuning_key

#: the time the timed runs of all candidates together may take past MIN_ROUNDS rounds
BUDGET_S = 0.5
MIN_ROUNDS, MAX_ROUNDS = 3, 7

Timer = Callable[[dict, tuple], dict]


def best_times(fns: dict[str, Callable], args: tuple) -> dict[str, float]:
    """The fastest run of each `fns[name](*args)`, in seconds, timed in interleaved
    rounds (the first call of each compiles and is not counted; a candidate that fails
    to compile or run is left out)."""
    for name, fn in list(fns.items()):
        try:
            jax.block_until_ready(fn(*args))
        except Exception:  # noqa: BLE001 - e.g. a JAX that no longer takes its compile option
            del fns[name]
    best = dict.fromkeys(fns, float("inf"))
    start = time.perf_counter()
    for rounds in range(1, MAX_ROUNDS + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - t0)
        if rounds >= MIN_ROUNDS and time.perf_counter() - start > BUDGET_S:
            break
    return best


def resolve(ir: IR, n: Node, kwargs: dict, timer: Timer | None = None) -> Node:
    """`n` with its "auto" lowering replaced by the kept or measured pick; in a run of
    several processes, every lowering is "xla". A shape with
    symbolic sizes (`graphdl export` with a symbolic batch) is not measured: the kept
    pick of its other sizes, else the op as written ("xla"); nor is any shape when
    $GRAPHDL_AUTOTUNE is "off"."""
    if jax.process_count() > 1:
        # each process would read its own cache or measure on its own: their programs must
        # be the same for the collectives to meet, so every process lowers as written
        return _with_lowering(n, "xla")
    shape = np.shape(kwargs["x"])
    known = all(isinstance(d, (int, np.integer)) for d in shape)
    k = None
    if all(isinstance(d, (int, np.integer)) for d in shape[1:]):
        k = tuning_key(ir, n, tuple(int(d) for d in shape[1:]))
    entry = autotune.read_all().get(k) if k is not None else None
    pick, ms = (entry["pick"], entry.get("ms") or {}) if entry else (None, {})
    if n.attrs["lowering"] != "auto":
        pick = n.attrs["lowering"]  # the pass's kept pick, or a lowering written in the IR
    elif pick is None and (not known or not autotune.measuring()):
        pick = "xla"
    elif pick is None:
        x = node(ir, n.inputs[n.args.index("x")])
        with jax.ensure_compile_time_eval():
            ms = measure(n, kwargs, input_grad=x.op != "input", timer=timer or best_times)
        pick = min(ms, key=ms.get)
        autotune.record(k, pick, ms, batch=int(shape[0]))
    _vote(REGISTRY[n.op], pick, ms)
    return _with_lowering(n, pick)


def _vote(op: Op, pick: str, ms: dict) -> None:
    """The program's vote for the compile options of `pick`'s computation: "xla" and
    "eigen" are one HLO convolution, fastest with or without YNNPACK's convolutions; the
    program takes the options that are fastest over all its convolutions. A pick the
    options do not touch ("slices") casts no vote."""
    same = op.extra.get("same_computation", {})
    base = same.get(pick, pick)
    variants = [v for v in op.extra["lowerings"] if same.get(v, v) == base]
    variants = [(options(op, v), ms.get(v)) for v in variants]
    variants = [(o, t) for o, t in variants if o is not None and t is not None]
    if len({tuple(sorted(o.items())) for o, _ in variants}) > 1:
        vote_options(variants)


def _with_lowering(n: Node, pick: str) -> Node:
    return Node(n.op, n.inputs, n.args, {**n.attrs, "lowering": pick}, n.type, n.span,
                n.scope)


def options(op: Op, lowering: str, platform: str | None = None) -> dict | None:
    """The XLA compile options that `lowering` of `op` needs on `platform` (default: JAX's
    backend), {} for none; None when it is no candidate there
    (`Op.extra["compile_options"]`, graphdl/ops/conv_forms.py)."""
    by_platform = op.extra.get("compile_options", {}).get(lowering)
    if by_platform is None:
        return {}
    return by_platform.get(platform or jax.default_backend())


def measure(n: Node, kwargs: dict, input_grad: bool, timer: Timer) -> dict[str, float]:
    """Milliseconds of each candidate lowering of `n`: forward and backward (to the
    weights, and to the input when `input_grad`) on random inputs of the operands'
    shapes and dtypes."""
    op = REGISTRY[n.op]
    rng = np.random.default_rng(0)
    names = sorted(kwargs)
    args = tuple(jnp.asarray(rng.standard_normal(np.shape(kwargs[a])), jnp.result_type(kwargs[a]))
                 for a in names)
    wrt = tuple(i for i, a in enumerate(names) if a != "x" or input_grad)
    fns = {}
    for lowering in op.extra["lowerings"]:
        if options(op, lowering) is None:  # not on this platform
            continue
        attrs = {**n.attrs, "lowering": lowering}

        def loss(*values, attrs=attrs, lowering=lowering):
            ask_options(options(op, lowering))  # a candidate's program: its own options
            y = op.lower(None, **dict(zip(names, values)), **attrs)
            return jnp.sum(y * jnp.cos(y))  # a cotangent that is not all ones

        fns[lowering] = compile_fn(jax.grad(loss, argnums=wrt))
    return {name: 1e3 * s for name, s in timer(fns, args).items()}
