"""`mean`, `sum`, `max` and `min` over the real examples of a padded batch.

An evaluation pads its split's last, partial batch to the full batch size (so one
compiled program serves every batch) and passes a per-example mask; the reductions over
the batch axis that the runtime marks (`LowerCtx.masked`, see graphdl/runtime/eval_pad.py)
count only the examples whose mask is 1, so every metric equals the one of the unpadded batch up to float round-off.
"""

from __future__ import annotations

import jax.numpy as jnp


def masked_reduce(op: str, mask, x, axis=None, keepdims: bool = False):
    """`op` ("mean", "sum", "max" or "min") of `x` over `axis`, which includes axis 0
    (the examples), counting only the examples (rows of axis 0) where `mask` is nonzero."""
    x = jnp.asarray(x)
    if axis is None:
        axes = tuple(range(x.ndim))
    else:
        axes = tuple(sorted(a % x.ndim for a in (axis if isinstance(axis, (list, tuple))
                                                 else [axis])))
    real = jnp.reshape(mask != 0, (-1,) + (1,) * (x.ndim - 1))
    if op in ("max", "min"):  # a padded row is the identity of the reduction
        return getattr(jnp, op)(jnp.where(real, x, _identity(op, x.dtype)), axis=axes,
                                keepdims=keepdims)
    kept = jnp.where(real, x, jnp.zeros((), x.dtype))  # a padded row adds exactly 0
    if op == "sum":
        return jnp.sum(kept, axis=axes, keepdims=keepdims)  # a bool sum stays an integer count
    # jnp.mean's dtypes: a float stays its dtype, an integer or bool mean is f32
    out = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    acc = jnp.promote_types(out, jnp.float32)
    total = jnp.sum(kept, axis=axes, keepdims=keepdims, dtype=acc)
    count = jnp.sum(jnp.broadcast_to(real, x.shape), axis=axes, keepdims=keepdims, dtype=acc)
    return (total / count).astype(out)


def _identity(op: str, dtype):
    """The value that never wins a `max` (or a `min`) of `dtype`."""
    big = op == "min"
    if dtype == jnp.bool_:
        return jnp.asarray(big)
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.asarray(jnp.inf if big else -jnp.inf, dtype)
    info = jnp.iinfo(dtype)
    return jnp.asarray(info.max if big else info.min, dtype)
