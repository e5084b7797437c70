"""Arithmetic, element-wise functions, reductions and shape ops."""

from __future__ import annotations

import itertools
import math

from graphdl.dims import DTYPES, MAX_SECTIONS, Dim, TensorType, numpy_name, promote
from graphdl.errors import did_you_mean
from graphdl.ops._jax import jax, jnn, jnp, lax
from graphdl.ops.registry import (
    ShapeError,
    as_int,
    as_ints,
    broadcast,
    norm_axis,
    register,
    require_float,
)

T = TensorType

# -- binary arithmetic and comparisons (the operators of the language) --------
ARITHMETIC = {
    "add": ("add", lambda a, b: a + b), "sub": ("subtract", lambda a, b: a - b),
    "mul": ("multiply", lambda a, b: a * b), "div": ("divide", lambda a, b: a / b),
    "pow": ("raise", lambda a, b: a ** b), "mod": ("take the remainder of", lambda a, b: a % b),
    "maximum": ("take the maximum of", lambda a, b: jnp.maximum(a, b)),
    "minimum": ("take the minimum of", lambda a, b: jnp.minimum(a, b)),
}
COMPARISONS = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
}
OPERATOR_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow", "%": "mod",
                "@": "matmul", "==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


def _arith_rule(verb: str, name: str):
    def infer(x, y):
        dtype = promote(x.dtype, y.dtype)
        if name == "div" and dtype in ("i32", "i64", "bool"):
            dtype = "f32"  # true division, as in NumPy
        return T(dtype, broadcast(x, y, verb))
    return infer


for _name, (_verb, _fn) in ARITHMETIC.items():
    register(_name, "x, y", _arith_rule(_verb, _name),
             lambda ctx, x, y, _fn=_fn: _fn(x, y),
             doc={"add": "`x + y`, broadcasting",
                  "sub": "`x - y`, broadcasting",
                  "mul": "`x * y`, broadcasting",
                  "div": "`x / y`, broadcasting; true division (integers give f32)",
                  "pow": "`x ** y`, broadcasting",
                  "mod": "`x % y`, broadcasting (the remainder has the sign of `y`)",
                  "maximum": "element-wise maximum, broadcasting",
                  "minimum": "element-wise minimum, broadcasting"}[_name])

for _name, _fn in COMPARISONS.items():
    register(_name, "x, y", lambda x, y: T("bool", broadcast(x, y, "compare")),
             lambda ctx, x, y, _fn=_fn: _fn(x, y),
             doc={"eq": "`x == y`, broadcasting; gives bool",
                  "ne": "`x != y`, broadcasting; gives bool",
                  "lt": "`x < y`, broadcasting; gives bool",
                  "le": "`x <= y`, broadcasting; gives bool",
                  "gt": "`x > y`, broadcasting; gives bool",
                  "ge": "`x >= y`, broadcasting; gives bool"}[_name])


def _matmul_infer(x, y):
    if x.rank < 1 or y.rank < 1:
        raise ShapeError(f"cannot multiply matrices {x} and {y}: @ needs tensors of rank >= 1")
    inner_x = x.shape[-1]
    inner_y = y.shape[-2] if y.rank >= 2 else y.shape[0]
    if inner_x != inner_y:
        raise ShapeError(
            f"cannot multiply {x} @ {y}: inner dims {inner_x} and {inner_y} differ",
            hint="the last axis of the left side must equal the second-to-last of the right")
    batch_x, batch_y = T(x.dtype, x.shape[:-2]), T(y.dtype, y.shape[:-2])
    batch = broadcast(batch_x, batch_y, "batch-multiply")
    out = batch + (x.shape[-2:-1] if x.rank >= 2 else ()) + (y.shape[-1:] if y.rank >= 2 else ())
    return T(promote(x.dtype, y.dtype), out)


register("matmul", "x, y", _matmul_infer, lambda ctx, x, y: x @ y,
         doc="`x @ y`: matrix product over the last two axes, batched over the leading ones")


def _where_infer(cond, x, y):
    shape = broadcast(T("bool", broadcast(cond, x, "select from")), y, "select from")
    return T(promote(x.dtype, y.dtype), shape)


register("where", "cond, x, y", _where_infer, lambda ctx, cond, x, y: jnp.where(cond, x, y),
         doc="`x` where `cond` is true, else `y`, broadcasting")


