"""Layers: ops that own parameters or statistics, or behave differently in training."""

from __future__ import annotations

import itertools
import math

from graphdl.dims import Dim, TensorType, promote
from graphdl.ops._jax import jax, jnp, lax
from graphdl.ops.registry import (
    ShapeError,
    Weight,
    as_int,
    as_ints,
    as_size,
    norm_axis,
    register,
    require_float,
)

T = TensorType


def _with_weights(x: TensorType, weights: dict[str, Weight]) -> str:
    """The result dtype of a layer: its input's dtype promoted with its weights' (f32), as
    the lowering computes it (bf16 @ f32 is f32 in JAX)."""
    dtype = x.dtype
    for w in weights.values():
        dtype = promote(dtype, w.dtype)
    return dtype


# -- dense --------------------------------------------------------------------
def _dense_infer(x, units, bias):
    require_float(x, "dense")
    if x.rank < 1:
        raise ShapeError(f"dense needs a tensor with a feature axis, got {x}", "x")
    if x.shape[-1] == 0:
        raise ShapeError(f"dense needs a non-empty feature axis, got {x}", "x",
                         hint="the last axis is the features; it has size 0")
    size = as_size(units, "units")
    return T(_with_weights(x, _dense_weights(x, units, bias)), x.shape[:-1] + (size,))


def _dense_weights(x, units, bias):
    w = {"w": Weight((x.shape[-1], Dim(units)), ("glorot",))}
    if bias:
        w["b"] = Weight((Dim(units),), ("zeros",))
    return w


def _dense_lower(ctx, x, units, bias, w, b=None):
    y = x @ w
    return y + b if b is not None else y


register("dense", "x, units: int, bias: bool = true", _dense_infer, _dense_lower,
         weights=_dense_weights, doc="x @ w + b over the last axis")


# -- dense_split: one dense layer whose result is split into parts ---------------------------
# The `fuse_dense` pass (graphdl/passes/fuse_dense.py) writes sibling `dense` nodes as one
# of these on their weights concatenated (`concat` nodes), so an LSTM's four gates are one
# [D + H, 4H] matmul, as a JAX user writes it.
def _parts(units) -> list:
    """The unit count of each part (`ints` also takes one number; sizes may be symbolic)."""
    return list(units) if isinstance(units, (list, tuple)) else [units]


def _dense_split_infer(x, units, bias):
    return tuple(_dense_infer(x, u, bias) for u in _parts(units))


def _dense_split_weights(x, units, bias):
    return _dense_weights(x, sum((Dim.of(u) for u in _parts(units)), Dim(0)), bias)


def _dense_split_lower(ctx, x, units, bias, w, b=None):
    y = _dense_lower(ctx, x, units, bias, w, b)
    ends = list(itertools.accumulate(ctx.size(u) for u in _parts(units)))[:-1]
    return tuple(jnp.split(y, ends, axis=-1))


register("dense_split", "x, units: ints, bias: bool = true", _dense_split_infer,
         _dense_split_lower, weights=_dense_split_weights,
         doc="one `dense` of `sum(units)` outputs, split into a part of each size in `units`: "
             "a tuple (the `fuse_dense` pass writes sibling `dense` calls as one)")


# -- convolutions -------------------------------------------------------------
def _spatial(x, op):
    if x.rank not in (3, 4):
        raise ShapeError(f"{op} takes [B, L, C] (1-D) or [B, H, W, C] (2-D) tensors, got {x}",
                         "x", hint="add a channel axis with reshape(x, [B, L, 1])")
    return x.rank - 2


