"""`graphdl export`: a graph as StableHLO through `jax.export`, symbolic dims kept."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

from graphdl.dims import FROM_NUMPY, TensorType, numpy_name
from graphdl.elaborate.check import build_graph_ir
from graphdl.errors import CliError
from graphdl.lower import LowerCtx, init_params, run_ir
from graphdl.lower.context import NeedsKey


def export_graph(model, name: str, shapes: list[str]) -> bytes:
    """StableHLO (MLIR text) of graph `name`: arguments are params, stats, then the inputs."""
    exported, _ = exported_graph(model, name, shapes)
    # the StableHLO module as MLIR text: readable, and loadable without flatbuffers
    return exported.mlir_module().encode()


def exported_graph(model, name: str, shapes: list[str]):
    """(the `jax.export.Exported` of graph `name`, whether it takes a key)."""
    if name not in model.graphs:
        raise CliError(f"--graph {name}: no such graph; the graphs are {', '.join(model.graphs)}")
    gdef = model.program.graphs[name]
    given = {}
    for item in shapes:
        key, _, dims = item.partition("=")
        parts = [d.strip() for d in dims.split(",") if d.strip()]
        if not key or not parts or not all(p.isdigit() or p.isidentifier() for p in parts):
            raise CliError(f"--input {item}: expected NAME=D1,D2,... (an integer, or a name to "
                           "keep that dim symbolic)")
        given[key] = parts
    missing = [a.name for a in gdef.args if a.name not in given]
    if missing:
        example = ",".join("B" if i == 0 else "32" for i in range(len(gdef.args[0].type.dims)))
        raise CliError(f"give the shape of {', '.join(missing)} with --input, e.g. "
                       f"--input {missing[0]}={example}; names (like B) stay symbolic, and every "
                       "dim that sets a parameter's shape must be a number")
    scope = jax.export.SymbolicScope()
    specs = []
    for a in gdef.args:
        if len(given[a.name]) != len(a.type.dims):
            raise CliError(f"--input {a.name}: {len(given[a.name])} dims given, but `{a.name}` "
                           f"has rank {len(a.type.dims)}")
        shape = jax.export.symbolic_shape(",".join(given[a.name]), scope=scope)
        specs.append(jax.ShapeDtypeStruct(shape, jnp.dtype(numpy_name(a.type.dtype))))
    # parameters need concrete shapes: build once with every symbolic dim set to 2
    concrete = {a.name: TensorType.make(a.type.dtype, tuple(int(p) if p.isdigit() else 2
                                                            for p in given[a.name]))
                for a in gdef.args}
    problems: list = []
    ir_params = build_graph_ir(model.program, name, concrete, problems, concrete=True)
    if problems:  # the given shapes do not fit the graph's declared inputs
        given_text = " ".join(f"--input {k}={','.join(v)}" for k, v in given.items())
        raise CliError(f"{given_text}: {problems[0].message}")
    params, stats = init_params([ir_params], jax.random.key(0))

    def function(with_key: bool):
        def fn(params, stats, *rest):
            key = jax.random.wrap_key_data(rest[0]) if with_key else None
            inputs = rest[1:] if with_key else rest
            ir = _ir_for(model, name, inputs)
            ctx = LowerCtx(params, stats, key, train=False)
            values = run_ir(ir, ctx, {a.name: x for a, x in zip(gdef.args, inputs)})
            outs = [values[o] for o in ir.graph["outputs"]]
            return outs[0] if len(outs) == 1 else tuple(outs)
        return jax.jit(fn)
    p_spec = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    s_spec = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), stats)
    try:
        return jax.export.export(function(False))(p_spec, s_spec, *specs), False
    except NeedsKey:  # a sample in eval mode: the exported function takes the key's data
        key_spec = jax.ShapeDtypeStruct(jax.random.key_data(jax.random.key(0)).shape, jnp.uint32)
        exported = jax.export.export(function(True))(p_spec, s_spec, key_spec, *specs)
        print(f"note: `{name}` draws random numbers: the exported function takes a key "
              "(uint32 data of jax.random.key) after the parameters and statistics",
              file=sys.stderr)
        return exported, True


def _ir_for(model, name, inputs):
    """The IR for traced inputs whose dims may be jax symbolic dims (kept as symbols)."""
    from graphdl.dims import Dim, TensorType
    program = model.program
    types = {}
    for a, x in zip(program.graphs[name].args, inputs):
        dims = tuple(Dim(d) if isinstance(d, int) else Dim(str(d)) for d in x.shape)
        types[a.name] = TensorType(FROM_NUMPY[str(x.dtype)], dims)
    problems: list = []
    ir = build_graph_ir(program, name, types, problems)
    if problems:
        raise CliError("cannot export with symbolic dims: "
                       f"{problems[0].message}; give shapes with --input x=32,64")
    return ir