# -- unary element-wise functions ---------------------------------------------
def _same(x, **_):
    return x


def _float_same(name):
    def infer(x, **_):
        require_float(x, name)
        return x
    return infer


UNARY_FLOAT = {
    "exp": lambda x: jnp.exp(x), "log": lambda x: jnp.log(x), "tanh": lambda x: jnp.tanh(x),
    "sigmoid": lambda x: jnn.sigmoid(x), "relu": lambda x: jnn.relu(x),
    "gelu": lambda x: jnn.gelu(x), "softplus": lambda x: jnn.softplus(x),
    "sqrt": lambda x: jnp.sqrt(x), "sin": lambda x: jnp.sin(x), "cos": lambda x: jnp.cos(x),
    "elu": lambda x: jnn.elu(x), "silu": lambda x: jnn.silu(x),
    "log_sigmoid": lambda x: jnn.log_sigmoid(x),
}
for _name, _fn in UNARY_FLOAT.items():
    register(_name, "x", _float_same(_name), lambda ctx, x, _fn=_fn: _fn(x),
             doc={"exp": "element-wise exp (float tensors)",
                  "log": "element-wise natural log (float tensors)",
                  "tanh": "element-wise tanh (float tensors)",
                  "sigmoid": "element-wise logistic sigmoid 1 / (1 + exp(-x)) (float tensors)",
                  "relu": "element-wise max(x, 0) (float tensors)",
                  "gelu": "element-wise GELU (float tensors)",
                  "softplus": "element-wise log(1 + exp(x)) (float tensors)",
                  "sqrt": "element-wise square root (float tensors)",
                  "sin": "element-wise sine (float tensors)",
                  "cos": "element-wise cosine (float tensors)",
                  "elu": "element-wise ELU (float tensors)",
                  "silu": "element-wise x * sigmoid(x) (float tensors)",
                  "log_sigmoid": "element-wise log(sigmoid(x)), computed stably (float tensors)",
                  }[_name])

register("neg", "x", _same, lambda ctx, x: -x, doc="`-x`")
register("abs", "x", _same, lambda ctx, x: jnp.abs(x), doc="element-wise absolute value")
register("square", "x", _same, lambda ctx, x: jnp.square(x), doc="element-wise square")
register("leaky_relu", "x, slope: float = 0.01", lambda x, slope: x,
         lambda ctx, x, slope: jnn.leaky_relu(x, slope),
         doc="`x` where positive, else `slope * x`")
register("stop_gradient", "x", _same, lambda ctx, x: lax.stop_gradient(x),
         doc="identity forward, zero gradient backward")
register("clip", "x, lo: float, hi: float", lambda x, lo, hi: x,
         lambda ctx, x, lo, hi: jnp.clip(x, lo, hi), doc="clamp every element to `[lo, hi]`")


def _softmax_infer(x, axis):
    require_float(x, "softmax")
    norm_axis(axis, x.rank)
    return x


register("softmax", "x, axis: int = -1", _softmax_infer,
         lambda ctx, x, axis: jnn.softmax(x, axis=axis), doc="softmax along `axis`")
register("log_softmax", "x, axis: int = -1", _softmax_infer,
         lambda ctx, x, axis: jnn.log_softmax(x, axis=axis),
         doc="log of the softmax along `axis`, computed stably")



def _cast_infer(x, dtype):
    if dtype not in DTYPES:
        raise ShapeError(f"unknown dtype \"{dtype}\"", "dtype",
                         hint=did_you_mean(dtype, DTYPES) or f"dtypes are {', '.join(DTYPES)}")
    return T(dtype, x.shape)


register("cast", "x, dtype: str", _cast_infer,
         lambda ctx, x, dtype: x.astype(jnp.dtype(numpy_name(dtype))),
         doc="convert to the dtype named by a string: `cast(x, \"f32\")`")


def _onehot_infer(x, classes):
    if x.dtype not in ("i32", "i64"):
        raise ShapeError(f"onehot needs integer labels, got {x}", "x")
    return T("f32", x.shape + (Dim(as_int(classes, "classes")),))


register("onehot", "x, classes: int", _onehot_infer,
         lambda ctx, x, classes: jnn.one_hot(x, classes),
         doc="integer labels -> f32 one-hot vectors with `classes` entries (a new last axis)")