def _conv_out(size: Dim, k: int, stride: int, padding: str, dilation: int) -> Dim:
    """Output length of a window; on a symbolic length, the exact quotient (`L / 2`), which
    must divide once L is bound, as any `T / 2` (a known length rounds down as XLA does)."""
    if padding not in ("same", "valid"):
        raise ShapeError(f"padding must be \"same\" or \"valid\", got \"{padding}\"", "padding")
    span = (k - 1) * dilation + 1
    if size.is_int():
        n = int(size)
        if padding == "same":
            return Dim(-(-n // stride))
        if n < span:
            raise ShapeError(f"the window ({span}) is larger than the input ({size})")
        return Dim((n - span) // stride + 1)
    if padding == "same":
        return size / stride
    return (size - span) / stride + 1


def _conv_infer(x, filters, kernel, stride, padding, dilation, bias):
    require_float(x, "conv")
    n = _spatial(x, "conv")
    ks, ss, ds = as_ints(kernel, "kernel", n), as_ints(stride, "stride", n), as_ints(dilation, "dilation", n)
    sp = tuple(_conv_out(x.shape[1 + i], ks[i], ss[i], padding, ds[i]) for i in range(n))
    size = as_size(filters, "filters")
    dtype = _with_weights(x, _conv_weights(x, filters, kernel, stride, padding, dilation, bias))
    return T(dtype, (x.shape[0],) + sp + (size,))


def _conv_weights(x, filters, kernel, stride, padding, dilation, bias):
    n = x.rank - 2
    ks = as_ints(kernel, "kernel", n)
    w = {"w": Weight(tuple(Dim(k) for k in ks) + (x.shape[-1], Dim(filters)), ("he",))}
    if bias:
        w["b"] = Weight((Dim(filters),), ("zeros",))
    return w


def _dimension_numbers(n):
    return ("NHC", "HIO", "NHC") if n == 1 else ("NHWC", "HWIO", "NHWC")


def _common(x, w):
    """x and w in one dtype (lax convolutions take no mixed dtypes): bf16 x, f32 w -> f32."""
    dtype = jnp.promote_types(x.dtype, w.dtype)
    return x.astype(dtype), w.astype(dtype)


def _conv_lower(ctx, x, filters, kernel, stride, padding, dilation, bias, w, b=None):
    n = x.ndim - 2
    x, w = _common(x, w)
    y = lax.conv_general_dilated(
        x, w, window_strides=as_ints(stride, "stride", n), padding=padding.upper(),
        rhs_dilation=as_ints(dilation, "dilation", n),
        dimension_numbers=_dimension_numbers(n))
    return y + b if b is not None else y


register("conv", "x, filters: int, kernel: ints = 3, stride: ints = 1, padding: str = \"same\", "
         "dilation: ints = 1, bias: bool = true", _conv_infer, _conv_lower,
         weights=_conv_weights, doc="1-D or 2-D convolution, channels last")


def _tconv_infer(x, filters, kernel, stride, padding, bias):
    require_float(x, "conv_transpose")
    n = _spatial(x, "conv_transpose")
    ks, ss = as_ints(kernel, "kernel", n), as_ints(stride, "stride", n)
    sp = []
    for i in range(n):
        size = x.shape[1 + i]
        if padding == "same":
            sp.append(size * ss[i])
        elif padding == "valid":
            sp.append(size * ss[i] + max(ks[i] - ss[i], 0))
        else:
            raise ShapeError(f"padding must be \"same\" or \"valid\", got {padding!r}", "padding")
    size = as_size(filters, "filters")
    dtype = _with_weights(x, _tconv_weights(x, filters, kernel, stride, padding, bias))
    return T(dtype, (x.shape[0], *sp, size))


def _tconv_weights(x, filters, kernel, stride, padding, bias):
    ks = as_ints(kernel, "kernel", x.rank - 2)
    w = {"w": Weight(tuple(Dim(k) for k in ks) + (x.shape[-1], Dim(filters)), ("he",))}
    if bias:
        w["b"] = Weight((Dim(filters),), ("zeros",))
    return w


def _tconv_lower(ctx, x, filters, kernel, stride, padding, bias, w, b=None):
    n = x.ndim - 2
    x, w = _common(x, w)
    y = lax.conv_transpose(x, w, as_ints(stride, "stride", n), padding.upper(),
                           dimension_numbers=_dimension_numbers(n))
    return y + b if b is not None else y


register("conv_transpose", "x, filters: int, kernel: ints = 3, stride: ints = 2, "
         "padding: str = \"same\", bias: bool = true", _tconv_infer, _tconv_lower,
         weights=_tconv_weights, doc="transposed convolution (learned upsampling)")


# -- pooling ------------------------------------------------------------------
def _pool_infer(x, window, stride, padding, indices=False):
    n = _spatial(x, "pooling")
    ws = as_ints(window, "window", n)
    ss = as_ints(stride if stride is not None else window, "stride", n)
    sp = tuple(_conv_out(x.shape[1 + i], ws[i], ss[i], padding, 1) for i in range(n))
    y = T(x.dtype, (x.shape[0], *sp, x.shape[-1]))
    return (y, T("i32", y.shape)) if indices else y


def _window(x, window, stride):
    n = x.ndim - 2
    ws = as_ints(window, "window", n)
    ss = as_ints(stride if stride is not None else window, "stride", n)
    return (1, *ws, 1), (1, *ss, 1)


def _max_pool_lower(ctx, x, window, stride, padding, indices):
    dims, strides = _window(x, window, stride)
    y = lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, padding.upper())
    if not indices:
        return y
    # the flat index of each window's maximum within its (spatial) input map; static
    # sizes (math.prod, not jnp.prod: the shape is known while tracing), integer indices
    # (exact at any size), and no gradient through the index computation
    spatial = x.shape[1:-1]
    flat = jnp.arange(math.prod(spatial), dtype=jnp.int32).reshape(spatial)
    flat = jnp.broadcast_to(flat[None, ..., None], x.shape)
    # tuple operands take init values of their exact dtypes (a bare -inf is f32)
    lowest = jnp.asarray(-jnp.inf, x.dtype)
    _, idx = lax.reduce_window((lax.stop_gradient(x), flat), (lowest, jnp.int32(-1)),
                               _argmax_pair, dims, strides, padding.upper())
    return y, idx


def _argmax_pair(a, b):
    (va, ia), (vb, ib) = a, b
    take_b = (vb > va) | ((vb == va) & (ib < ia))
    return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)


register("max_pool", "x, window: ints = 2, stride: ints = None, padding: str = \"valid\", "
         "indices: bool = false", _pool_infer, _max_pool_lower,
         doc="maximum over each window (default stride = window); with `indices = true` also "
             "the i32 position of each maximum, for `max_unpool`")


def _avg_pool_lower(ctx, x, window, stride, padding):
    dims, strides = _window(x, window, stride)
    total = lax.reduce_window(x, 0.0, lax.add, dims, strides, padding.upper())
    count = lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, dims, strides, padding.upper())
    return total / count


