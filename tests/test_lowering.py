"""Every op's lowering against an independent NumPy reference: values and gradients.

Each case is a tiny `.gdl` graph `g` driven through `graphdl.api.loads`, compared with a
NumPy function written here from the op's definition (never graphdl's own lowering).
Gradients of differentiable cases are checked against central finite differences of
the NumPy reference in float64, along random directions. `test_every_op_is_covered`
fails when an op is added to the registry without a case here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphdl.api import loads
from graphdl.ir import nodes
from graphdl.ops import REGISTRY

RNG = np.random.default_rng(1234)


def f32(*shape, lo=0.2, hi=1.5, positive=False):
    """Random float32 values with |v| in [lo, hi): away from the kinks at 0."""
    mag = RNG.uniform(lo, hi, size=shape)
    sign = 1.0 if positive else RNG.choice([-1.0, 1.0], size=shape)
    return (mag * sign).astype(np.float32)


def i32(*shape, n=4):
    return RNG.integers(0, n, size=shape).astype(np.int32)


# -- NumPy references -----------------------------------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def softmax(x, axis=-1):
    return np.exp(log_softmax(x, axis))


def _tup(v, n):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n


def _geometry(size, k, s, d, padding):
    """(output size, low padding) of a window of k taps, dilation d, stride s."""
    span = (k - 1) * d + 1
    if padding == "valid":
        return (size - span) // s + 1, 0
    out = -(-size // s)
    total = max((out - 1) * s + span - size, 0)
    return out, total // 2


def np_conv(x, w, b=None, stride=1, padding="same", dilation=1):
    """Cross-correlation, channels last, kernel [k..., Cin, Cout], XLA 'SAME' alignment."""
    n = x.ndim - 2
    ks, st, dl = w.shape[:n], _tup(stride, n), _tup(dilation, n)
    geo = [_geometry(x.shape[1 + i], ks[i], st[i], dl[i], padding) for i in range(n)]
    outs = [g[0] for g in geo]
    y = np.zeros((x.shape[0], *outs, w.shape[-1]))
    for o in np.ndindex(*outs):
        for k in np.ndindex(*ks):
            pos = [o[i] * st[i] + k[i] * dl[i] - geo[i][1] for i in range(n)]
            if all(0 <= p < x.shape[1 + i] for i, p in enumerate(pos)):
                y[(slice(None), *o)] += x[(slice(None), *pos)] @ w[k]
    return y if b is None else y + b


def np_conv_transpose(x, w, b=None, stride=2, padding="same"):
    """Scatter form: input position i with tap k lands on output i*s + a - k."""
    n = x.ndim - 2
    ks, st = w.shape[:n], _tup(stride, n)
    outs, pads = [], []
    for i in range(n):
        k, s, size = ks[i], st[i], x.shape[1 + i]
        if padding == "same":
            outs.append(size * s)
            pads.append(k - 1 if s > k - 1 else math.ceil((k + s - 2) / 2))
        else:
            outs.append(size * s + max(k - s, 0))
            pads.append(k - 1)
    y = np.zeros((x.shape[0], *outs, w.shape[-1]))
    for pos in np.ndindex(*x.shape[1:-1]):
        for k in np.ndindex(*ks):
            o = [pos[i] * st[i] + pads[i] - k[i] for i in range(n)]
            if all(0 <= v < outs[i] for i, v in enumerate(o)):
                y[(slice(None), *o)] += x[(slice(None), *pos)] @ w[k]
    return y if b is None else y + b


def np_pool(x, window, stride=None, padding="valid", kind="max"):
    """Max or average pooling (average over the in-bounds taps); also argmax flat indices."""
    n = x.ndim - 2
    ws = _tup(window, n)
    ss = _tup(stride if stride is not None else window, n)
    spatial = x.shape[1:-1]
    geo = [_geometry(spatial[i], ws[i], ss[i], 1, padding) for i in range(n)]
    outs = [g[0] for g in geo]
    y = np.zeros((x.shape[0], *outs, x.shape[-1]), x.dtype)
    idx = np.zeros(y.shape, np.int64)
    for o in np.ndindex(*outs):
        taps = []
        for k in np.ndindex(*ws):
            pos = tuple(o[i] * ss[i] + k[i] - geo[i][1] for i in range(n))
            if all(0 <= p < spatial[i] for i, p in enumerate(pos)):
                taps.append(pos)
        vals = np.stack([x[(slice(None), *p)] for p in taps])  # [taps, B, C]
        if kind == "max":
            y[(slice(None), *o)] = vals.max(0)
            flat = np.array([np.ravel_multi_index(p, spatial) for p in taps])
            idx[(slice(None), *o)] = flat[vals.argmax(0)]
        else:
            y[(slice(None), *o)] = vals.mean(0)
    return y, idx


def np_unpool(y, idx, window):
    n = y.ndim - 2
    ws = _tup(window, n)
    spatial = tuple(y.shape[1 + i] * ws[i] for i in range(n))
    out = np.zeros((y.shape[0], *spatial, y.shape[-1]), y.dtype)
    for b in range(y.shape[0]):
        for pos in np.ndindex(*y.shape[1:-1]):
            for c in range(y.shape[-1]):
                target = np.unravel_index(idx[(b, *pos, c)], spatial)
                out[(b, *target, c)] = y[(b, *pos, c)]
    return out


def np_upsample(x, factor):
    n = x.ndim - 2
    fs = _tup(factor, n)
    out = np.zeros((x.shape[0], *(x.shape[1 + i] * fs[i] for i in range(n)), x.shape[-1]), x.dtype)
    for pos in np.ndindex(*out.shape[1:-1]):
        out[(slice(None), *pos)] = x[(slice(None), *(pos[i] // fs[i] for i in range(n)))]
    return out


def np_norm(x, axes, eps):
    m = x.mean(axis=axes, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
    return (x - m) / np.sqrt(v + eps)


def gelu_tanh(x):  # jax.nn.gelu's default (approximate=True), as Flax users get it
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def ce_int(logits, labels):
    return -np.take_along_axis(log_softmax(logits), labels[..., None].astype(int), -1)[..., 0]


def bce(z, t):
    p = sigmoid(z)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


LOG2PI = np.log(2 * np.pi)


def normal_logp(x, mu, s):
    return -0.5 * ((x - mu) / s) ** 2 - np.log(s) - 0.5 * LOG2PI


def bern_logp(x, logits):
    p = sigmoid(logits)
    return x * np.log(p) + (1 - x) * np.log(1 - p)


def bern_entropy(logits):
    p = sigmoid(logits)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def cat_entropy(logits):
    p = softmax(logits)
    return -(p * np.log(p)).sum(-1)


# -- the cases ------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    ops: tuple[str, ...]  # registry ops (or IR ops) this case covers; each must be in its IR
    src: str  # defines `graph g(...)`
    inputs: dict  # argument name -> array, in the graph's argument order
    ref: Callable  # (params: {name: float64 array}, *inputs) -> array or tuple
    grad: bool = True
    tol: float = 2e-5
    params: dict = field(default_factory=dict)  # name -> fixed value instead of random
    stats: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(id, ops, src, inputs, ref, **kw):
    CASES.append(Case(id, tuple(ops.split()), src, inputs, ref, **kw))


def g1(body, args="x: f32[B, 3]"):
    return f"graph g({args}) {{\n    return {body}\n}}\n"


XY = "x: f32[B, 3], y: f32[3]"
# binary arithmetic with broadcasting ([2, 3] with [3])
for op, sym, fn, pos in [("add", "+", np.add, False), ("sub", "-", np.subtract, False),
                         ("mul", "*", np.multiply, False), ("div", "/", np.divide, False),
                         ("pow", "**", np.power, True), ("mod", "%", np.mod, False)]:
    case(op, op, g1(f"x {sym} y", XY), {"x": f32(2, 3, positive=pos), "y": f32(3, positive=pos)},
         lambda p, x, y, fn=fn: fn(x, y))
case("maximum", "maximum", g1("maximum(x, y)", XY), {"x": f32(2, 3), "y": f32(3)},
     lambda p, x, y: np.maximum(x, y))
case("minimum", "minimum", g1("minimum(x, y)", XY), {"x": f32(2, 3), "y": f32(3)},
     lambda p, x, y: np.minimum(x, y))
case("int_div", "div", g1("i / j", "i: i32[4], j: i32[4]"),
     {"i": np.array([7, -7, 6, 1], np.int32), "j": np.array([2, 2, 4, 3], np.int32)},
     lambda p, i, j: i / j, grad=False)  # true division, as in NumPy
_EQ = np.array([[0.5, 1.0, -2.0], [3.0, 0.25, 1.0]], np.float32)
_EQ2 = np.array([[0.5, 2.0, -2.5], [1.0, 0.25, 2.0]], np.float32)
for op, sym, fn in [("eq", "==", np.equal), ("ne", "!=", np.not_equal), ("lt", "<", np.less),
                    ("le", "<=", np.less_equal), ("gt", ">", np.greater),
                    ("ge", ">=", np.greater_equal)]:
    case(op, op, g1(f"x {sym} y", "x: f32[B, 3], y: f32[B, 3]"), {"x": _EQ, "y": _EQ2},
         lambda p, x, y, fn=fn: fn(x, y), grad=False)
case("matmul", "matmul", g1("x @ y", "x: f32[B, 3], y: f32[3, 4]"),
     {"x": f32(2, 3), "y": f32(3, 4)}, lambda p, x, y: x @ y)
case("matmul_batched", "matmul", g1("x @ y", "x: f32[B, 2, 3], y: f32[3]"),
     {"x": f32(2, 2, 3), "y": f32(3)}, lambda p, x, y: np.einsum("bij,j->bi", x, y))
case("where", "where", g1("where(c, x, y)", "c: bool[B, 3], x: f32[B, 3], y: f32[3]"),
     {"c": np.array([[True, False, True], [False, False, True]]), "x": f32(2, 3), "y": f32(3)},
     lambda p, c, x, y: np.where(c, x, y))

UNARY = {
    "exp": np.exp, "log": np.log, "tanh": np.tanh, "sigmoid": sigmoid,
    "relu": lambda x: np.maximum(x, 0), "gelu": gelu_tanh, "softplus": lambda x: np.log1p(np.exp(x)),
    "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos,
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1), "silu": lambda x: x * sigmoid(x),
    "log_sigmoid": lambda x: -np.log1p(np.exp(-x)), "abs": np.abs, "square": np.square,
}
for op, fn in UNARY.items():
    case(op, op, g1(f"{op}(x)"), {"x": f32(2, 3, positive=op in ("log", "sqrt"))},
         lambda p, x, fn=fn: fn(x))
case("neg", "neg", g1("-x"), {"x": f32(2, 3)}, lambda p, x: -x)
case("leaky_relu", "leaky_relu", g1("leaky_relu(x, 0.2)"), {"x": f32(2, 3)},
     lambda p, x: np.where(x > 0, x, 0.2 * x))
case("clip", "clip", g1("clip(x, -0.5, 0.7)"), {"x": f32(2, 3)}, lambda p, x: np.clip(x, -0.5, 0.7))
case("softmax", "softmax", g1("softmax(x, 0)"), {"x": f32(2, 3)}, lambda p, x: softmax(x, 0))
case("log_softmax", "log_softmax", g1("log_softmax(x)"), {"x": f32(2, 3)},
     lambda p, x: log_softmax(x, -1))
case("cast_f2i", "cast", g1("cast(x, \"i32\")"), {"x": f32(2, 3, hi=4)},
     lambda p, x: np.trunc(x).astype(np.int32), grad=False)
case("cast_i2f", "cast", g1("cast(i, \"f32\") * x", "i: i32[B, 3], x: f32[B, 3]"),
     {"i": i32(2, 3), "x": f32(2, 3)}, lambda p, i, x: i * x)
case("onehot", "onehot", g1("onehot(i, 5)", "i: i32[B, 3]"), {"i": i32(2, 3, n=5)},
     lambda p, i: np.eye(5)[i], grad=False)

# reductions
X3 = "x: f32[B, 3, 4]"
case("sum", "sum", g1("sum(x, 1)", X3), {"x": f32(2, 3, 4)}, lambda p, x: x.sum(1))
case("sum_all", "sum", g1("sum(x)", X3), {"x": f32(2, 3, 4)}, lambda p, x: x.sum())
case("mean", "mean", g1("mean(x, [0, 2], keepdims = true)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: x.mean((0, 2), keepdims=True))
case("mean_bool", "mean", g1("mean(x > 0)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: (x > 0).mean(), grad=False)
case("max", "max", g1("max(x, -1)", X3), {"x": f32(2, 3, 4)}, lambda p, x: x.max(-1))
case("max_first", "max_first", g1("max_first(x, [0, 2], keepdims = true)", X3),
     {"x": f32(2, 3, 4)}, lambda p, x: x.max((0, 2), keepdims=True))
case("min", "min", g1("min(x)", X3), {"x": f32(2, 3, 4)}, lambda p, x: x.min())
case("prod", "prod", g1("prod(x, 1)", X3), {"x": f32(2, 3, 4)}, lambda p, x: x.prod(1))
case("logsumexp", "logsumexp", g1("logsumexp(x, 2)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: np.log(np.exp(x).sum(2)))
case("ratio_of_sums", "ratio_of_sums", g1("ratio_of_sums(x, y)", XY),
     {"x": f32(2, 3), "y": f32(3, positive=True)}, lambda p, x, y: (x / y).mean())
# a denominator of 0 leaves its element out of the mean (a class in neither map)
case("ratio_of_sums_zero", "ratio_of_sums",
     g1("ratio_of_sums(x, where(x > 0.8, x + 1.0, 0.0))", "x: f32[B, 3]"), {"x": f32(2, 3)},
     lambda p, x: (x / (x + 1))[x > 0.8].mean(), grad=False)
case("argmax", "argmax", g1("argmax(x, 1)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: x.argmax(1), grad=False)
case("argmin", "argmin", g1("argmin(x)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: x.argmin(-1), grad=False)

# shapes
case("reshape", "reshape", g1("reshape(x, [B, 4, -1])", X3), {"x": f32(2, 3, 4)},
     lambda p, x: x.reshape(2, 4, 3))
case("flatten", "flatten", g1("flatten(x)", X3), {"x": f32(2, 3, 4)}, lambda p, x: x.reshape(2, 12))
case("concat", "concat", g1("concat([x, y, x], 1)", "x: f32[B, 3], y: f32[B, 2]"),
     {"x": f32(2, 3), "y": f32(2, 2)}, lambda p, x, y: np.concatenate([x, y, x], 1))
case("stack", "stack", g1("stack([x, 2 * y], 1)", "x: f32[B, 3], y: f32[B, 3]"),
     {"x": f32(2, 3), "y": f32(2, 3)}, lambda p, x, y: np.stack([x, 2 * y], 1))
case("split", "split",
     "graph g(x: f32[B, 6]) {\n    a, b, c = split(x, 3)\n    return a - 2 * b + 3 * c, b\n}\n",
     {"x": f32(2, 6)}, lambda p, x: (x[:, 0:2] - 2 * x[:, 2:4] + 3 * x[:, 4:6], x[:, 2:4]))
case("transpose", "transpose", g1("transpose(x, [2, 0, 1])", X3), {"x": f32(2, 3, 4)},
     lambda p, x: x.transpose(2, 0, 1))
case("transpose_rev", "transpose", g1("transpose(x)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: x.transpose())
case("expand_squeeze", "expand_dims squeeze", g1("squeeze(expand_dims(x, 1), 1) + expand_dims(x, 0)"),
     {"x": f32(2, 3)}, lambda p, x: x + x[None])
case("index", "index", g1("x[:, -1], x[1, 1:, 0], x[:, 2][:, 1:], x[-1]", X3),
     {"x": f32(2, 3, 4)}, lambda p, x: (x[:, -1], x[1, 1:, 0], x[:, 2][:, 1:], x[-1]))
case("take", "take", g1("take(x, i, axis = 1)", "x: f32[B, 3, 4], i: i32[5]"),
     {"x": f32(2, 3, 4), "i": np.array([2, 0, 1, 2, 2], np.int32)},
     lambda p, x, i: x[:, i])
case("take_subscript", "take", g1("v[i]", "v: f32[5, 3], i: i32[B, 2]"),
     {"v": f32(5, 3), "i": i32(2, 2, n=5)}, lambda p, v, i: v[i])
case("fills", "const zeros ones arange",
     g1("x + 1.5 + zeros([B, 4]) + 2 * ones([4]) + cast(arange(4), \"f32\")", "x: f32[B, 4]"),
     {"x": f32(2, 4)}, lambda p, x: x + 1.5 + 2 + np.arange(4))

# layers
case("dense", "dense", g1("dense(x, 4)"), {"x": f32(2, 3)},
     lambda p, x: x @ p["g.out.dense.w"] + p["g.out.dense.b"])
case("dense_nobias", "dense", g1("dense(x, 4, bias = false)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: x @ p["g.out.dense.w"])
DS = "g.a.dense_split."
case("dense_split", "dense_split getitem",
     "graph g(x: f32[B, 3]) {\n    a, b = dense_split(x, [4, 2])\n    return a, b\n}\n",
     {"x": f32(2, 3)}, lambda p, x: (x @ p[DS + "w"][:, :4] + p[DS + "b"][:4],
                                     x @ p[DS + "w"][:, 4:] + p[DS + "b"][4:]))
case("dense_split_nobias", "dense_split", g1("dense_split(x, [2, 3, 1], bias = false)[2]", X3),
     {"x": f32(2, 3, 4)}, lambda p, x: x @ p["g.out.dense_split.w"][:, 5:])
C = "g.out.conv."
case("conv1d_valid_stride", "conv", g1("conv(x, 4, kernel = 3, stride = 2, padding = \"valid\")",
                                        "x: f32[B, 9, 2]"),
     {"x": f32(2, 9, 2)}, lambda p, x: np_conv(x, p[C + "w"], p[C + "b"], 2, "valid"))
case("conv1d_same_dilation", "conv", g1("conv(x, 3, kernel = 3, dilation = 2)", "x: f32[B, 8, 2]"),
     {"x": f32(2, 8, 2)}, lambda p, x: np_conv(x, p[C + "w"], p[C + "b"], 1, "same", 2))
case("conv1d_same_stride", "conv", g1("conv(x, 3, kernel = 4, stride = 3, bias = false)",
                                      "x: f32[B, 8, 2]"),
     {"x": f32(2, 8, 2)}, lambda p, x: np_conv(x, p[C + "w"], None, 3, "same"))
case("conv2d_same_stride", "conv", g1("conv(x, 3, kernel = 3, stride = 2)", "x: f32[B, 5, 6, 2]"),
     {"x": f32(2, 5, 6, 2)}, lambda p, x: np_conv(x, p[C + "w"], p[C + "b"], 2, "same"))
case("conv2d_valid_dilation", "conv",
     g1("conv(x, 2, kernel = [2, 3], stride = [1, 2], padding = \"valid\", dilation = [2, 1])",
        "x: f32[B, 5, 7, 2]"),
     {"x": f32(2, 5, 7, 2)},
     lambda p, x: np_conv(x, p[C + "w"], p[C + "b"], (1, 2), "valid", (2, 1)))
CL = "g.out.conv_lowered."
# each way the conv_lowering pass may pick, and a forward pass one way, the gradients another
for lowering in ("xla", "slices", "patches", "slices/xla", "patches/slices"):
    case(f"conv_lowered_{lowering.replace('/', '_')}_2d", "conv_lowered",
         g1(f"conv_lowered(x, 3, kernel = 3, stride = 2, lowering = \"{lowering}\")",
            "x: f32[B, 5, 6, 2]"),
         {"x": f32(2, 5, 6, 2)}, lambda p, x: np_conv(x, p[CL + "w"], p[CL + "b"], 2, "same"))
    case(f"conv_lowered_{lowering.replace('/', '_')}_1d_dilation", "conv_lowered",
         g1(f"conv_lowered(x, 2, kernel = 3, padding = \"valid\", dilation = 2, bias = false, "
            f"lowering = \"{lowering}\")", "x: f32[B, 9, 2]"),
         {"x": f32(2, 9, 2)}, lambda p, x: np_conv(x, p[CL + "w"], None, 1, "valid", 2))
T = "g.out.conv_transpose."
case("conv_transpose1d_same", "conv_transpose", g1("conv_transpose(x, 3, kernel = 3)",
                                                    "x: f32[B, 4, 2]"),
     {"x": f32(2, 4, 2)}, lambda p, x: np_conv_transpose(x, p[T + "w"], p[T + "b"], 2, "same"))
case("conv_transpose1d_valid", "conv_transpose",
     g1("conv_transpose(x, 2, kernel = 2, stride = 3, padding = \"valid\")", "x: f32[B, 3, 2]"),
     {"x": f32(2, 3, 2)}, lambda p, x: np_conv_transpose(x, p[T + "w"], p[T + "b"], 3, "valid"))
case("conv_transpose2d_valid", "conv_transpose",
     g1("conv_transpose(x, 2, kernel = 3, stride = 2, padding = \"valid\", bias = false)",
        "x: f32[B, 3, 2, 2]"),
     {"x": f32(2, 3, 2, 2)}, lambda p, x: np_conv_transpose(x, p[T + "w"], None, 2, "valid"))
case("conv_transpose2d_same", "conv_transpose",
     g1("conv_transpose(x, 2, kernel = [3, 2], stride = [2, 1])", "x: f32[B, 3, 2, 2]"),
     {"x": f32(2, 3, 2, 2)},
     lambda p, x: np_conv_transpose(x, p[T + "w"], p[T + "b"], (2, 1), "same"))
case("max_pool1d", "max_pool", g1("max_pool(x, 2)", "x: f32[B, 7, 3]"), {"x": f32(2, 7, 3)},
     lambda p, x: np_pool(x, 2)[0])
case("max_pool2d_same", "max_pool", g1("max_pool(x, 3, stride = 2, padding = \"same\")",
                                        "x: f32[B, 5, 4, 2]"),
     {"x": f32(2, 5, 4, 2)}, lambda p, x: np_pool(x, 3, 2, "same")[0])
case("max_pool_indices", "max_pool getitem",
     "graph g(x: f32[B, 5, 6, 2]) {\n    y, i = max_pool(x, [2, 3], indices = true)\n"
     "    return y, i\n}\n", {"x": f32(2, 5, 6, 2)},
     lambda p, x: np_pool(x, (2, 3)), grad=False)
case("max_pool_indices_same", "max_pool",
     "graph g(x: f32[B, 7, 2]) {\n    y, i = max_pool(x, 3, stride = 2, padding = \"same\", "
     "indices = true)\n    return 2 * y, i\n}\n", {"x": f32(2, 7, 2)},
     lambda p, x: (2 * np_pool(x, 3, 2, "same")[0], np_pool(x, 3, 2, "same")[1]))
case("max_unpool", "max_pool max_unpool",
     "graph g(x: f32[B, 4, 6, 3]) {\n    y, i = max_pool(x, 2, indices = true)\n"
     "    return max_unpool(3 * y, i)\n}\n", {"x": f32(2, 4, 6, 3)},
     lambda p, x: np_unpool(3 * np_pool(x, 2)[0], np_pool(x, 2)[1], 2))
case("max_unpool_1d", "max_unpool", g1("max_unpool(y, i, 3)", "y: f32[B, 2, 2], i: i32[B, 2, 2]"),
     {"y": f32(2, 2, 2), "i": np.array([[[0, 2], [4, 5]], [[1, 1], [3, 5]]], np.int32)},
     lambda p, y, i: np_unpool(y, i, 3))
case("avg_pool1d", "avg_pool", g1("avg_pool(x, 3, stride = 2)", "x: f32[B, 8, 2]"),
     {"x": f32(2, 8, 2)}, lambda p, x: np_pool(x, 3, 2, kind="avg")[0])
case("avg_pool2d_same", "avg_pool", g1("avg_pool(x, 2, padding = \"same\")", "x: f32[B, 5, 3, 2]"),
     {"x": f32(2, 5, 3, 2)}, lambda p, x: np_pool(x, 2, None, "same", "avg")[0])
case("global_pools_1d", "global_avg_pool global_max_pool",
     g1("global_avg_pool(x) + 2 * global_max_pool(x)", "x: f32[B, 5, 3]"), {"x": f32(2, 5, 3)},
     lambda p, x: x.mean(1) + 2 * x.max(1))
case("global_pools_2d", "global_avg_pool global_max_pool",
     g1("global_avg_pool(x) - global_max_pool(x)", "x: f32[B, 3, 4, 2]"), {"x": f32(2, 3, 4, 2)},
     lambda p, x: x.mean((1, 2)) - x.max((1, 2)))
case("upsample1d", "upsample", g1("upsample(x, 3)", "x: f32[B, 3, 2]"), {"x": f32(2, 3, 2)},
     lambda p, x: np_upsample(x, 3))
case("upsample2d", "upsample", g1("upsample(x, [2, 3])", "x: f32[B, 2, 3, 2]"),
     {"x": f32(2, 2, 3, 2)}, lambda p, x: np_upsample(x, (2, 3)))
case("embedding", "embedding", g1("embedding(i, vocab = 5, dim = 3)", "i: i32[B, 4]"),
     {"i": i32(2, 4, n=5)}, lambda p, i: p["g.out.embedding.w"][i])
case("layer_norm", "layer_norm", g1("layer_norm(x)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: np_norm(x, -1, 1e-5) * p["g.out.layer_norm.scale"] + p["g.out.layer_norm.bias"],
     tol=1e-4)
BN = "g.out.batch_norm."
case("batch_norm_eval", "batch_norm", g1("batch_norm(x, eps = 0.01)", X3), {"x": f32(2, 3, 4)},
     lambda p, x: (x - p[BN + "mean"]) / np.sqrt(p[BN + "var"] + 0.01) * p[BN + "scale"]
     + p[BN + "bias"],
     stats={BN + "mean": f32(4), BN + "var": f32(4, positive=True)})
# eval mode: dropout and augmentation are the identity (random_crop takes the centre)
case("eval_identity", "dropout random_shift random_flip noise",
     g1("x |> random_shift(2) |> random_flip(1) |> noise(0.5) |> dropout(0.3)",
        "x: f32[B, 4, 5, 2]"), {"x": f32(2, 4, 5, 2)}, lambda p, x: x)
case("random_crop_eval", "random_crop", g1("random_crop(x, [2, 3])", "x: f32[B, 5, 6, 2]"),
     {"x": f32(2, 5, 6, 2)}, lambda p, x: x[:, 1:3, 1:4])

# losses (per example)
case("cross_entropy_int", "cross_entropy", g1("cross_entropy(z, y)", "z: f32[B, 5], y: i32[B]"),
     {"z": f32(3, 5), "y": i32(3, n=5)}, lambda p, z, y: ce_int(z, y))
case("cross_entropy_probs", "cross_entropy", g1("cross_entropy(z, softmax(t))",
                                                "z: f32[B, 2, 4], t: f32[B, 2, 4]"),
     {"z": f32(2, 2, 4), "t": f32(2, 2, 4)}, lambda p, z, t: -(softmax(t) * log_softmax(z)).sum(-1))
case("nll", "nll", g1("nll(log_softmax(z), y)", "z: f32[B, 4], y: i32[B]"),
     {"z": f32(3, 4), "y": i32(3)}, lambda p, z, y: ce_int(z, y))
case("bce", "bce", g1("bce(z, t)", "z: f32[B, 3], t: f32[B, 3]"),
     {"z": f32(2, 3, hi=4), "t": RNG.uniform(0, 1, (2, 3)).astype(np.float32)},
     lambda p, z, t: bce(z, t))
case("bce_const", "bce", g1("bce(z, 1) + bce(z, 0)", "z: f32[B, 1]"), {"z": f32(4, 1, hi=5)},
     lambda p, z: bce(z, 1.0) + bce(z, 0.0))
case("mse", "mse", g1("mse(x, y)", "x: f32[B, 3, 2], y: f32[B, 3, 2]"),
     {"x": f32(2, 3, 2), "y": f32(2, 3, 2)}, lambda p, x, y: ((x - y) ** 2).mean((1, 2)))
case("mse_1d", "mse", g1("mse(x, y)", "x: f32[B], y: f32[B]"), {"x": f32(4), "y": f32(4)},
     lambda p, x, y: (x - y) ** 2)

# distributions (IR ops dist_*): log_prob, entropy, kl, mean against the textbook formulas
D2 = "m: f32[B, 3], s: f32[B, 3], x: f32[B, 3]"
case("normal", "dist_log_prob dist_entropy dist_mean",
     "graph g(m: f32[B, 3], s: f32[B, 3], x: f32[B, 3]) {\n    q = normal(m, s)\n"
     "    return log_prob(q, x), entropy(q), mean(q)\n}\n",
     {"m": f32(2, 3), "s": f32(2, 3, positive=True), "x": f32(2, 3)},
     lambda p, m, s, x: (normal_logp(x, m, s), 0.5 * np.log(2 * np.pi * np.e * s ** 2), m))
case("normal_kl", "dist_kl",
     "graph g(m: f32[B, 3], s: f32[B, 3], x: f32[B, 3]) {\n"
     "    return kl(normal(m, s), normal(x, 2 * s)) + kl(normal(m, s), normal(0, 1))\n}\n",
     {"m": f32(2, 3), "s": f32(2, 3, positive=True), "x": f32(2, 3)},
     lambda p, m, s, x: (np.log(2 * s / s) + (s ** 2 + (m - x) ** 2) / (2 * (2 * s) ** 2) - 0.5)
     + (-np.log(s) + (s ** 2 + m ** 2) / 2 - 0.5))
case("uniform", "dist_log_prob dist_entropy dist_mean",
     "graph g(a: f32[B, 3], w: f32[B, 3], x: f32[B, 3]) {\n    q = uniform(a, a + w)\n"
     "    return log_prob(q, a + 0.5 * w + x), entropy(q), mean(q)\n}\n",
     {"a": f32(2, 3), "w": f32(2, 3, lo=1, hi=2, positive=True),
      "x": np.array([[0.1, -0.2, 0.3], [-0.4, 0.0, 0.45]], np.float32)},
     lambda p, a, w, x: (-np.log(w), np.log(w), a + w / 2))
case("uniform_outside", "dist_log_prob",
     "graph g(x: f32[4]) {\n    return log_prob(uniform(0, 1), x)\n}\n",
     {"x": np.array([-0.5, 0.25, 0.75, 1.5], np.float32)},
     lambda p, x: np.where((x >= 0) & (x <= 1), 0.0, -np.inf), grad=False)
case("bernoulli", "dist_log_prob dist_entropy dist_mean dist_kl",
     "graph g(z: f32[B, 3], k: f32[B, 3], x: f32[B, 3]) {\n    q = bernoulli(logits = z)\n"
     "    return log_prob(q, x), entropy(q), mean(q), kl(q, bernoulli(k))\n}\n",
     {"z": f32(2, 3, hi=3), "k": f32(2, 3, hi=3),
      "x": np.array([[1, 0, 1], [0, 0, 1]], np.float32)},
     lambda p, z, k, x: (bern_logp(x, z), bern_entropy(z), sigmoid(z),
                         sigmoid(z) * np.log(sigmoid(z) / sigmoid(k))
                         + (1 - sigmoid(z)) * np.log((1 - sigmoid(z)) / (1 - sigmoid(k)))))
case("categorical", "dist_log_prob dist_entropy dist_kl",
     "graph g(z: f32[B, 4], k: f32[B, 4], i: i32[B]) {\n    q = categorical(logits = z)\n"
     "    return log_prob(q, i), entropy(q), kl(q, categorical(k))\n}\n",
     {"z": f32(3, 4), "k": f32(3, 4), "i": i32(3)},
     lambda p, z, k, i: (ce_int(z, i) * -1, cat_entropy(z),
                         (softmax(z) * (log_softmax(z) - log_softmax(k))).sum(-1)))
case("categorical_mean", "dist_mean",  # the mean of an index is its most likely value
     "graph g(z: f32[B, 4]) {\n    return mean(categorical(z))\n}\n", {"z": f32(3, 4)},
     lambda p, z: z.argmax(-1), grad=False)
case("onehot_categorical", "dist_log_prob dist_entropy dist_mean dist_kl",
     "graph g(z: f32[B, 4], k: f32[B, 4], i: i32[B]) {\n    q = onehot_categorical(z)\n"
     "    return log_prob(q, onehot(i, 4)), entropy(q), mean(q), kl(q, onehot_categorical(k))\n}\n",
     {"z": f32(3, 4), "k": f32(3, 4), "i": i32(3)},
     lambda p, z, k, i: (-ce_int(z, i), cat_entropy(z), softmax(z),
                         (softmax(z) * (log_softmax(z) - log_softmax(k))).sum(-1)))

# slices with a start, a stop and a step (a symbolic axis can only be taken whole)
case("slices", "index", g1("x[:, :2, 1:3], x[1, ::2, :3:2], x[:, 1:3:2], x[:, -2:, ::-1]", X3),
     {"x": f32(3, 3, 4)},
     lambda p, x: (x[:, :2, 1:3], x[1, ::2, :3:2], x[:, 1:3:2], x[:, -2:, ::-1]))

# ops covered by the dedicated tests below, each named here so coverage stays honest
COVERED_BY_TESTS = {
    "stop_gradient": "test_stop_gradient",
    "dropout": "test_dropout_train",
    "batch_norm": "test_batch_norm_train_updates_running_stats",
    "random_shift": "test_random_shift_train",
    "random_flip": "test_random_flip_train",
    "random_crop": "test_random_crop_train",
    "noise": "test_noise_train",
    "max_unpool": "test_max_pool_unpool_round_trip",
}


# -- running a case ---------------------------------------------------------------------
def _f64(v):
    v = np.asarray(v)
    return v.astype(np.float64) if v.dtype.kind == "f" else v


def _tree_close(got, want, tol, what):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, f"{what}[{i}]: shape {g.shape} != {w.shape}"
        if w.dtype.kind in "biu":
            assert g.dtype.kind == w.dtype.kind or (w.dtype.kind in "iu" and g.dtype.kind in "iu"), \
                f"{what}[{i}]: dtype {g.dtype} vs {w.dtype}"
            np.testing.assert_array_equal(g, w, err_msg=f"{what}[{i}]")
        else:
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=f"{what}[{i}]")


def _setup(c: Case):
    model = loads(c.src)
    present = {n.op for _, n in nodes(model.ir("g"))}
    missing = [op for op in c.ops if op not in present]
    assert not missing, f"{c.id}: ops {missing} not in the IR (has {sorted(present)})"
    fn = model.compile("g")
    xs = [np.asarray(v) for v in c.inputs.values()]
    # the parameters' names and shapes from init (traced only: values are drawn here)
    shapes = jax.eval_shape(lambda k: fn.init(k, *xs), jax.random.key(0))
    rng = np.random.default_rng(abs(hash(c.id)) % 2 ** 32)
    params = {k: c.params.get(k, (0.6 * rng.normal(size=v.shape)).astype(np.float32))
              for k, v in shapes["params"].items()}
    assert set(shapes.get("stats", {})) == set(c.stats)
    variables = {"params": {k: jnp.asarray(v) for k, v in params.items()}}
    if c.stats:
        variables["stats"] = {k: jnp.asarray(v) for k, v in c.stats.items()}
    return fn, xs, variables, {**params, **c.stats}


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_op_value_and_gradient(c: Case):
    fn, xs, variables, named = _setup(c)
    want = c.ref({k: _f64(v) for k, v in named.items()}, *[_f64(x) for x in xs])
    if not c.grad:
        _tree_close(fn(variables, *xs), want, c.tol, c.id)
        return
    # d/d(params, float inputs) of sum(out * cotangent): jax.grad vs finite differences;
    # the values and the gradient come from one jitted function (one XLA compile)
    rng = np.random.default_rng(7)
    cots = [rng.normal(size=np.shape(o)) for o in (want if isinstance(want, tuple) else (want,))]
    fpos = [i for i, x in enumerate(xs) if x.dtype.kind == "f"]
    stats = variables.get("stats")

    def loss(params, floats):
        args = list(xs)
        for i, v in zip(fpos, floats):
            args[i] = v
        out = fn({"params": params, **({"stats": stats} if stats else {})}, *args)
        outs = out if isinstance(out, tuple) else (out,)
        total = sum(jnp.sum(o * jnp.asarray(ct, o.dtype)) for o, ct in zip(outs, cots)
                    if jnp.issubdtype(o.dtype, jnp.floating))
        return total, out

    (_, got), (gp, gx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        variables["params"], [xs[i] for i in fpos])
    _tree_close(got, want, c.tol, c.id)

    def ref_loss(params64, floats64):
        args = [_f64(x) for x in xs]
        for i, v in zip(fpos, floats64):
            args[i] = v
        out = c.ref({**{k: _f64(v) for k, v in c.stats.items()}, **params64}, *args)
        out = out if isinstance(out, tuple) else (out,)
        return sum(float(np.sum(o * ct)) for o, ct in zip(out, cots)
                   if np.asarray(o).dtype.kind == "f")

    p64 = {k: _f64(v) for k, v in variables["params"].items()}
    x64 = [_f64(xs[i]) for i in fpos]
    assert p64 or x64, "nothing to differentiate"
    eps = 1e-6
    for _ in range(3):
        dp = {k: rng.normal(size=v.shape) for k, v in p64.items()}
        dx = [rng.normal(size=v.shape) for v in x64]
        plus = ref_loss({k: v + eps * dp[k] for k, v in p64.items()},
                        [v + eps * d for v, d in zip(x64, dx)])
        minus = ref_loss({k: v - eps * dp[k] for k, v in p64.items()},
                         [v - eps * d for v, d in zip(x64, dx)])
        fd = (plus - minus) / (2 * eps)
        ad = sum(float(np.sum(np.asarray(gp[k]) * dp[k])) for k in p64) + \
            sum(float(np.sum(np.asarray(g) * d)) for g, d in zip(gx, dx))
        assert abs(ad - fd) <= 1e-3 * max(1.0, abs(fd)), f"{c.id}: grad·v {ad} vs FD {fd}"


def test_every_op_is_covered():
    """Adding an op to the registry without a case (or a named test) here fails."""
    covered = {op for c in CASES for op in c.ops} | set(COVERED_BY_TESTS)
    missing = sorted(set(REGISTRY) - covered)
    assert not missing, f"ops without a lowering test: {missing}"
    for test in COVERED_BY_TESTS.values():
        assert callable(globals().get(test)), test


# -- dedicated tests: train mode, randomness, recurrence ------------------------------------
def compile1(src, name="g"):
    return loads(src).compile(name)


def test_stop_gradient():
    fn = compile1(g1("x * stop_gradient(x) + stop_gradient(3 * x)"))
    x = f32(2, 3)
    v = fn.init(None, x)
    np.testing.assert_allclose(fn(v, x), x * x + 3 * x, rtol=1e-6)
    g = jax.grad(lambda x: jnp.sum(fn(v, x)))(x)
    np.testing.assert_allclose(g, x, rtol=1e-6)  # only the un-stopped factor


def test_dropout_train():
    fn = compile1(g1("dropout(x, 0.25)", "x: f32[B, 400]"))
    x = f32(50, 400, positive=True)
    v = fn.init(None, x)
    y, stats = fn(v, x, key=jax.random.key(3), train=True)
    y = np.asarray(y)
    assert stats == {}
    kept = y != 0
    assert 0.72 < kept.mean() < 0.78  # rate 0.25 of 20000 units
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)  # inverted dropout
    y2, _ = fn(v, x, key=jax.random.key(3), train=True)
    np.testing.assert_array_equal(y, y2)  # same key, same mask
    y3, _ = fn(v, x, key=jax.random.key(4), train=True)
    assert (np.asarray(y3) != y).any()
    np.testing.assert_array_equal(fn(v, x), x)  # eval: identity, no key needed
    # the gradient flows through kept units only, scaled like the values
    g = jax.grad(lambda x: jnp.sum(fn(v, x, key=jax.random.key(3), train=True)[0]))(x)
    np.testing.assert_allclose(np.asarray(g), kept / 0.75, rtol=1e-6)


def test_dropout_rate_zero_needs_no_key():
    fn = compile1(g1("dropout(x, 0.0)"))
    x = f32(2, 3)
    y, _ = fn(fn.init(None, x), x, train=True)
    np.testing.assert_array_equal(y, x)


def test_batch_norm_train_updates_running_stats():
    fn = compile1(g1("batch_norm(x, momentum = 0.8)", "x: f32[B, 2, 3]"))
    x = f32(4, 2, 3)
    v = fn.init(jax.random.key(0), x)
    name = "g.out.batch_norm."
    assert set(v["params"]) == {name + "scale", name + "bias"}
    assert set(v["stats"]) == {name + "mean", name + "var"}
    np.testing.assert_array_equal(v["stats"][name + "var"], np.ones(3))
    scale, bias = f32(3), f32(3)
    run_mean, run_var = f32(3), f32(3, positive=True)
    v = {"params": {name + "scale": scale, name + "bias": bias},
         "stats": {name + "mean": run_mean, name + "var": run_var}}
    y, stats = fn(v, x, train=True)  # batch norm alone draws nothing: no key
    x64 = x.astype(np.float64)
    m, var = x64.mean((0, 1)), x64.var((0, 1))
    np.testing.assert_allclose(y, (x64 - m) / np.sqrt(var + 1e-5) * scale + bias, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(stats[name + "mean"], 0.8 * run_mean + 0.2 * m, rtol=1e-5)
    np.testing.assert_allclose(stats[name + "var"], 0.8 * run_var + 0.2 * var, rtol=1e-5)
    # eval mode uses the running statistics, and reports no stats
    y_eval = fn(v, x)
    np.testing.assert_allclose(
        y_eval, (x64 - run_mean) / np.sqrt(run_var + 1e-5) * scale + bias, rtol=1e-4, atol=1e-5)
    # the training-mode gradient goes through the batch statistics
    def np_bn(x):
        m, var = x.mean((0, 1)), x.var((0, 1))
        return (x - m) / np.sqrt(var + 1e-5) * scale + bias
    cot = RNG.normal(size=x.shape)
    g = jax.grad(lambda x: jnp.sum(fn(v, x, train=True)[0] * cot))(x)
    d = RNG.normal(size=x.shape)
    fd = (np.sum(np_bn(x64 + 1e-6 * d) * cot) - np.sum(np_bn(x64 - 1e-6 * d) * cot)) / 2e-6
    assert abs(float(np.sum(np.asarray(g) * d)) - fd) < 1e-3 * max(1, abs(fd))


def test_max_pool_unpool_round_trip():
    """unpool(max_pool(x)) keeps each window's maximum in place and zeros the rest."""
    fn = compile1("graph g(x: f32[B, 4, 6, 3]) {\n    y, i = max_pool(x, 2, indices = true)\n"
                  "    return max_unpool(y, i), i\n}\n")
    x = f32(2, 4, 6, 3)
    out, idx = fn(fn.init(None, x), x)
    win = x.reshape(2, 2, 2, 3, 2, 3).max(axis=(2, 4))
    mask = x == np.repeat(np.repeat(win, 2, 1), 2, 2)
    np.testing.assert_array_equal(np.asarray(out), np.where(mask, x, 0))
    assert idx.dtype == jnp.int32
    # 1-D, window 3
    fn = compile1("graph g(x: f32[B, 9, 2]) {\n    y, i = max_pool(x, 3, indices = true)\n"
                  "    return max_unpool(y, i, 3)\n}\n")
    x = f32(3, 9, 2)
    out = np.asarray(fn(fn.init(None, x), x))
    win = x.reshape(3, 3, 3, 2).max(2)
    np.testing.assert_array_equal(out, np.where(x == np.repeat(win, 3, 1), x, 0))
    # gradient of the round trip is the window-max mask
    g = jax.grad(lambda x: jnp.sum(fn({"params": {}}, x)))(x)
    np.testing.assert_array_equal(np.asarray(g), (x == np.repeat(win, 3, 1)).astype(np.float32))