# -- reductions ---------------------------------------------------------------
def _axes(axis, rank):
    if axis is None:
        return tuple(range(rank))
    axes = [norm_axis(a, rank) for a in as_ints(axis, "axis")]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"axis {axis} names the same axis twice", "axis")
    return tuple(sorted(axes))


def _reduce_rule(name, dtype=None):
    def infer(x, axis, keepdims):
        axes = _axes(axis, x.rank)
        shape = tuple(Dim(1) if i in axes else d for i, d in enumerate(x.shape)
                      if keepdims or i not in axes)
        out = dtype or ("f32" if name == "mean" and not x.is_float() else x.dtype)
        if name == "sum" and x.dtype == "bool":
            out = "i32"
        return T(out, shape)
    return infer


REDUCTIONS = {"sum": "sum", "mean": "mean", "max": "max", "min": "min", "prod": "prod",
              "logsumexp": None}
for _name, _attr in REDUCTIONS.items():
    def _lower(ctx, x, axis, keepdims, _name=_name):
        ax = tuple(axis) if isinstance(axis, (list, tuple)) else axis
        if _name == "logsumexp":
            return jax.scipy.special.logsumexp(x, axis=ax, keepdims=keepdims)
        return getattr(jnp, _name)(x, axis=ax, keepdims=keepdims)
    register(_name, "x, axis: ints = None, keepdims: bool = false", _reduce_rule(_name), _lower,
             doc={"sum": "sum over `axis` (every axis when left out); a bool tensor sums to i32",
                  "mean": "mean over `axis` (every axis when left out); an integer or bool "
                          "tensor gives f32; on a distribution, its mean (section 7)",
                  "max": "maximum over `axis` (every axis when left out); at ties the "
                         "gradient is split among them (`max_first`: all to the first)",
                  "min": "minimum over `axis` (every axis when left out)",
                  "prod": "product over `axis` (every axis when left out)",
                  "logsumexp": "log of the sum of exp over `axis` (every axis when left out), "
                               "stably"}[_name])


def max_first(x, axis: tuple[int, ...]):
    """`jnp.max(x, axis)` whose gradient goes all to the first maximum (in row-major order
    over `axis`), as a max pool's select-and-scatter sends it; `jnp.max` splits it among
    ties. It is also cheaper on XLA:CPU: the forward pass keeps a bool mask, and the
    backward pass is one select, where `jnp.max`'s gradient compares, counts the ties
    (a reduction) and divides (the deck's first pool's backward: 9.4 -> 7.1 ms)."""
    axes = tuple(norm_axis(a, x.ndim) for a in axis)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.max(x, axis=axes)  # no gradient to route

    @jax.custom_jvp
    def f(x):
        return jnp.max(x, axis=axes)

    @f.defjvp
    def _jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        sizes = [x.shape[a] for a in axes]
        small = all(isinstance(d, int) for d in sizes) and math.prod(sizes) <= SLICED_WINDOW
        first = (_first_by_slices if small else _first_by_argmax)(x, axes)
        return f(x), jnp.sum(jnp.where(first, t, 0), axis=axes)

    return f(x)


#: up to this many positions per window, `max_first` finds the first maximum by one
#: slice per position (elementwise: XLA fuses it with the pool); above, by an argmax
SLICED_WINDOW = 16


def _first_by_slices(x, axes: tuple[int, ...]):
    """The mask of each window's first maximum: each position's slice against the
    maximum, a position being the first when no earlier one was."""
    top = jnp.max(x, axis=axes, keepdims=True)
    seen, masks = None, []
    for pos in itertools.product(*(range(x.shape[a]) for a in axes)):
        s = x
        for a, i in zip(axes, pos):
            s = lax.slice_in_dim(s, i, i + 1, axis=a)
        hit = s == top
        masks.append(hit if seen is None else hit & ~seen)
        seen = hit if seen is None else seen | hit
    for a in reversed(axes):  # back to x's layout, the last axis's neighbours first
        k = x.shape[a]
        masks = [jnp.concatenate(masks[i:i + k], axis=a) for i in range(0, len(masks), k)]
    return masks[0]


