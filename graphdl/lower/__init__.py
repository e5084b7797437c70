"""IR -> JAX: evaluate an IR node by node through the op registry's lowerings."""

from graphdl.lower.context import LowerCtx
from graphdl.lower.evaluate import run_ir
from graphdl.lower.init import init_params, param_specs

__all__ = ["LowerCtx", "init_params", "param_specs", "run_ir"]
