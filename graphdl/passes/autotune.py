"""The autotuning cache: which lowering measured fastest for an op of one shape here.

An entry's key is the op with everything its speed depends on: the input's sizes other
than the batch, the dtypes, the op's attributes, whether the input needs a gradient,
the JAX version, the CPU (model name and core count), the platform (a GPU's picks are
not a CPU's) and the candidates measured. Its value is the pick, the
milliseconds each candidate took (under each set of program options) and the options
the last program with the op was compiled with (the pick is the fastest under them).
The measuring is done by the lowering
(graphdl/lower/autotune.py), once per key; the `conv_lowering` pass reads the picks so that
`graphdl show --ir --after conv_lowering` prints them.

The cache is one JSON file, `cache_root()/autotune/choices.json`, written whole to a
temporary file and renamed over the old one (a reader never sees half a file). A file
that cannot be read or parsed counts as empty and is rewritten at the next pick: a cache
must never stop a run.

This module imports no JAX (`graphdl check` and `show` stay fast): the JAX version is
read from the installed package's metadata.
"""

from __future__ import annotations

import json
import os
import platform as host
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from graphdl.reading import cache_root, replace_atomically, switched_off

#: 2: each lowering also measured under every set of program options ("slices+eigen");
#: 3: the gradients timed apart ("grad"), for picks like "slices/eigen"
FORMAT = 3

#: "off": measure nothing; a shape with no kept pick is lowered as written ("xla")
MEASURE_SWITCH = "GRAPHDL_AUTOTUNE"


def measuring() -> bool:
    """Whether the lowering measures the candidates of a shape with no kept pick (not
    when $GRAPHDL_AUTOTUNE is "off": a shared CI machine, a test suite)."""
    return not switched_off(MEASURE_SWITCH)


def cache_file() -> Path:
    return cache_root() / "autotune" / "choices.json"


@lru_cache(maxsize=1)
def machine() -> str:
    """The JAX version and the CPU the measurements hold for."""
    try:
        jax_version = metadata.version("jax")
    except metadata.PackageNotFoundError:
        jax_version = "?"
    cpu = host.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"jax {jax_version}; {cpu}; {os.cpu_count()} cores"


def platform() -> str:
    """The platform the programs run on ("cpu", "gpu", "tpu"): JAX's default backend
    once JAX is imported (by then it is for any run), else the first of $JAX_PLATFORMS,
    else "cpu" (`graphdl show`, which never imports JAX, shows a CPU's picks)."""
    jax = sys.modules.get("jax")
    if jax is not None:
        return jax.default_backend()
    first = (os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip() or "cpu").lower()
    return "gpu" if first in ("cuda", "rocm") else first  # as default_backend() names them


def key(op: str, sizes: tuple[int, ...], dtypes: tuple[str, ...], attrs: dict,
        input_grad: bool, candidates: tuple[str, ...] = ()) -> str:
    """The cache key of op `op` on an input of `sizes` (all but the batch axis), measured
    among `candidates` (a pick kept before a candidate was added is measured again)."""
    fields = {"op": op, "sizes": list(sizes), "dtypes": list(dtypes),
              "attrs": {k: v for k, v in sorted(attrs.items()) if k != "lowering"},
              "input_grad": input_grad, "machine": machine(), "platform": platform(),
              "candidates": sorted(candidates)}
    return json.dumps(fields, sort_keys=True, default=str)


def read_all() -> dict:
    """Every entry of the cache file; {} when it is missing, unreadable or corrupt."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT \
            or not isinstance(data.get("entries"), dict):
        return {}
    return {k: v for k, v in data["entries"].items()
            if isinstance(v, dict) and isinstance(v.get("pick"), str)}


def lookup(k: str) -> str | None:
    """The pick kept for key `k`, or None."""
    entry = read_all().get(k)
    return entry["pick"] if entry else None


def record(k: str, pick: str, ms: dict[str, float], batch: int | None = None,
           options: str | None = None, grad: dict[str, float] | None = None) -> None:
    """Keep `pick` for key `k` (with each candidate's time, forward and backward, and
    of that its gradients' time; and the name of the program options it was picked
    under); a cache that cannot be written is skipped (the pick is measured again next
    time)."""
    entries = read_all()
    entries[k] = {"pick": pick, "ms": {n: round(v, 4) for n, v in ms.items()}, "batch": batch,
                  "options": options}
    if grad:
        entries[k]["grad"] = {n: round(v, 4) for n, v in grad.items()}
    path = cache_file()
    text = json.dumps({"format": FORMAT, "entries": entries}, indent=1, sort_keys=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda f: f.write(text.encode("utf-8")))
    except OSError:
        pass
