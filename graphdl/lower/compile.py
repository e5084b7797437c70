"""The one place graphdl calls `jax.jit`.

Everything that compiles (a graph called through the API, a train step, an evaluation,
parameter initialisation, bench, export) comes through `compile_fn`, so the options that
apply to every compiled function live here: a device mesh, buffer donation and the
persistent compilation cache. The mesh places the arguments and results (shardings given
as PartitionSpecs are on it). Precision is not an option here: the policy is the IR pass
passes/precision.py, which writes each node's compute dtype before lowering.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from graphdl.reading import cache_root

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
    if os.environ.get(CACHE_SWITCH, "").strip().lower() in ("off", "0", "false", "no"):
        return None
    return cache_root() / "xla"


def compile_fn(fn: Callable, *, static_argnames: Sequence[str] = (),
               donate_argnums: Sequence[int] = (),
               mesh: jax.sharding.Mesh | None = None, cache_dir: str | None = None,
               in_shardings=None, out_shardings=None) -> Callable:
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
    return jax.jit(fn, static_argnames=tuple(static_argnames),
                   donate_argnums=tuple(donate_argnums), **placed)


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