def _shifted(x, dy, dx):
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    yt, xt = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[ys, xs] = x[yt, xt]
    return out


def test_random_shift_train():
    fn = compile1(g1("random_shift(x, 2)", "x: f32[B, 5, 6, 1]"))
    x = f32(16, 5, 6, 1, positive=True)
    y, _ = fn(fn.init(None, x), x, key=jax.random.key(0), train=True)
    y = np.asarray(y)
    seen = set()
    for b in range(len(x)):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(y[b], _shifted(x[b], dy, dx))]
        assert match, f"example {b} is not a shift of its input by at most 2 pixels"
        seen.add(match[0])
    assert len(seen) > 3  # shifts differ across the batch
    np.testing.assert_array_equal(fn(fn.init(None, x), x), x)
    with pytest.raises(Exception, match="key"):
        fn(fn.init(None, x), x, train=True)


def test_random_shift_1d_train():
    fn = compile1(g1("random_shift(x, 1)", "x: f32[B, 6, 2]"))
    x = f32(8, 6, 2, positive=True)
    y = np.asarray(fn({"params": {}}, x, key=jax.random.key(1), train=True)[0])
    for b in range(8):
        options = [x[b], np.concatenate([x[b, 1:], 0 * x[b, :1]]),
                   np.concatenate([0 * x[b, :1], x[b, :-1]])]
        assert any(np.array_equal(y[b], o) for o in options)