register("avg_pool", "x, window: ints = 2, stride: ints = None, padding: str = \"valid\"",
         _pool_infer, _avg_pool_lower,
         doc="mean over each window (default stride = window); padding is not counted")


def _unpool_infer(y, idx, window):
    if idx.shape != y.shape:
        raise ShapeError(f"max_unpool needs indices shaped like its input: {y} vs {idx}", "idx")
    n = _spatial(y, "max_unpool")
    ws = as_ints(window, "window", n)
    return T(y.dtype, (y.shape[0], *(y.shape[1 + i] * ws[i] for i in range(n)), y.shape[-1]))


def _unpool_lower(ctx, y, idx, window):
    n = y.ndim - 2
    ws = as_ints(window, "window", n)
    out_spatial = tuple(y.shape[1 + i] * ws[i] for i in range(n))
    b, c = y.shape[0], y.shape[-1]
    size = 1
    for d in out_spatial:
        size *= d
    flat_y = jnp.moveaxis(y.reshape(b, -1, c), -1, 1)      # [B, C, n]
    flat_i = jnp.moveaxis(idx.reshape(b, -1, c), -1, 1)
    out = jnp.zeros((b, c, size), y.dtype)
    out = jax.vmap(jax.vmap(lambda o, i, v: o.at[i].set(v)))(out, flat_i, flat_y)
    return jnp.moveaxis(out, 1, -1).reshape((b, *out_spatial, c))


register("max_unpool", "y, idx, window: ints = 2", _unpool_infer, _unpool_lower,
         doc="put each pooled maximum back at the position `max_pool(..., indices = true)` "
             "recorded; zeros elsewhere")


