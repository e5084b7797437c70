"""The one place graphdl calls `jax.jit`.

Everything that compiles (a graph called through the API, a train step, an evaluation,
parameter initialisation, bench, export) comes through `compile_fn`, so the options that
apply to every compiled function live here: a device mesh, buffer donation and the
persistent compilation cache. The mesh places the arguments and results (shardings given
as PartitionSpecs are on it). Precision is not an option here: the policy is the IR pass
passes/precision.py, which writes each node's compute dtype before lowering.

XLA's own compile options are the one thing a program decides while it is traced: the
autotuner's measurements may favour one for the whole program (XLA:CPU's YNNPACK
convolutions off, graphdl/ops/conv_forms.py), and they are only known once the trace has
measured them. So `compile_fn` traces a function at its first call, collecting what its
lowerings `ask_options` or `vote_options` for, and compiles it with those options; JAX
keeps the trace, so the function is traced once all the same. Once more only where a
voter lowered to what is not its fastest under the options chosen (it could not know
them before the whole program had voted): the second trace forces them.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from graphdl.lower import executables
from graphdl.reading import cache_root, switched_off

#: "off" turns the persistent compilation cache off (`graphdl --no-compile-cache`).
CACHE_SWITCH = "GRAPHDL_COMPILE_CACHE"

#: The cache evicts its least recently used programs past this size.
CACHE_MAX_BYTES = 2**30

_cache_dir: str | None = None  # the compilation cache JAX was pointed at, once per process
_cache_decided = False  # the default cache is chosen at the first compile of the process


def default_cache_dir() -> Path | None:
    """The persistent compilation cache's folder: $GRAPHDL_CACHE/xla, else
    ~/.cache/graphdl/xla (beside the downloads' cache); None when $GRAPHDL_COMPILE_CACHE
    is "off"."""
    if switched_off(CACHE_SWITCH):
        return None
    return cache_root() / "xla"


def compile_fn(fn: Callable, *, static_argnames: Sequence[str] = (),
               donate_argnums: Sequence[int] = (),
               mesh: jax.sharding.Mesh | None = None, cache_dir: str | None = None,
               in_shardings=None, out_shardings=None, keep: bool = True) -> Callable:
    """`fn` compiled with `jax.jit`.

    mesh: None (one device) or a `jax.sharding.Mesh`; with it, `in_shardings` and
    `out_shardings` (pytree prefixes of the arguments and results, as jax.jit takes them)
    may hold `PartitionSpec`s, which mean that spec on this mesh; what they leave out
    (None) follows the arguments' own shardings, and XLA propagates the rest.
    donate_argnums: arguments whose buffers XLA may reuse for the outputs; the caller
    must not touch those arrays after the call.
    cache_dir: a folder for JAX's persistent compilation cache; the first one given
    holds for the process (JAX reads the setting when it first compiles). Without one,
    the first compile of the process turns the cache on in `default_cache_dir()`,
    unless the program already set `jax_compilation_cache_dir` itself.
    keep: keep the first call's executable on disk (graphdl/lower/executables.py); False
    for a program run once and never again (the autotuner's measurements).
    """
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be None or a jax.sharding.Mesh, got {type(mesh).__name__}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
               for i in donate_argnums):
        raise ValueError(f"donate_argnums must be argument positions, got {donate_argnums!r}")
    if cache_dir is not None:
        _use_cache_dir(str(cache_dir))
    else:
        _default_cache()
    placed = {}
    if mesh is not None:
        for name, tree in (("in_shardings", in_shardings), ("out_shardings", out_shardings)):
            if tree is not None:
                placed[name] = _on_mesh(mesh, tree)
    elif in_shardings is not None or out_shardings is not None:
        raise ValueError("in_shardings and out_shardings need a mesh")
    return Program(fn, dict(static_argnames=tuple(static_argnames),
                            donate_argnums=tuple(donate_argnums), **placed), keep=keep)


def _on_mesh(mesh: jax.sharding.Mesh, tree):
    """Each PartitionSpec of `tree` as a NamedSharding on `mesh`; other leaves as given."""
    spec = jax.sharding.PartitionSpec
    return jax.tree_util.tree_map(
        lambda s: jax.sharding.NamedSharding(mesh, s) if isinstance(s, spec) else s, tree,
        is_leaf=lambda s: isinstance(s, (spec, jax.sharding.Sharding)))


def _default_cache() -> None:
    """The cache on by default (a second `graphdl run` of a file loads its programs instead
    of compiling them): JAX keys each entry on the program's HLO, the compile options and
    the jax/jaxlib versions, so a change to the file or to any file it imports that
    changes the program misses, and one that changes nothing hits."""
    global _cache_decided
    if _cache_decided:
        return
    _cache_decided = True
    if _cache_dir is not None or jax.config.jax_compilation_cache_dir:  # the user's own wins
        return
    path = default_cache_dir()
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile as without a cache
        return
    _use_cache_dir(str(path))


def _use_cache_dir(path: str) -> None:
    global _cache_dir
    if _cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", path)
        # graphdl's programs compile in 0.05-1.5 s on a CPU: JAX's defaults (cache only
        # compiles over 1 s) would keep almost none of them
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
        _cache_dir = path
    elif _cache_dir != path:
        raise ValueError(f"the compilation cache is already {_cache_dir}; one per process")


_asked: contextvars.ContextVar[dict | None] = contextvars.ContextVar("graphdl_compile_options",
                                                                    default=None)


def ask_options(options: dict) -> None:
    """Called by a lowering while a program is traced: compile the program with these XLA
    options (a DebugOptions field name -> value, as `jax.jit`'s `compiler_options`)."""
    asked = _asked.get()
    if asked is not None:
        asked["options"].update(options)


def vote_options(ms_by_options: list[tuple[dict, float]],
                 fits: Callable[[dict], bool] | None = None,
                 decided: Callable[[dict], None] | None = None) -> None:
    """Called by a lowering while a program is traced: its op takes these milliseconds
    (its fastest lowering) in a program compiled with each of these sets of options ({}
    for none). The program is compiled with the set whose total over all the votes is
    least: options hold for the whole program, so one op's gain must outweigh the
    others' losses. `fits(options)`: whether what the op lowered to is its fastest
    under `options`; where one does not fit the chosen set, the program is traced again
    with `forced_options()` the chosen set. `decided(options)` is told the choice."""
    asked = _asked.get()
    if asked is not None:
        for options, ms in ms_by_options:
            key = tuple(sorted(options.items()))
            asked["votes"][key] = asked["votes"].get(key, 0.0) + ms
        asked["voters"].append((fits, decided))


def forced_options() -> dict | None:
    """While a program is traced again after a vote: the options it will be compiled
    with (a lowering picks its fastest under them); else None."""
    asked = _asked.get()
    return None if asked is None else asked["forced"]


def _chosen(asked: dict) -> dict:
    options = dict(asked["options"])
    if asked["votes"]:
        options.update(min(asked["votes"].items(), key=lambda kv: kv[1])[0])
    return options


def _trace(jitted, args: tuple, kwargs: dict, forced: dict | None):
    """Trace `jitted`, collecting the options and votes of its lowerings."""
    asked: dict = {"options": {}, "votes": {}, "voters": [], "forced": forced}
    token = _asked.set(asked)
    try:
        traced = jitted.trace(*args, **kwargs)  # JAX keeps it for the call that follows
    finally:
        _asked.reset(token)
    return traced, asked


class Program:
    """`jax.jit(fn)`, compiled with the XLA options its lowerings ask for. It is what
    `jax.jit` returns to its callers (`jax.export` takes it): calling it, `.trace` and
    `.lower` go to the jitted function, made at the first of them, after a trace that
    collects the options (`ask_options`). A later trace for other shapes keeps them.
    Called inside another trace, where JAX takes no options, it hands them on to the
    program being traced."""

    def __init__(self, fn: Callable, jit_kwargs: dict, keep: bool = True):
        self._fn, self._kwargs, self._keep = fn, jit_kwargs, keep
        self._jitted = self._plain = None
        self._traced = None  # the first trace, until the first call has compiled it
        self._compiled = None  # the first call's executable, kept on disk (executables.py)
        self.options: dict = {}

    def _ready(self, args: tuple, kwargs: dict):
        if self._jitted is None:
            fn = self._fn
            plain = jax.jit(fn, **self._kwargs)
            traced, asked = _trace(plain, args, kwargs, None)
            chosen = _chosen(asked)
            if any(fits is not None and not fits(chosen) for fits, _ in asked["voters"]):
                # a lowering picked for other options: trace again with the chosen ones
                # forced, through a new function (JAX keeps one trace per function)
                fn = functools.wraps(self._fn)(lambda *a, **k: self._fn(*a, **k))
                plain = jax.jit(fn, **self._kwargs)
                traced, asked = _trace(plain, args, kwargs, chosen)
            for _, decided in asked["voters"]:
                if decided is not None:
                    decided(chosen)
            self.options, self._plain = chosen, plain
            self._jitted = jax.jit(fn, compiler_options=chosen, **self._kwargs) \
                if chosen else plain
            self._traced = traced
        if self.options and _traced_inside(args, kwargs):
            ask_options(self.options)
            return self._plain
        return self._jitted

    def _executable(self, traced, args: tuple, kwargs: dict):
        """The compiled program for these arguments, loaded from the executables' cache
        or compiled and kept there; None where there is no cache or the program is not
        one to keep (see executables.py)."""
        if not self._keep or _cache_dir is None \
                or set(self._kwargs) != {"static_argnames", "donate_argnums"} \
                or self._kwargs["static_argnames"]:
            return None  # shardings on a mesh and static arguments: jax.jit's own path
        key = executables.program_key(traced, args, kwargs, self._kwargs["donate_argnums"],
                                      self.options)
        if key is None:
            return None
        folder = Path(_cache_dir) / "executables"
        compiled = executables.load(folder, key)
        if compiled is None:
            compiled = executables.compile_fresh(traced, self.options)
            if compiled is not None:
                executables.store(folder, key, compiled)
        return compiled

    def __call__(self, *args, **kwargs):
        if self._jitted is None:
            self._ready(args, kwargs)
            if not _traced_inside(args, kwargs):
                self._compiled = self._executable(self._traced, args, kwargs)
            self._traced = None
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except (TypeError, ValueError):  # checked before it runs: other types, a trace
                self._compiled = None  # from now on, jax.jit's dispatch
        if self.options:
            return self._ready(args, kwargs)(*args, **kwargs)
        return self._jitted(*args, **kwargs)

    def trace(self, *args, **kwargs):
        return self._ready(args, kwargs).trace(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._ready(args, kwargs).lower(*args, **kwargs)


def _traced_inside(args: tuple, kwargs: dict) -> bool:
    """Called inside another function's trace (an argument is a tracer)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs)))