def test_random_flip_train():
    fn = compile1(g1("random_flip(x, 2)", "x: f32[B, 3, 4, 2]"))
    x = f32(32, 3, 4, 2)
    y = np.asarray(fn({"params": {}}, x, key=jax.random.key(0), train=True)[0])
    flipped = [np.array_equal(y[b], x[b, :, ::-1]) for b in range(32)]
    same = [np.array_equal(y[b], x[b]) for b in range(32)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 4 < sum(flipped) < 28


def test_random_crop_train():
    fn = compile1(g1("random_crop(x, [2, 3])", "x: f32[B, 4, 5, 1]"))
    x = f32(16, 4, 5, 1)
    y = np.asarray(fn({"params": {}}, x, key=jax.random.key(0), train=True)[0])
    assert y.shape == (16, 2, 3, 1)
    starts = set()
    for b in range(16):
        found = [(i, j) for i in range(3) for j in range(3)
                 if np.array_equal(y[b], x[b, i:i + 2, j:j + 3])]
        assert found
        starts.add(found[0])
    assert len(starts) > 2


def test_noise_train():
    fn = compile1(g1("noise(x, 0.5)", "x: f32[B, 1000]"))
    x = f32(20, 1000)
    y = np.asarray(fn({"params": {}}, x, key=jax.random.key(0), train=True)[0])
    d = y - x
    assert abs(d.mean()) < 0.02 and abs(d.std() - 0.5) < 0.02


def test_random_op_under_jit_and_vmap():
    """A compiled graph's key goes through jax.jit and jax.vmap like any JAX argument."""
    fn = compile1(g1("dropout(x, 0.5)", "x: f32[B, 64]"))
    x = f32(2, 64, positive=True)
    v = fn.init(None, x)
    keys = jax.random.split(jax.random.key(0), 3)
    ys = jax.jit(jax.vmap(lambda k: fn(v, x, key=k, train=True)[0]))(keys)
    assert ys.shape == (3, 2, 64)
    assert not np.array_equal(ys[0], ys[1])


# -- stochastic nodes -----------------------------------------------------------------
def test_normal_sample_reparam():
    fn = compile1("graph g(m: f32[B, 3], s: f32[B, 3]) {\n    z ~ normal(m, s)\n    return z\n}\n")
    m, s = f32(4000, 3), f32(4000, 3, positive=True)
    v = fn.init(None, m, s)
    z = np.asarray(fn(v, m, s, key=jax.random.key(0)))
    e = (z - m) / s
    assert abs(e.mean()) < 0.05 and abs(e.std() - 1) < 0.05
    # reparameterised: dz/dm = 1, dz/ds = (z - m) / s = e
    gm, gs = jax.grad(lambda m, s: jnp.sum(fn(v, m, s, key=jax.random.key(0))), (0, 1))(m, s)
    np.testing.assert_allclose(gm, 1.0, rtol=1e-6)
    np.testing.assert_allclose(gs, e, rtol=1e-4, atol=1e-5)
    # eval with the mean
    np.testing.assert_array_equal(fn(v, m, s, stochastic="mean"), m)
    with pytest.raises(Exception, match="key"):
        fn(v, m, s)


def test_discrete_samples_have_their_probabilities():
    src = ("graph g(l: f32[B, 3]) {\n    a ~ categorical(logits = l) by reinforce\n"
           "    h ~ onehot_categorical(logits = l) by gumbel_softmax(temperature = 0.5, hard = true)\n"
           "    b ~ bernoulli(logits = l) by straight_through\n    return a, h, b\n}\n")
    fn = compile1(src)
    logits = np.tile(np.array([[0.5, -1.0, 1.5]], np.float32), (6000, 1))
    a, h, b = fn(fn.init(None, logits), logits, key=jax.random.key(0))
    p = softmax(logits[0].astype(np.float64))
    assert a.dtype == jnp.int32
    np.testing.assert_allclose(np.bincount(np.asarray(a), minlength=3) / 6000, p, atol=0.02)
    h = np.asarray(h)
    np.testing.assert_allclose(h.sum(-1), 1.0, rtol=1e-6)
    assert set(np.unique(np.round(h, 5))) <= {0.0, 1.0}
    np.testing.assert_allclose(h.mean(0), p, atol=0.02)  # Gumbel-max is exact in the forward
    np.testing.assert_allclose(np.asarray(b).mean(0), sigmoid(logits[0].astype(float)), atol=0.02)


# -- recurrence -------------------------------------------------------------------------
def test_scan_lstm_matches_a_numpy_loop():
    src = ("use std.nn\ngraph g(xs: f32[B, T, D]) {\n    run = scan(xs, lstm[3], axis = 1)\n"
           "    return run.out, run.state.h, run.state.c\n}\n")
    fn = compile1(src)
    xs = f32(2, 5, 4)
    v = fn.init(jax.random.key(0), xs)
    names = {k: f"g.run.lstm.{k}.dense." for k in ("f", "w", "r", "new")}
    assert set(v["params"]) == {n + s for n in names.values() for s in "wb"}
    p = {k: 0.5 * RNG.normal(size=np.shape(a)).astype(np.float32) for k, a in v["params"].items()}
    out, h_last, c_last = fn({"params": p}, xs)

    def np_lstm(xs):
        h = np.zeros((xs.shape[0], 3))
        c = np.zeros_like(h)
        outs = []
        for t in range(xs.shape[1]):
            xh = np.concatenate([xs[:, t], h], -1)
            gate = {k: xh @ p[n + "w"] + p[n + "b"] for k, n in names.items()}
            # std.nn's forget gate starts open: + 1 on its pre-activation
            c = sigmoid(gate["f"] + 1.0) * c + sigmoid(gate["w"]) * np.tanh(gate["new"])
            h = sigmoid(gate["r"]) * np.tanh(c)
            outs.append(h)
        return np.stack(outs, 1), h, c

    want = np_lstm(xs.astype(np.float64))
    _tree_close((out, h_last, c_last), want, 1e-5, "lstm")
    # gradient wrt the input sequence, against finite differences of the NumPy loop
    cot = RNG.normal(size=want[0].shape)
    g = jax.grad(lambda xs: jnp.sum(fn({"params": p}, xs)[0] * cot))(xs)
    d = RNG.normal(size=xs.shape)
    x64 = xs.astype(np.float64)
    fd = (np.sum(np_lstm(x64 + 1e-6 * d)[0] * cot) - np.sum(np_lstm(x64 - 1e-6 * d)[0] * cot)) / 2e-6
    assert abs(float(np.sum(np.asarray(g) * d)) - fd) < 1e-3 * max(1, abs(fd))


def test_scan_reverse_with_init_and_rnn():
    src = ("use std.nn\ngraph g(xs: f32[B, T, 2], h0: f32[B, 3]) {\n"
           "    run = scan(xs, rnn[3], axis = 1, init = {h = h0}, reverse = true)\n"
           "    return run.out\n}\n")
    fn = compile1(src)
    xs, h0 = f32(2, 4, 2), f32(2, 3)
    v = fn.init(jax.random.key(0), xs, h0)
    (wname,) = [k for k in v["params"] if k.endswith(".w")]
    (bname,) = [k for k in v["params"] if k.endswith(".b")]
    w, b = np.asarray(v["params"][wname], np.float64), np.asarray(v["params"][bname], np.float64)
    out = np.asarray(fn(v, xs, h0))
    h = h0.astype(np.float64)
    want = np.zeros((2, 4, 3))
    for t in reversed(range(4)):
        h = np.tanh(np.concatenate([xs[:, t], h], -1) @ w + b)
        want[:, t] = h
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_batch_norm_inside_a_scanned_cell_updates_running_stats():
    """Statistics a cell updates travel step to step; the final ones come out."""
    src = ("cell c[H](x: f32[B, D]) -> f32[B, H] {\n    state h: f32[B, H] = zeros\n"
           "    h = batch_norm(dense(concat([x, h], -1), H), momentum = 0.5)\n    return h\n}\n"
           "graph g(xs: f32[B, T, D]) {\n    r = scan(xs, c[2], axis = 1)\n    return r.out\n}\n")
    fn = compile1(src)
    xs = f32(4, 3, 2)
    v = fn.init(jax.random.key(0), xs)
    pre = "g.r.c.h."
    p = {k: np.asarray(a, np.float64) for k, a in v["params"].items()}
    out, stats = fn(v, xs, train=True)
    h, mean, var = np.zeros((4, 2)), np.zeros(2), np.ones(2)
    want = []
    for t in range(3):
        z = np.concatenate([xs[:, t], h], -1) @ p[pre + "dense.w"] + p[pre + "dense.b"]
        m, s2 = z.mean(0), z.var(0)
        h = (z - m) / np.sqrt(s2 + 1e-5) * p[pre + "batch_norm.scale"] + p[pre + "batch_norm.bias"]
        mean, var = 0.5 * mean + 0.5 * m, 0.5 * var + 0.5 * s2
        want.append(h)
    np.testing.assert_allclose(out, np.stack(want, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats[pre + "batch_norm.mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats[pre + "batch_norm.var"], var, rtol=1e-5, atol=1e-6)
    # eval mode reads the running statistics and changes nothing
    assert not isinstance(fn(v, xs), tuple)


def test_reinforce_inside_a_scanned_cell_is_unbiased():
    """Coin flips a_t ~ Bernoulli(sigmoid(w x_t + b)) inside a cell, loss mean_t a_t:
    the average REINFORCE gradient matches the analytic gradient of the expected loss."""
    src = ("cell coin(x: f32[B, 1]) -> f32[B, 1] {\n    state h: f32[B, 1] = zeros\n"
           "    a ~ bernoulli(logits = dense(x, 1)) by reinforce\n    h = a\n    return a\n}\n"
           "graph g(xs: f32[B, T, 1]) -> f32[] {\n    r = scan(xs, coin, axis = 1)\n"
           "    return mean(r.out)\n}\n")
    model = loads(src)
    xs = np.array([[[0.5], [-1.0], [2.0]]], np.float32)
    v = model.compile("g").init(jax.random.key(0), xs)
    w_name, b_name = "g.r.coin.a.dense.w", "g.r.coin.a.dense.b"
    v = {"params": {w_name: jnp.array([[0.7]]), b_name: jnp.array([-0.2])}}
    step = model.value_and_grad("g")
    keys = jax.random.split(jax.random.key(1), 20000)
    losses, grads = jax.jit(jax.vmap(lambda k: step(v, xs, key=k)))(keys)
    z = 0.7 * xs[0, :, 0].astype(np.float64) - 0.2
    s = sigmoid(z)
    assert abs(float(losses.mean()) - s.mean()) < 0.01
    ds = s * (1 - s) / 3
    np.testing.assert_allclose(float(grads[w_name].mean()), np.sum(ds * xs[0, :, 0]), atol=0.02)
    np.testing.assert_allclose(float(grads[b_name].mean()), np.sum(ds), atol=0.02)