def _first_by_argmax(x, axes: tuple[int, ...]):
    """The same mask for a large window (a whole feature map): the window's axes moved
    last and flattened, and `argmax` (the first maximum) compared with their positions."""
    last = tuple(range(x.ndim - len(axes), x.ndim))
    moved = jnp.moveaxis(x, axes, last)
    flat = moved.reshape(*moved.shape[:x.ndim - len(axes)], -1)
    where = jnp.argmax(flat, axis=-1)[..., None]
    first = lax.broadcasted_iota(where.dtype, flat.shape, flat.ndim - 1) == where
    return jnp.moveaxis(first.reshape(moved.shape), last, axes)


def _max_first_lower(ctx, x, axis, keepdims):
    axes = _axes(axis, x.ndim)
    y = max_first(x, axes)
    return jnp.expand_dims(y, axes) if keepdims else y


register("max_first", "x, axis: ints = None, keepdims: bool = false", _reduce_rule("max"),
         _max_first_lower,
         doc="`max` whose gradient goes all to the first maximum (row-major over `axis`), "
             "as `max_pool`'s does; `max` splits it among ties. The `pool_reshape` pass "
             "writes it")


def _arg_rule(x, axis):
    a = norm_axis(axis, x.rank)
    return T("i32", x.shape[:a] + x.shape[a + 1:])


register("argmax", "x, axis: int = -1", _arg_rule,
         lambda ctx, x, axis: jnp.argmax(x, axis=axis).astype(jnp.int32),
         doc="i32 index of the maximum along `axis` (the axis is removed)")
register("argmin", "x, axis: int = -1", _arg_rule,
         lambda ctx, x, axis: jnp.argmin(x, axis=axis).astype(jnp.int32),
         doc="i32 index of the minimum along `axis` (the axis is removed)")


def _ratio_rule(num, den):
    broadcast(num, den, "divide")  # any dtype: counts may be i32 or bool sums
    return T("f32", ())


def ratio_of_sums(num, den):
    """The value of `ratio_of_sums`: also what evaluation applies to a split's sums."""
    num, den = jnp.broadcast_arrays(jnp.asarray(num, jnp.float32), jnp.asarray(den, jnp.float32))
    kept = den != 0
    # the double where keeps a 0 denominator from putting NaN into the gradient
    ratios = jnp.where(kept, num / jnp.where(kept, den, 1.0), 0.0)
    return jnp.sum(ratios) / jnp.sum(kept)  # NaN when every denominator is 0


def _ratio_lower(ctx, num, den):
    return ratio_of_sums(num, den)


# In an evaluate block a metric `m = ratio_of_sums(num, den)` is aggregated by the runtime:
# num and den are summed over the split's batches and this same formula is applied to the
# sums (graphdl/runtime/train.py, Trainer.evaluate), so mean IoU is a ratio of split totals.
register("ratio_of_sums", "num, den", _ratio_rule, _ratio_lower,
         doc="mean of `num / den` over the elements whose `den` is not 0 (NaN if none); as "
             "a metric of an evaluate block, `num` and `den` are first summed over the whole "
             "split (section 9: mean IoU, pixel accuracy)")


# -- shape ops ----------------------------------------------------------------
def _product(dims) -> Dim:
    out = Dim(1)
    for d in dims:
        out = out * d
    return out


def _divide_dims(total: Dim, known: Dim) -> Dim | None:
    """total / known when it is a polynomial (e.g. B*T*D / B = T*D), else None."""
    if known.is_const():
        q = total / known
        return q if all(c.denominator == 1 for c in q.terms.values()) else None
    if len(known.terms) == 1:
        (mono, coef), = known.terms.items()
        out = {}
        for m, c in total.terms.items():
            rest = list(m)
            for s in mono:
                if s not in rest:
                    return None
                rest.remove(s)
            out[tuple(rest)] = c / coef
        q = Dim(out)
        return q if all(c.denominator == 1 for c in q.terms.values()) else None
    return None


def _reshape_infer(x, shape):
    dims = [Dim.of(d) for d in shape]
    for d in dims:
        if d.is_const() and d != -1 and d.const() < 1:
            raise ShapeError(f"reshape sizes must be positive (or one -1), got {d}", "shape")
    unknown = [i for i, d in enumerate(dims) if d == -1]
    total = _product(x.shape)
    if len(unknown) > 1:
        raise ShapeError("reshape can infer only one -1 dim", "shape")
    if unknown:
        rest = _divide_dims(total, _product(d for d in dims if d != -1))
        if rest is None:
            raise ShapeError(f"cannot reshape {x} to [{', '.join(map(str, dims))}]: "
                             f"{total} elements do not divide evenly", "shape")
        dims[unknown[0]] = rest
    if _product(dims) != total:
        raise ShapeError(f"cannot reshape {x} ({total} elements) to "
                         f"[{', '.join(map(str, dims))}] ({_product(dims)} elements)", "shape")
    return T(x.dtype, tuple(dims))


