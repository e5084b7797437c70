"""graphdl: a declarative graph-definition language for neural networks, compiled to jax.jit.

    model = graphdl.load("models/mlp.gdl")
    fn = model.compile("mlp")

The API lives in `graphdl.api`; it is imported on first use so that `graphdl check`
never pays for importing JAX.
"""

from graphdl.errors import GdlError

__all__ = ["GdlError", "Model", "load", "loads"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("load", "loads", "Model", "CompiledGraph"):
        from graphdl import api
        return getattr(api, name)
    raise AttributeError(f"module 'graphdl' has no attribute {name!r}")
