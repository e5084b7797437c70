"""Compiled programs kept on disk, keyed on the traced program (its jaxpr).

JAX's persistent compilation cache is keyed on the StableHLO module, so a warm start
still lowers every program to StableHLO before it can look one up: about 0.6 s of the
2.3 s a second `graphdl run models/cnn2d.gdl` took to its first step on a 2-core CPU.
This cache is keyed one stage earlier, on what the trace produced, so a hit skips the
lowering and JAX's lookup and loads the executable (`jax.experimental.serialize_executable`).

The key is everything the compiled program depends on besides its trace: the jaxpr's
text and constants, the arguments' types, layouts and tree, the results' tree and types
(the jaxpr names no dict keys), the donated arguments, the
XLA options, the jax and jaxlib versions, the backend and its devices, $XLA_FLAGS and
JAX's trace-time configuration (x64, matmul precision, ...). A program that calls back
into Python (its executable holds the callback) or that JAX cannot serialise is not kept.
A program kept here is compiled afresh at its first miss, not loaded from JAX's cache
(`compile_fresh`), and so is in this cache only.

The entries live in `executables/` inside graphdl's compilation cache, go with it
(`--no-compile-cache`, $GRAPHDL_COMPILE_CACHE=off), and are evicted oldest-used first
past `MAX_BYTES`. Loading one unpickles it: the folder is the user's own, as JAX's cache
is, and a file that does not load is deleted and compiled again.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path

import jax
import jaxlib
import numpy as np

from graphdl.reading import replace_atomically

#: Past this many bytes of entries, the least recently used ones are deleted.
MAX_BYTES = 2**29

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def program_key(traced, args: tuple, kwargs: dict, donate_argnums: tuple,
                options: dict) -> str | None:
    """The key of a traced program (`traced` from `.trace(*args, **kwargs)`), or None where
    it is not to be kept: a Python callback, several processes, a constant that cannot
    be read."""
    try:
        return _key(traced, args, kwargs, donate_argnums, options)
    except Exception:  # a JAX without one of the private names read here: no cache
        return None


def _key(traced, args, kwargs, donate_argnums, options) -> str | None:
    from jax._src import config

    if jax.process_count() > 1:  # each process compiles its part of one SPMD program
        return None
    closed = traced.jaxpr
    text = str(closed)
    if "callback" in text or closed.effects:
        return None
    backend = jax.devices()[0].client
    h = hashlib.sha256()
    for part in (jax.__version__, jaxlib.__version__, backend.platform,
                 backend.platform_version, [(d.id, d.device_kind) for d in jax.devices()],
                 os.environ.get("XLA_FLAGS", ""),
                 _ADDRESS.sub("", repr(config.trace_context())),
                 donate_argnums, sorted(options.items()),
                 str(jax.tree_util.tree_structure((args, kwargs))),
                 # the results' tree and types (the jaxpr shows neither a dict's keys,
                 # {"m": ...} or {"m2": ...}, nor a weak type)
                 str(jax.tree_util.tree_structure(traced.out_info)),
                 [repr(o) for o in jax.tree_util.tree_leaves(traced.out_info)]):
        h.update(repr(part).encode())
        h.update(b"\0")
    for leaf in jax.tree_util.tree_leaves((args, kwargs)):
        h.update(repr(jax.typeof(leaf)).encode())
        if isinstance(leaf, jax.Array):
            h.update(repr((leaf.committed, leaf.sharding)).encode())
        else:
            h.update(type(leaf).__name__.encode())
    h.update(text.encode())
    for const in closed.consts:
        if jax.dtypes.issubdtype(getattr(const, "dtype", None), jax.dtypes.prng_key):
            h.update(repr(const.dtype).encode())
            const = jax.random.key_data(const)
        value = np.asarray(const)
        h.update(repr((value.dtype, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def compile_fresh(traced, options: dict):
    """`traced` lowered and compiled by XLA, never loaded from JAX's persistent cache: an
    executable JAX loaded from there serialises without its compiled functions (XLA:CPU,
    jax 0.10: running one loaded back fails with "NOT_FOUND: Function ... not found").
    None where JAX has changed the private switch this turns (then nothing is kept)."""
    from jax._src import compilation_cache as jax_cache

    lowered = traced.lower()
    try:
        with jax_cache._cache_initialized_mutex:
            saved = jax_cache._cache_checked, jax_cache._cache_used
            jax_cache._cache_checked, jax_cache._cache_used = True, False
    except AttributeError:
        return None
    try:
        return lowered.compile(compiler_options=options or None)
    finally:
        with jax_cache._cache_initialized_mutex:
            jax_cache._cache_checked, jax_cache._cache_used = saved


def load(folder: Path, key: str):
    """The compiled program kept under `key`, or None."""
    path = folder / f"{key}.bin"
    try:
        with open(path, "rb") as f:
            serialized, in_tree, out_tree, device_ids = pickle.load(f)
        from jax.experimental import serialize_executable
        by_id = {d.id: d for d in jax.devices()}
        # on the devices it was compiled for (by default JAX would load it on all of them)
        compiled = serialize_executable.deserialize_and_load(
            serialized, in_tree, out_tree, execution_devices=[by_id[i] for i in device_ids])
    except FileNotFoundError:
        return None
    except Exception:  # truncated, from another jaxlib, ...: compile it again
        path.unlink(missing_ok=True)
        return None
    try:
        os.utime(path)  # most recently used
    except OSError:
        pass
    return compiled


def store(folder: Path, key: str, compiled) -> None:
    """Keep `compiled` under `key` (written whole or not at all), then evict past
    MAX_BYTES. A program JAX cannot serialise is left out."""
    try:
        from jax.experimental import serialize_executable
        device_ids = [d.id for d in compiled.runtime_executable().local_devices()]
        data = pickle.dumps((*serialize_executable.serialize(compiled), device_ids))
    except Exception:  # host callbacks, constants as arguments
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        replace_atomically(folder / f"{key}.bin", lambda f: f.write(data))
    except OSError:  # a read-only folder, a full disk
        return
    _evict(folder, len(data))


_bytes: dict[Path, int] = {}  # each folder's size, read at this process's first store


def _evict(folder: Path, added: int) -> None:
    """Delete the least recently used entries past MAX_BYTES. The folder is listed once per
    process and again only when it has grown past the bound: a test suite stores
    thousands of programs, and a listing per store would cost more than the compiles."""
    if folder in _bytes:
        _bytes[folder] += added
        if _bytes[folder] <= MAX_BYTES:
            return
    entries = []
    for path in folder.glob("*.bin"):
        try:
            st = path.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= MAX_BYTES:
            break
        path.unlink(missing_ok=True)
        total -= size
    _bytes[folder] = total
