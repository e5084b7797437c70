"""All built-in ops; importing this package fills `REGISTRY`."""

from graphdl.ops import conv_forms, layers, losses, math  # noqa: F401  (registration side effects)
from graphdl.ops.registry import REGISTRY, Op, ShapeError, Weight

__all__ = ["REGISTRY", "Op", "ShapeError", "Weight"]
