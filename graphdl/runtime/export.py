"""`graphdl export`: a graph as StableHLO through `jax.export`, symbolic dims kept.

The graph's IR comes from the caller (`BuildIR`): the runtime does not run the front end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from graphdl.dims import Dim, TensorType, numpy_name
from graphdl.errors import CliError
from graphdl.ir.graph import IR
from graphdl.lower import LowerCtx, init_params, run_ir
from graphdl.lower.compile import compile_fn
from graphdl.lower.context import NeedsKey
from graphdl.passes.pipeline import run_passes

# (input name -> its type, whether the types are concrete) -> (the graph's IR, the
# messages of any errors building it); the types may hold symbolic dims (Dim("B")).
BuildIR = Callable[[dict[str, TensorType], bool], tuple[IR, list[str]]]


def mlir_text(exported: jax.export.Exported) -> bytes:
    """The StableHLO module as MLIR text: readable, and loadable without flatbuffers."""
    return exported.mlir_module().encode()


def exported_graph(name: str, args: Sequence[tuple[str, str, int]], shapes: list[str],
                   build_ir: BuildIR):
    """(the `jax.export.Exported` of graph `name`, whether it takes a key).

    args: the graph's inputs as (name, dtype, rank); shapes: `--input x=B,64` values.
    """
    given = {}
    for item in shapes:
        key, _, dims = item.partition("=")
        parts = [d.strip() for d in dims.split(",") if d.strip()]
        if not key or not parts or not all(p.isdigit() or p.isidentifier() for p in parts):
            raise CliError(f"--input {item}: expected NAME=D1,D2,... (an integer, or a name to "
                           "keep that dim symbolic)")
        given[key] = parts
    missing = [a for a, _, _ in args if a not in given]
    if missing:
        example = ",".join("B" if i == 0 else "32" for i in range(args[0][2]))
        raise CliError(f"give the shape of {', '.join(missing)} with --input, e.g. "
                       f"--input {missing[0]}={example}; names (like B) stay symbolic, and every "
                       "dim that sets a parameter's shape must be a number")
    scope = jax.export.SymbolicScope()
    specs = []
    for a, dtype, rank in args:
        if len(given[a]) != rank:
            raise CliError(f"--input {a}: {len(given[a])} dims given, but `{a}` has rank {rank}")
        shape = jax.export.symbolic_shape(",".join(given[a]), scope=scope)
        specs.append(jax.ShapeDtypeStruct(shape, jnp.dtype(numpy_name(dtype))))
    # parameters need concrete shapes: build once with every symbolic dim set to 2
    concrete = {a: TensorType.make(dtype, tuple(int(p) if p.isdigit() else 2 for p in given[a]))
                for a, dtype, _ in args}
    ir_params, problems = build_ir(concrete, True)
    if problems:  # the given shapes do not fit the graph's declared inputs
        given_text = " ".join(f"--input {k}={','.join(v)}" for k, v in given.items())
        raise CliError(f"{given_text}: {problems[0]}")
    params, stats = init_params([ir_params], jax.random.key(0))

    def ir_for(inputs) -> IR:
        """The IR for traced inputs whose dims may be jax symbolic dims (kept as symbols)."""
        types = {a: TensorType(dtype, tuple(Dim(d) if isinstance(d, int) else Dim(str(d))
                                            for d in x.shape))
                 for (a, dtype, _), x in zip(args, inputs)}
        ir, problems = build_ir(types, False)
        if problems:
            raise CliError(f"cannot export with symbolic dims: {problems[0]}; give shapes with "
                           "--input x=32,64")
        return run_passes(ir)

    def function(with_key: bool):
        def fn(params, stats, *rest):
            key = jax.random.wrap_key_data(rest[0]) if with_key else None
            inputs = rest[1:] if with_key else rest
            ir = ir_for(inputs)
            ctx = LowerCtx(params, stats, key, train=False)
            values = run_ir(ir, ctx, {a: x for (a, _, _), x in zip(args, inputs)})
            outs = [values[o] for o in ir.graph["outputs"]]
            return outs[0] if len(outs) == 1 else tuple(outs)
        return compile_fn(fn)
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
