"""Per-example losses: each returns one value per example (reduce it with mean)."""

from __future__ import annotations

from graphdl.dims import TensorType
from graphdl.ops._jax import jnn, jnp
from graphdl.ops.registry import ShapeError, broadcast, register, require_float

T = TensorType


def _ce_infer(logits, labels):
    require_float(logits, "cross_entropy", "logits")
    if logits.rank < 1:
        raise ShapeError(f"cross_entropy needs class scores on the last axis, got {logits}", "logits")
    if labels.dtype in ("i32", "i64"):
        if labels.shape != logits.shape[:-1]:
            raise ShapeError(f"labels {labels} do not match logits {logits}: integer labels "
                             "need the logits' shape without its last axis", "labels")
    elif labels.shape != logits.shape:
        raise ShapeError(f"target probabilities {labels} must have the shape of logits {logits}",
                         "labels")
    return T(logits.dtype, logits.shape[:-1])


def _ce_lower(ctx, logits, labels):
    logp = jnn.log_softmax(logits, axis=-1)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return -jnp.sum(labels * logp, axis=-1)


register("cross_entropy", "logits, labels", _ce_infer, _ce_lower,
         doc="softmax cross entropy from logits; i32 labels or target probabilities")


def _nll_lower(ctx, logp, labels):
    return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def _nll_infer(logp, labels):
    if labels.dtype not in ("i32", "i64"):
        raise ShapeError(f"nll takes integer labels, got {labels}", "labels",
                         hint="for target probabilities use cross_entropy(logits, probs)")
    return _ce_infer(logp, labels)


register("nll", "logp, labels", _nll_infer, _nll_lower,
         doc="negative log-likelihood from log-probabilities and i32 labels")


def _bce_infer(logits, target):
    require_float(logits, "bce", "logits")
    return T(logits.dtype, broadcast(logits, target, "compare"))


def _bce_lower(ctx, logits, target):
    # log(1 + exp(z)) - z * t: jax.nn.softplus is stable for large logits of either sign,
    # and its derivative compiles to fewer passes than the max/log1p/abs form's
    return jnn.softplus(logits) - logits * target


register("bce", "logits, target", _bce_infer, _bce_lower,
         doc="binary cross entropy from logits, element-wise")


def _mse_infer(pred, target):
    return T(pred.dtype if pred.is_float() else "f32", broadcast(pred, target, "compare")[:1])


def _mse_lower(ctx, pred, target):
    err = jnp.square(pred - target)
    return jnp.mean(err.reshape(err.shape[0], -1), axis=-1) if err.ndim > 1 else err


register("mse", "pred, target", _mse_infer, _mse_lower,
         doc="mean squared error per example (averaged over all but the first axis)")
