"""Measure an op's candidate lowerings on this machine and keep the fastest.

A node whose `lowering` is "auto" (the `conv_lowering` pass writes it for a shape never
measured here) is resolved when it is first lowered, while the graph is traced: each
candidate of the op (`Op.extra["lowerings"]`) is compiled on random inputs of the node's
concrete shapes, its forward pass and its gradients timed apart, and the fastest forward
paired with the fastest gradients ("slices/eigen", graphdl/ops/conv_forms.py: conv_by)
kept in the autotuning cache (graphdl/passes/autotune.py) under the node's key, so the
next trace (and `graphdl show --ir --after conv_lowering`) reads it instead of measuring.

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
from graphdl.lower.compile import ask_options, compile_fn, forced_options, vote_options
from graphdl.ops import REGISTRY
from graphdl.ops.conv_forms import parts
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
    $GRAPHDL_AUTOTUNE is "off".

    A lowering may need XLA options that hold for the whole program ("eigen"), and the
    others are faster or slower in a program compiled with them, so the pick is made
    with the program: each candidate is measured under each set of options, the node
    votes its fastest time under each (lower/compile.py: vote_options), and it lowers to
    its fastest under the options the program takes. The last choice is kept with the
    pick ("options"), so the next trace picks right the first time."""
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
    op = REGISTRY[n.op]
    written = n.attrs["lowering"]
    measured = entry is None and known and written == "auto" and autotune.measuring()
    if measured:
        x = node(ir, n.inputs[n.args.index("x")])
        with jax.ensure_compile_time_eval():
            ms, grad = measure(n, kwargs, input_grad=x.op != "input",
                               timer=timer or best_times)
        entry = {"ms": ms, "grad": grad, "batch": int(shape[0])}
    table = _table(op, entry) if entry else {}
    if measured:
        entry["pick"] = min((_best(t) for t in table.values()), key=lambda b: b[1],
                            default=("xla", 0.0))[0]
        autotune.record(k, entry["pick"], entry["ms"], batch=entry["batch"], grad=entry["grad"])
    if not table or written not in ("auto", entry["pick"]):
        # written in the IR, or nothing measured: lowered as it is, voting its own time
        pick = written if written != "auto" else (entry["pick"] if entry else "xla")
        _vote_as_written(op, pick, table)
        return _with_lowering(n, pick)
    forced = forced_options()
    if forced is not None:
        under = _options_name(op, table, forced)
    elif entry.get("options") in table:
        under = entry["options"]  # the options the last program with this op took
    else:
        under = min(table, key=lambda o: _best(table[o])[1])
    pick = _best(table[under])[0]

    def fits(chosen: dict) -> bool:
        return _best(table[_options_name(op, table, chosen)])[0] == pick

    def decided(chosen: dict) -> None:
        name = _options_name(op, table, chosen)
        if (entry["pick"], entry.get("options")) != (_best(table[name])[0], name):
            autotune.record(k, _best(table[name])[0], entry["ms"], batch=entry.get("batch"),
                            options=name, grad=entry.get("grad"))
    vote_options([(_options_of(op, o), _best(table[o])[1]) for o in table], fits, decided)
    return _with_lowering(n, pick)


def _best(times: dict[str, tuple[float, float | None]]) -> tuple[str, float]:
    """The fastest lowering under one set of options and its milliseconds: the fastest
    forward pass with the fastest gradients ("slices/eigen", or "slices" when one form is
    both) where the gradients were timed apart, else the fastest whole."""
    if any(grad is None for _, grad in times.values()):
        whole = min(times, key=lambda name: times[name][0])
        return whole, times[whole][0]
    fwd = min(times, key=lambda name: times[name][0] - times[name][1])
    grad = min(times, key=lambda name: times[name][1])
    return (fwd if fwd == grad else f"{fwd}/{grad}"), _paired_ms(times, fwd, grad)


def _paired_ms(times: dict[str, tuple[float, float | None]], fwd: str, grad: str) -> float:
    """The milliseconds of `fwd`'s forward pass and `grad`'s gradients (each whole time
    holds its own gradients' part)."""
    return times[fwd][0] - times[fwd][1] + times[grad][1]


def _option_sets(op: Op) -> dict[str, dict]:
    """This platform's sets of program options for `op`'s lowerings, by name: "" for
    none, else the name of the lowering that needs them ("eigen")."""
    sets = {"": {}}
    for lowering in op.extra["lowerings"]:
        o = options(op, lowering)
        if o:
            sets[lowering] = o
    return sets


def _options_of(op: Op, name: str) -> dict:
    """The options of the set named `name` ("" for none, else the lowering needing them)."""
    return options(op, name) if name else {}


def _options_name(op: Op, table: dict, chosen: dict) -> str:
    """The set of `table` that the program's options `chosen` hold ("" when none do)."""
    for name in table:
        o = _options_of(op, name)
        if o and all(chosen.get(k) == v for k, v in o.items()):
            return name
    return ""


