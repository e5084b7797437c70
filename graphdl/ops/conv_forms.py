"""The ways a convolution can be computed, and `conv_lowered`, a `conv` that names its way.

The `conv_lowering` pass (graphdl/passes/conv_lowering.py) writes each `conv` as a
`conv_lowered` whose `lowering` attribute says how XLA is to compute it:

- "xla": XLA's convolution (`lax.conv_general_dilated`), as `conv` itself;
- "eigen" (on a CPU): XLA's convolution computed by XLA:CPU's Eigen kernels instead of
  YNNPACK, to which XLA:CPU gives convolutions by default: the program is compiled with
  YNNPACK's convolutions off (`COMPILE_OPTIONS`; matmuls and reductions stay with
  YNNPACK). On the
  2-core AMD EPYC development machine, Eigen's forward and gradient of the deck's second
  MNIST convolution took 22-30 ms against YNNPACK's 57-90;
- "slices": a sum over the k x k kernel taps of a shifted (strided) slice of the input
  times that tap's `[Cin, F]` weight: k*k matmuls, no patch tensor;
- "patches": the taps' slices concatenated on the channel axis (im2col), one matmul with
  the weights as `[k*k*Cin, F]`;
- "F/G", two of the above: the forward pass computed as F, the gradients as G (a
  `jax.custom_jvp` whose tangent is G's). On XLA:CPU the deck's first convolution (one
  input channel) is fastest forward as "slices" (2.3 ms against Eigen's 7.0) and backward
  as Eigen's convolution (5.1 ms against 9.9): "slices/eigen";
- "auto": measured on this machine at the first lowering for the shape
  (graphdl/lower/autotune.py) and kept in the autotuning cache
  (graphdl/passes/autotune.py).

On XLA:CPU the convolution's gradient (one convolution for the input, one for the
weights) runs far below the forward's speed, while a matmul's gradient is two matmuls;
which form is fastest depends on the sizes and the machine, hence the measurement.
"""

from __future__ import annotations

import itertools

from graphdl.ops._jax import jax, jnp, lax
from graphdl.ops.layers import _common, _conv_infer, _conv_lower, _conv_weights
from graphdl.ops.registry import ShapeError, as_ints, register


def _geometry(size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int, int]:
    """(output size, low padding, high padding) of one axis, as XLA pads it."""
    span = (k - 1) * d + 1
    if padding == "valid":
        return (size - span) // s + 1, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + span - size, 0)
    return out, total // 2, total - total // 2


def _taps(x, kernel, stride, padding, dilation):
    """Each kernel tap's view of `x` (channels last): the strided slice that meets the
    tap's weight at every output position, in the weights' (row-major) tap order."""
    n = x.ndim - 2
    ks, ss, ds = (as_ints(v, name, n) for v, name in
                  ((kernel, "kernel"), (stride, "stride"), (dilation, "dilation")))
    geo = [_geometry(x.shape[1 + i], ks[i], ss[i], ds[i], padding) for i in range(n)]
    if any(lo or hi for _, lo, hi in geo):
        x = jnp.pad(x, [(0, 0)] + [(lo, hi) for _, lo, hi in geo] + [(0, 0)])
    views = []
    for tap in itertools.product(*(range(k) for k in ks)):
        start = [0] + [tap[i] * ds[i] for i in range(n)] + [0]
        stop = [x.shape[0]] + [tap[i] * ds[i] + (geo[i][0] - 1) * ss[i] + 1
                               for i in range(n)] + [x.shape[-1]]
        views.append(lax.slice(x, start, stop, [1, *ss, 1]))
    return views


def conv_by_slices(x, w, kernel, stride, padding, dilation):
    x, w = _common(x, w)
    taps = _taps(x, kernel, stride, padding, dilation)
    wt = w.reshape(-1, *w.shape[-2:])  # [taps, Cin, F]
    y = None
    for i, view in enumerate(taps):
        term = view @ wt[i]
        y = term if y is None else y + term
    return y


def conv_by_patches(x, w, kernel, stride, padding, dilation):
    x, w = _common(x, w)
    patches = jnp.concatenate(_taps(x, kernel, stride, padding, dilation), axis=-1)
    return patches @ w.reshape(-1, w.shape[-1])  # [taps * Cin, F], taps outer


def conv_by_xla(x, w, kernel, stride, padding, dilation):
    return _conv_lower(None, x, None, kernel, stride, padding, dilation, False, w)


#: lowering name -> function(x, w, kernel, stride, padding, dilation) without the bias
CONV_LOWERINGS = {"xla": conv_by_xla, "eigen": conv_by_xla, "slices": conv_by_slices,
                  "patches": conv_by_patches}