register("reshape", "x, shape: dims", _reshape_infer,
         lambda ctx, x, shape: jnp.reshape(x, tuple(ctx.size(d) for d in shape)),
         doc="a new shape with the same element count (checked symbolically); one `-1` is "
             "inferred")


def _flatten_infer(x):
    if x.rank < 1:
        raise ShapeError(f"flatten needs a batch axis, got {x}", "x")
    return T(x.dtype, (x.shape[0], _product(x.shape[1:])))


register("flatten", "x", _flatten_infer, lambda ctx, x: jnp.reshape(x, (x.shape[0], -1)),
         doc="`[B, ...]` -> `[B, product of the rest]`")


def _concat_infer(xs, axis):
    first = xs[0]
    a = norm_axis(axis, first.rank)
    size = Dim(0)
    for t in xs:
        if t.rank != first.rank or any(d1 != d2 for i, (d1, d2) in
                                        enumerate(zip(t.shape, first.shape)) if i != a):
            raise ShapeError(f"cannot concatenate {first} and {t} along axis {axis}",
                             hint="all dims except the concatenation axis must match")
        size = size + t.shape[a]
    dtype = first.dtype
    for t in xs[1:]:
        dtype = promote(dtype, t.dtype)
    return T(dtype, first.shape[:a] + (size,) + first.shape[a + 1:])


register("concat", "xs: tensors, axis: int = -1", _concat_infer,
         lambda ctx, xs, axis: jnp.concatenate(xs, axis=axis),
         doc="join a list of tensors along `axis`; the other dims must match")


def _stack_infer(xs, axis):
    first = xs[0]
    for t in xs:
        if t.shape != first.shape:
            raise ShapeError(f"cannot stack {first} and {t}: shapes must be equal")
    a = norm_axis(axis, first.rank + 1)
    return T(first.dtype, first.shape[:a] + (Dim(len(xs)),) + first.shape[a:])


register("stack", "xs: tensors, axis: int = 0", _stack_infer,
         lambda ctx, xs, axis: jnp.stack(xs, axis=axis),
         doc="stack equal-shaped tensors along a new `axis`")


def _split_infer(x, sections, axis):
    a = norm_axis(axis, x.rank)
    n = as_int(sections, "sections")
    if n > MAX_SECTIONS:
        raise ShapeError(f"split into {n} sections is too many: the limit is {MAX_SECTIONS} "
                         "results", "sections", hint="reshape the axis instead, e.g. "
                         "reshape(x, [B, N, -1]), and index it")
    part = x.shape[a].floordiv(n)
    if part is None or part * n != x.shape[a]:
        raise ShapeError(f"cannot split axis {axis} of {x} into {n} equal parts", "sections")
    return tuple(T(x.dtype, x.shape[:a] + (part,) + x.shape[a + 1:]) for _ in range(n))


register("split", "x, sections: int, axis: int = -1", _split_infer,
         lambda ctx, x, sections, axis: tuple(jnp.split(x, sections, axis=axis)),
         doc="split `axis` into `sections` equal parts: returns a tuple")


def _transpose_infer(x, perm):
    perm = list(range(x.rank))[::-1] if perm is None else list(as_ints(perm, "perm"))
    if any(not -x.rank <= p < x.rank for p in perm) or \
            sorted(p % max(x.rank, 1) for p in perm) != list(range(x.rank)):
        raise ShapeError(f"perm {perm} is not a permutation of the {x.rank} axes of {x}", "perm")
    return T(x.dtype, tuple(x.shape[p % x.rank] for p in perm))


register("transpose", "x, perm: ints = None", _transpose_infer,
         lambda ctx, x, perm: jnp.transpose(x, perm),
         doc="permute the axes (reverse them when `perm` is left out)")


def _expand_infer(x, axis):
    a = norm_axis(axis, x.rank + 1)
    return T(x.dtype, x.shape[:a] + (Dim(1),) + x.shape[a:])


