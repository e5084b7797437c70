"""Parameter and statistic initialisation from the IR's `param`/`stat` nodes."""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

from graphdl.dims import TensorType
from graphdl.errors import GdlError, UserError

DTYPES = {"f32": jnp.float32, "f16": jnp.float16, "bf16": jnp.bfloat16, "f64": jnp.float64,
          "i32": jnp.int32, "i64": jnp.int64, "bool": jnp.bool_}


def param_specs(irs) -> dict[str, dict]:
    """name -> the `param`/`stat` node attributes (with `type`), over IRs and cell bodies."""
    out: dict[str, dict] = {}

    def visit(ir):
        for nid in ir.nodes:
            n = ir.nodes[nid]
            if n["op"] in ("param", "stat"):
                name = n["attrs"]["name"]
                if name in out and out[name]["type"] != n["type"]:
                    raise GdlError([UserError(
                        f"parameter `{name}` is {n['type']} here but {out[name]['type']} "
                        "elsewhere", n["span"]).diagnostic])
                out[name] = {**n["attrs"], "type": n["type"], "kind": n["op"], "span": n["span"]}
            if "body" in n["attrs"]:
                visit(n["attrs"]["body"])
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
    if name == "uniform":
        a, b = (init[1], init[2]) if len(init) > 2 else (-0.05, 0.05)
        return jax.random.uniform(key, shape, dtype, a, b)
    if name == "load":
        from safetensors.numpy import load_file
        return jnp.asarray(load_file(init[1])[init[2]], dtype)
    if len(shape) < 2:  # fan-in/fan-out initialisers need a matrix
        return jnp.zeros(shape, dtype)
    make = {"glorot": jax.nn.initializers.glorot_uniform, "he": jax.nn.initializers.he_normal,
            "orthogonal": jax.nn.initializers.orthogonal}[name]
    return make()(key, shape, dtype)


def init_params(irs, key) -> tuple[dict, dict]:
    """Fresh {"name": array} parameters and statistics; each key comes from the name.

    All initialisers run as one `jax.jit` function: run op by op, an initialiser like
    he_normal (a truncated normal) compiles a dozen small XLA programs per shape.
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
    loaded, traced = {}, []
    for name, spec in specs.items():
        if spec["init"][0] == "load":  # reads a file: not inside jit
            loaded[name] = _init_one(name, spec, key, shapes[name])
        else:
            traced.append(name)

    def make(key):
        return {name: _init_one(name, specs[name], key, shapes[name]) for name in traced}

    values = {**jax.jit(make)(key), **loaded} if traced else loaded
    params, stats = {}, {}
    for name, spec in specs.items():
        (params if spec["kind"] == "param" else stats)[name] = values[name]
    return params, stats


def _init_one(name: str, spec: dict, key, shape):
    t: TensorType = spec["type"]
    k = jax.random.fold_in(key, zlib.crc32(name.encode()))
    try:
        value = _initialize(spec["init"], k, shape, DTYPES[t.dtype])
    except (OSError, KeyError) as err:
        raise GdlError([UserError(f"cannot initialise `{name}`: {err}", spec["span"]).diagnostic]) from None
    if tuple(np.shape(value)) != shape:
        raise GdlError([UserError(f"`{name}` was loaded with shape {np.shape(value)}, but "
                                  f"{t} is declared", spec["span"]).diagnostic])
    return value


def frozen_names(irs) -> set[str]:
    return {n for n, s in param_specs(irs).items() if s.get("frozen")}