def candidates(op: Op) -> dict[str, tuple[str, str]]:
    """What is measured, by the name its time is kept under: (lowering, set of options).
    A lowering that needs options is measured under them ("eigen"); one that needs none
    under each set: alone ("slices") and in a program with another's options
    ("slices+eigen"), unless it is that other's computation ("xla", whose computation
    under eigen's options is "eigen")."""
    same = op.extra.get("same_computation", {})
    sets = _option_sets(op)
    out = {}
    for lowering in op.extra["lowerings"]:
        if options(op, lowering) is None:
            continue  # not on this platform
        if lowering in sets:
            out[lowering] = (lowering, lowering)
            continue
        out[lowering] = (lowering, "")
        for name in sets:
            if name and same.get(name) != lowering:
                out[f"{lowering}+{name}"] = (lowering, name)
    return out


def _table(op: Op, entry: dict) -> dict[str, dict[str, tuple[float, float | None]]]:
    """The measured times as {set of options: {lowering as written: (ms, of which the
    gradient's ms or None)}}; a set with nothing measured is left out."""
    ms, grad = entry.get("ms") or {}, entry.get("grad") or {}
    table: dict[str, dict[str, tuple[float, float | None]]] = {}
    for name, (lowering, under) in candidates(op).items():
        if name in ms:
            table.setdefault(under, {})[lowering] = (ms[name], grad.get(name))
    return table


def _vote_as_written(op: Op, pick: str, table: dict) -> None:
    """The vote of a node whose lowering is fixed: under each set of options, the time
    of its forward and gradient lowerings there ("xla" and "eigen" are one HLO
    convolution, fastest with or without YNNPACK's convolutions)."""
    fwd, grad = parts(pick)
    votes = []
    for under, times in table.items():
        f, g = _as_measured(op, fwd, times), _as_measured(op, grad, times)
        if f is None or g is None:
            continue
        if f == g:
            votes.append((_options_of(op, under), times[f][0]))
        elif times[f][1] is not None and times[g][1] is not None:
            votes.append((_options_of(op, under), _paired_ms(times, f, g)))
    if len(votes) > 1 and all(options(op, p) is not None for p in (fwd, grad)):
        vote_options(votes)


def _as_measured(op: Op, lowering: str, times: dict) -> str | None:
    """The name under which one set's `times` hold `lowering`'s computation ("xla" in a
    program with eigen's options is measured as "eigen"), or None."""
    same = op.extra.get("same_computation", {})
    base = same.get(lowering, lowering)
    return next((name for name in times if same.get(name, name) == base), None)


def _with_lowering(n: Node, pick: str) -> Node:
    return Node(n.op, n.inputs, n.args, {**n.attrs, "lowering": pick}, n.type, n.span,
                n.scope)


def options(op: Op, lowering: str, platform: str | None = None) -> dict | None:
    """The XLA compile options that `lowering` of `op` (or both parts of a "F/G") needs
    on `platform` (default: JAX's backend), {} for none; None when it is no candidate
    there (`Op.extra["compile_options"]`, graphdl/ops/conv_forms.py)."""
    platform = platform or jax.default_backend()
    needed: dict = {}
    for part in dict.fromkeys(parts(lowering)):
        by_platform = op.extra.get("compile_options", {}).get(part)
        if by_platform is None:
            continue
        if by_platform.get(platform) is None:
            return None
        needed.update(by_platform[platform])
    return needed


def measure(n: Node, kwargs: dict, input_grad: bool,
            timer: Timer) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds of each candidate lowering of `n` on random inputs of the operands'
    shapes and dtypes: its forward and backward pass (to the weights, and to the input
    when `input_grad`), and of those its gradients', timed apart: a conv may be fastest
    forward one way and backward another ("slices/eigen")."""
    op = REGISTRY[n.op]
    rng = np.random.default_rng(0)
    names = sorted(kwargs)
    args = tuple(jnp.asarray(rng.standard_normal(np.shape(kwargs[a])), jnp.result_type(kwargs[a]))
                 for a in names)
    wrt = tuple(i for i, a in enumerate(names) if a != "x" or input_grad)
    forwards, gradients = {}, {}
    for name, (lowering, under) in candidates(op).items():
        attrs = {**n.attrs, "lowering": lowering}

        def forward(*values, attrs=attrs, under=under):
            ask_options(_options_of(op, under))  # a candidate's program: its options
            return op.lower(None, **dict(zip(names, values)), **attrs)

        def gradient(dy, *values, forward=forward):
            def of(*diff):  # the forward as a function of the operands differentiated
                merged = list(values)
                for i, v in zip(wrt, diff):
                    merged[i] = v
                return forward(*merged)
            return jax.vjp(of, *(values[i] for i in wrt))[1](dy)  # the forward is dead code

        forwards[name] = compile_fn(forward, keep=False)  # run once
        gradients[name] = compile_fn(gradient, keep=False)
    fwd = timer(forwards, args)
    dy = forwards[next(iter(fwd))](*args) if fwd else None
    grad = timer(gradients, (jnp.cos(dy), *args)) if fwd else {}
    ms = {name: 1e3 * (fwd[name] + grad[name]) for name in fwd if name in grad}
    return ms, {name: 1e3 * grad[name] for name in ms}