def _global_infer(x):
    _spatial(x, "global pooling")
    return T(x.dtype, (x.shape[0], x.shape[-1]))


register("global_avg_pool", "x", _global_infer,
         lambda ctx, x: jnp.mean(x, axis=tuple(range(1, x.ndim - 1))),
         doc="mean over the spatial axes: `[B, ..., C]` -> `[B, C]`")
register("global_max_pool", "x", _global_infer,
         lambda ctx, x: jnp.max(x, axis=tuple(range(1, x.ndim - 1))),
         doc="maximum over the spatial axes: `[B, ..., C]` -> `[B, C]`")


def _upsample_infer(x, factor):
    n = _spatial(x, "upsample")
    fs = as_ints(factor, "factor", n)
    return T(x.dtype, (x.shape[0], *(x.shape[1 + i] * fs[i] for i in range(n)), x.shape[-1]))


def _upsample_lower(ctx, x, factor):
    for i, f in enumerate(as_ints(factor, "factor", x.ndim - 2)):
        x = jnp.repeat(x, f, axis=1 + i)
    return x


register("upsample", "x, factor: ints = 2", _upsample_infer, _upsample_lower,
         doc="nearest-neighbour upsampling")


# -- embedding ----------------------------------------------------------------
def _embedding_infer(x, vocab, dim):
    if x.dtype not in ("i32", "i64"):
        raise ShapeError(f"embedding looks up integer ids, got {x}", "x")
    return T("f32", x.shape + (as_size(dim, "dim"),))


register("embedding", "x, vocab: int, dim: int", _embedding_infer,
         lambda ctx, x, vocab, dim, w: jnp.take(w, x, axis=0),
         weights=lambda x, vocab, dim: {"w": Weight((Dim(vocab), Dim(dim)), ("normal", 1.0))},
         doc="look integer ids up in a learned `[vocab, dim]` table (a new last axis)")


# -- train-mode behaviour -------------------------------------------------------
def _dropout_infer(x, rate):
    require_float(x, "dropout")
    if not 0 <= float(rate) < 1:
        raise ShapeError(f"dropout rate must be in [0, 1), got {rate}", "rate")
    return x


