"""Parameter and statistic initialisation from the IR's `param`/`stat` nodes."""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from graphdl.dims import TensorType, numpy_name
from graphdl.errors import GdlError, UserError
from graphdl.ir.graph import nodes
from graphdl.lower.compile import compile_fn


def _jax_dtype(dtype: str):
    return jnp.dtype(numpy_name(dtype))


def param_specs(irs) -> dict[str, dict]:
    """name -> the `param`/`stat` node attributes (with `type`), over IRs and cell bodies."""
    out: dict[str, dict] = {}

    def visit(ir):
        for _, n in nodes(ir):
            if n.op in ("param", "stat"):
                name = n.attrs["name"]
                if name in out and out[name]["type"] != n.type:
                    raise GdlError([UserError(
                        f"parameter `{name}` is {n.type} here but {out[name]['type']} "
                        "elsewhere", n.span).diagnostic])
                out[name] = {**n.attrs, "type": n.type, "kind": n.op, "span": n.span}
            if "body" in n.attrs:
                visit(n.attrs["body"])
    for ir in irs:
        visit(ir)
    return out


def _initialize(init: tuple, key, shape: tuple[int, ...], dtype):
    name = init[0]
    if name == "zeros":
        return jnp.zeros(shape, dtype)
    if name == "ones":
        return jnp.ones(shape, dtype)
    if name == "normal":
        std = init[1] if len(init) > 1 else 1.0
        return std * jax.random.normal(key, shape, dtype)
    if name == "vectors":
        # the random part only: the runtime scales it by the std of the file's vectors and
        # puts the file's rows at the tokens it has (graphdl.runtime.vectors), as that needs
        # the corpus's vocabulary, which only the loaded data give
        return jax.random.normal(key, shape, dtype)
    if name == "uniform":
        a, b = (init[1], init[2]) if len(init) > 2 else (-0.05, 0.05)
        return jax.random.uniform(key, shape, dtype, a, b)
    if name == "load":
        try:
            tensors = load_file(init[1])
        except OSError:
            raise
        except Exception as err:  # safetensors' own error: a file that is not one
            raise OSError(f"{init[1]} is not a safetensors file ({type(err).__name__})") \
                from None
        if init[2] not in tensors:
            raise KeyError(f"{init[1]} has no tensor {init[2]!r}; it has "
                           f"{', '.join(sorted(tensors)) or 'none'}")
        return jnp.asarray(tensors[init[2]], dtype)
    if len(shape) < 2 or 0 in shape:  # fan-in/fan-out initialisers need a non-empty matrix
        return jnp.zeros(shape, dtype)
    make = {"glorot": jax.nn.initializers.glorot_uniform, "he": jax.nn.initializers.he_normal,
            "orthogonal": jax.nn.initializers.orthogonal}[name]
    return make()(key, shape, dtype)


def init_params(irs, key) -> tuple[dict, dict]:
    """Fresh {"name": array} parameters and statistics; each key comes from the name.
    `key`: a `jax.random.key`, or an int seed, made into `jax.random.key(seed)` inside
    the compiled function (the same values, one program fewer to trace at start).

    All initialisers run as one `jax.jit` function, cached by the list of (initialiser,
    shape, dtype): run op by op, an initialiser like he_normal (a truncated normal)
    compiles a dozen small XLA programs per shape, and a new jit per call would compile
    again for every `init` of the same architecture.
    """
    specs = param_specs(irs)
    shapes = {}
    for name, spec in specs.items():
        t: TensorType = spec["type"]
        shape = t.concrete()
        if shape is None:
            raise GdlError([UserError(f"the shape of `{name}` ({t}) is not known; call with "
                                      "concrete inputs", spec["span"]).diagnostic])
        shapes[name] = shape
    values: dict = {}
    traced = []
    for name, spec in specs.items():
        if spec["init"][0] == "load":  # reads a file: not inside jit
            try:
                value = _initialize(spec["init"], None, shapes[name], _jax_dtype(spec["type"].dtype))
            except (OSError, KeyError) as err:
                why = err.args[0] if isinstance(err, KeyError) else err
                raise GdlError([UserError(f"cannot initialise `{name}`: {why}",
                                          spec["span"]).diagnostic]) from None
            values[name] = _checked(name, spec, value)
        else:
            traced.append(name)
    if traced:
        layout = tuple((tuple(specs[n]["init"]), shapes[n], specs[n]["type"].dtype) for n in traced)
        try:
            make = _jitted_init(layout)
        except TypeError:  # an unhashable initialiser argument: no cache
            make = compile_fn(_init_fn(layout))
        try:
            out = make(key, np.array([zlib.crc32(n.encode()) for n in traced], np.uint32))
        except KeyError as err:
            name = traced[0]
            raise GdlError([UserError(f"cannot initialise `{name}`: {err}",
                                      specs[name]["span"]).diagnostic]) from None
        for name, value in zip(traced, out):
            values[name] = _checked(name, specs[name], value)
    params, stats = {}, {}
    for name, spec in specs.items():
        (params if spec["kind"] == "param" else stats)[name] = values[name]
    return params, stats


def _init_fn(layout):
    def make(key, crcs):
        if key.ndim == 0 and jnp.issubdtype(key.dtype, jnp.integer):  # a seed, not a key
            key = jax.random.key(key)
        return [_initialize(init, jax.random.fold_in(key, crcs[i]), shape, _jax_dtype(dtype))
                for i, (init, shape, dtype) in enumerate(layout)]
    return make


@functools.lru_cache(maxsize=64)
def _jitted_init(layout):
    return compile_fn(_init_fn(layout))


def _checked(name: str, spec: dict, value):
    if tuple(np.shape(value)) != tuple(spec["type"].concrete()):
        raise GdlError([UserError(f"`{name}` was loaded with shape {np.shape(value)}, but "
                                  f"{spec['type']} is declared", spec["span"]).diagnostic])
    return value


def frozen_names(irs) -> set[str]:
    return {n for n, s in param_specs(irs).items() if s.get("frozen")}
