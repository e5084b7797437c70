"""The one place graphdl calls `jax.jit`.

Everything that compiles (a graph called through the API, a train step, an evaluation,
parameter initialisation, bench, export) comes through `compile_fn`, so the options that
apply to every compiled function live here: a precision policy, a device mesh, buffer
donation and the persistent compilation cache. Precision and mesh are accepted and
checked now and applied later, so callers can already pass them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax

PRECISIONS = ("f32", "bf16", "f16")

_cache_dir: str | None = None  # the compilation cache JAX was pointed at, once per process


def compile_fn(fn: Callable, *, static_argnames: Sequence[str] = (),
               donate_argnums: Sequence[int] = (), precision: str | None = None,
               mesh: jax.sharding.Mesh | None = None, cache_dir: str | None = None) -> Callable:
    """`fn` compiled with `jax.jit`.

    precision: None (the IR's own dtypes) or one of PRECISIONS; not applied yet.
    mesh: None (one device) or a `jax.sharding.Mesh`; not applied yet.
    donate_argnums: arguments whose buffers XLA may reuse for the outputs; the caller
    must not touch those arrays after the call.
    cache_dir: a folder for JAX's persistent compilation cache; the first one given
    holds for the process (JAX reads the setting when it first compiles).
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be None or one of {', '.join(PRECISIONS)}, "
                         f"got {precision!r}")
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be None or a jax.sharding.Mesh, got {type(mesh).__name__}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
               for i in donate_argnums):
        raise ValueError(f"donate_argnums must be argument positions, got {donate_argnums!r}")
    if cache_dir is not None:
        _use_cache_dir(str(cache_dir))
    return jax.jit(fn, static_argnames=tuple(static_argnames),
                   donate_argnums=tuple(donate_argnums))


def _use_cache_dir(path: str) -> None:
    global _cache_dir
    if _cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", path)
        _cache_dir = path
    elif _cache_dir != path:
        raise ValueError(f"the compilation cache is already {_cache_dir}; one per process")