def _dropout_lower(ctx, x, rate):
    if not ctx.train or rate == 0:
        return x
    keep = jax.random.bernoulli(ctx.key(), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


register("dropout", "x, rate: float = 0.5", _dropout_infer, _dropout_lower, random=True,
         doc="in training, zero each element with probability `rate` (in [0, 1)) and scale "
             "the rest by 1 / (1 - rate); identity in eval")


def _norm_axes(x):
    return tuple(range(x.rank - 1))


def _feature_axis(x, op):
    if x.rank < 1:
        raise ShapeError(f"{op} normalises over a feature axis; got the scalar {x}", "x")


def _bn_infer(x, momentum, eps):
    require_float(x, "batch_norm")
    _feature_axis(x, "batch_norm")
    return T(_with_weights(x, _bn_weights(x, momentum, eps)), x.shape)


def _ln_infer(x, eps):
    require_float(x, "layer_norm")
    _feature_axis(x, "layer_norm")
    return T(_with_weights(x, _ln_weights(x, eps)), x.shape)


def _ln_weights(x, eps):
    return {"scale": Weight((x.shape[-1],), ("ones",)), "bias": Weight((x.shape[-1],), ("zeros",))}


def _bn_stats(x, momentum, eps):
    return {"mean": Weight((x.shape[-1],), ("zeros",)), "var": Weight((x.shape[-1],), ("ones",))}


def _bn_weights(x, momentum, eps):
    return {"scale": Weight((x.shape[-1],), ("ones",)), "bias": Weight((x.shape[-1],), ("zeros",))}


def _bn_lower(ctx, x, momentum, eps, scale, bias, mean, var):
    if ctx.train:
        axes = tuple(range(x.ndim - 1))
        m, v = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
        ctx.update("mean", momentum * mean + (1 - momentum) * lax.stop_gradient(m))
        ctx.update("var", momentum * var + (1 - momentum) * lax.stop_gradient(v))
    else:
        m, v = mean, var
    return (x - m) * lax.rsqrt(v + eps) * scale + bias


register("batch_norm", "x, momentum: float = 0.9, eps: float = 1e-5", _bn_infer, _bn_lower,
         weights=_bn_weights, stats=_bn_stats,
         doc="normalise over all axes but the last (batch statistics in training, the running "
             "`mean` and `var` in eval), then a learned `scale` and `bias`")


def _ln_lower(ctx, x, eps, scale, bias):
    m = jnp.mean(x, axis=-1, keepdims=True)
    v = jnp.var(x, axis=-1, keepdims=True)
    return (x - m) * lax.rsqrt(v + eps) * scale + bias


register("layer_norm", "x, eps: float = 1e-5", _ln_infer, _ln_lower,
         weights=_ln_weights,
         doc="normalise over the last axis, with a learned `scale` and `bias`")


# -- augmentation: graph nodes active only in training --------------------------
def _shift_infer(x, max):
    _spatial(x, "random_shift")
    if as_int(max, "max") < 0:
        raise ShapeError(f"random_shift needs max >= 0, got {max}", "max")
    return x


def _shift_lower(ctx, x, max):
    if not ctx.train or max == 0:
        return x
    n = x.ndim - 2
    shifts = jax.random.randint(ctx.key(), (x.shape[0], n), -max, max + 1)
    pad = [(0, 0)] + [(max, max)] * n + [(0, 0)]
    padded = jnp.pad(x, pad)

    def one(img, s):
        start = tuple(max - s[i] for i in range(n)) + (0,)
        return lax.dynamic_slice(img, start, img.shape[:-1 - n] + x.shape[1:])
    return jax.vmap(one)(padded, shifts)


register("random_shift", "x, max: int = 1", _shift_infer, _shift_lower, random=True,
         doc="shift each example by up to `max` pixels (zero fill); identity in eval")


def _flip_lower(ctx, x, axis):
    if not ctx.train:
        return x
    flip = jax.random.bernoulli(ctx.key(), 0.5, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(flip, jnp.flip(x, axis=axis), x)


def _flip_infer(x, axis):
    norm_axis(axis, x.rank)
    return x


register("random_flip", "x, axis: int = -2", _flip_infer, _flip_lower, random=True,
         doc="in training, flip each example along `axis` (-2: the width of `[B, H, W, C]`, "
             "the length of `[B, L, C]`) with probability 1/2; identity in eval")


def _crop_infer(x, size):
    n = _spatial(x, "random_crop")
    ss = as_ints(size, "size", n)
    for i, s in enumerate(ss):
        d = x.shape[1 + i]
        if d.is_int() and s > int(d):
            raise ShapeError(f"cannot crop {s} from an axis of size {d} in {x}", "size")
    return T(x.dtype, (x.shape[0], *(Dim(s) for s in ss), x.shape[-1]))


def _crop_lower(ctx, x, size):
    n = x.ndim - 2
    ss = as_ints(size, "size", n)
    if not ctx.train:  # centre crop
        starts = [(x.shape[1 + i] - ss[i]) // 2 for i in range(n)]
        return lax.dynamic_slice(x, (0, *starts, 0), (x.shape[0], *ss, x.shape[-1]))
    keys = jax.random.split(ctx.key(), n)
    starts = [jax.random.randint(keys[i], (x.shape[0],), 0, x.shape[1 + i] - ss[i] + 1)
              for i in range(n)]

    def one(img, *st):
        return lax.dynamic_slice(img, (*st, 0), (*ss, img.shape[-1]))
    return jax.vmap(one)(x, *starts)


register("random_crop", "x, size: ints", _crop_infer, _crop_lower, random=True,
         doc="in training, a random `size` crop of each example; a centre crop in eval")


def _noise_lower(ctx, x, std):
    if not ctx.train:
        return x
    return x + std * jax.random.normal(ctx.key(), x.shape, x.dtype)


register("noise", "x, std: float = 0.1", lambda x, std: x, _noise_lower, random=True,
         doc="in training, add Gaussian noise of standard deviation `std`; identity in eval")