def parts(lowering: str) -> tuple[str, str]:
    """(forward, gradient) lowerings of `lowering`: "slices/eigen" -> ("slices", "eigen");
    "slices" -> ("slices", "slices")."""
    fwd, slash, grad = lowering.partition("/")
    return fwd, grad if slash else fwd


def conv_by(lowering: str):
    """The function of `lowering` (a name of CONV_LOWERINGS, or "F/G")."""
    fwd, grad = parts(lowering)
    if CONV_LOWERINGS[fwd] is CONV_LOWERINGS[grad]:  # one form, or "xla/eigen"
        return CONV_LOWERINGS[fwd]
    forward, gradient = CONV_LOWERINGS[fwd], CONV_LOWERINGS[grad]

    def conv(x, w, kernel, stride, padding, dilation):
        geometry = (kernel, stride, padding, dilation)

        @jax.custom_jvp
        def f(x, w):
            return forward(x, w, *geometry)

        def tangent(primals, tangents):
            # G's tangent, linear in the tangents: its transpose is G's gradient. A
            # symbolic zero (the input of a first layer) computes nothing
            x, w = primals
            dx, dw = (None if isinstance(t, jax.custom_derivatives.SymbolicZero) else t for t in tangents)
            out = []
            if dx is not None:
                out.append(jax.jvp(lambda x: gradient(x, w, *geometry), (x,), (dx,))[1])
            if dw is not None:
                out.append(jax.jvp(lambda w: gradient(x, w, *geometry), (w,), (dw,))[1])
            y = f(x, w)
            return y, sum(out[1:], out[0]) if out else jnp.zeros_like(y)

        f.defjvp(tangent, symbolic_zeros=True)
        return f(x, w)
    return conv


#: lowering name -> platform -> the XLA compile options a program needs for it (jax.jit's
#: `compiler_options`); a lowering named here is a candidate on those platforms only.
#: "eigen" is the computation of "xla" (`same_computation` in the registry entry): the
#: options hold for the whole program, so the program takes them when its
#: convolutions measured faster with them in all, each at its fastest lowering under
#: them: "slices" and "patches" are measured with and without them too, since the
#: options change XLA:CPU's matmuls as well (graphdl/lower/autotune.py: candidates;
#: lower/compile.py: vote_options).
#: The option lists what XLA:CPU may give YNNPACK: its matmuls and its reductions, not
#: its convolutions (nor element-wise fusions: XLA's own loops were faster there). Leaving
#: the reductions out, as a first version did, sent them to XLA's loop emitter: a conv's
#: bias gradient (a sum over [128, 28, 28, 32]) took 7.2 ms against YNNPACK's 0.9, and
#: the deck's CNN step 58 ms against 45.
COMPILE_OPTIONS = {
    "eigen": {"cpu": {"xla_cpu_experimental_ynn_fusion_type":
                      "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}},
}


def _conv_lowered_infer(x, filters, kernel, stride, padding, dilation, bias, lowering):
    if lowering != "auto" and not all(p in CONV_LOWERINGS for p in parts(lowering)):
        raise ShapeError(f"lowering must be one of {', '.join(CONV_LOWERINGS)}, two of them "
                         f"as \"forward/gradient\", or auto, got \"{lowering}\"", "lowering")
    return _conv_infer(x, filters, kernel, stride, padding, dilation, bias)


def _conv_lowered_weights(x, filters, kernel, stride, padding, dilation, bias, lowering):
    return _conv_weights(x, filters, kernel, stride, padding, dilation, bias)


def _conv_lowered_lower(ctx, x, filters, kernel, stride, padding, dilation, bias, lowering,
                        w, b=None):
    # "auto" is resolved by the lowering (graphdl/lower/autotune.py) before it gets here;
    # called directly, it is XLA's own convolution
    form = conv_by_xla if lowering == "auto" else conv_by(lowering)
    y = form(x, w, kernel, stride, padding, dilation)
    return y + b if b is not None else y


register("conv_lowered", "x, filters: int, kernel: ints = 3, stride: ints = 1, "
         "padding: str = \"same\", dilation: ints = 1, bias: bool = true, "
         "lowering: str = \"auto\"", _conv_lowered_infer, _conv_lowered_lower,
         weights=_conv_lowered_weights,
         extra={"lowerings": tuple(CONV_LOWERINGS), "compile_options": COMPILE_OPTIONS,
                "same_computation": {"eigen": "xla"}},
         doc="`conv` computed one named way: \"xla\" (XLA's convolution), \"eigen\" (XLA's "
             "convolution by Eigen rather than YNNPACK, on a CPU), \"slices\" (a matmul per "
             "kernel tap), \"patches\" (im2col, one matmul), two of them as "
             "\"forward/gradient\" (\"slices/eigen\": the forward pass as slices, the "
             "gradients by Eigen) or \"auto\" (measured once per shape; the "
             "`conv_lowering` pass writes it)")