register("expand_dims", "x, axis: int", _expand_infer,
         lambda ctx, x, axis: jnp.expand_dims(x, axis),
         doc="insert an axis of size 1 at `axis`")


def _squeeze_infer(x, axis):
    a = norm_axis(axis, x.rank)
    if x.shape[a] != 1:
        raise ShapeError(f"cannot squeeze axis {axis} of {x}: its size is not 1", "axis")
    return T(x.dtype, x.shape[:a] + x.shape[a + 1:])


register("squeeze", "x, axis: int", _squeeze_infer, lambda ctx, x, axis: jnp.squeeze(x, axis),
         doc="remove the size-1 axis `axis`")


# -- indexing (built from the `x[...]` syntax) -----------------------------------
def _slice_len(size: Dim, start, stop, step) -> Dim:
    if step == 0:
        raise ShapeError("a slice step cannot be zero")
    if size.is_int():
        n = int(size)
        bound = n + 1  # beyond the axis every bound acts alike; clamp huge ones for slice()
        start, stop, step = (None if v is None else max(-bound, min(bound, v))
                             for v in (start, stop, step))
        return Dim(len(range(*slice(start, stop, step).indices(n))))
    if start in (None, 0) and stop is None and step in (None, 1):
        return size
    if start is None and stop is None and step == -1:
        return size
    raise ShapeError(f"cannot slice the symbolic axis {size} with bounds; give it a known size")


def _index_infer(x, subs):
    """subs: per axis ("int", i) or ("slice", start, stop, step); fewer than rank is fine."""
    if len(subs) > x.rank:
        raise ShapeError(f"too many indices for {x}: {len(subs)} given, rank is {x.rank}")
    shape = []
    for d, sub in zip(x.shape, subs):
        if sub[0] == "int":
            if d.is_int() and not -int(d) <= sub[1] < int(d):
                raise ShapeError(f"index {sub[1]} is out of range for an axis of size {d}")
        else:
            shape.append(_slice_len(d, *sub[1:]))
    return T(x.dtype, tuple(shape) + x.shape[len(subs):])


def _index_lower(ctx, x, subs):
    key = tuple(s[1] if s[0] == "int" else slice(*s[1:]) for s in subs)
    return x[key]


register("index", "x, subs: any", _index_infer, _index_lower,
         doc="static integer indices and slices `start:stop:step`, NumPy style")


def _gather_infer(x, i, axis):
    if i.dtype not in ("i32", "i64"):
        raise ShapeError(f"an index tensor must be integer, got {i}", "i")
    a = norm_axis(axis, x.rank)
    return T(x.dtype, x.shape[:a] + i.shape + x.shape[a + 1:])


register("take", "x, i, axis: int = 0", _gather_infer,
         lambda ctx, x, i, axis: jnp.take(x, i, axis=axis),
         doc="gather along `axis` with an integer tensor `i` (`v[i]` is `take(v, i)`)")


def _const_infer(value, dtype):
    return T(dtype, ())


register("const", "value: any, dtype: str = \"f32\"", _const_infer,
         lambda ctx, value, dtype: jnp.asarray(value, dtype=jnp.dtype(numpy_name(dtype))),
         doc="a scalar constant")


def _fill_infer(shape, dtype):
    return T(dtype, tuple(Dim.of(d) for d in shape))


def _fill(fn):
    return lambda ctx, shape, dtype: fn(tuple(ctx.size(d) for d in shape),
                                        dtype=jnp.dtype(numpy_name(dtype)))


register("zeros", "shape: dims, dtype: str = \"f32\"", _fill_infer, _fill(lambda s, dtype: jnp.zeros(s, dtype)),
         doc="a tensor of zeros with the given shape")
register("ones", "shape: dims, dtype: str = \"f32\"", _fill_infer, _fill(lambda s, dtype: jnp.ones(s, dtype)),
         doc="a tensor of ones with the given shape")
def _arange_infer(n):
    if isinstance(n, Dim) and not n.is_const():
        return T("i32", (n,))
    if as_int(n, "n") < 0:
        raise ShapeError(f"arange needs n >= 0, got {n}", "n")
    return T("i32", (Dim(n),))


register("arange", "n: int", _arange_infer,
         lambda ctx, n: jnp.arange(n, dtype=jnp.int32),
         doc="i32 vector `[0, 1, ..., n - 1]`")

PI = math.pi
