"""Mixed precision: write each node's compute dtype into the IR, by a train block's policy.

A train block with `precision = "bf16"` (elaboration puts it on its IR as the graph
attribute `precision`) computes in bfloat16 and keeps float32 where precision matters.
This pass decides, node by node, and writes the decision as a `compute` attribute: a
node with `compute="bf16"` casts its float operands to bf16 and gives bf16 results
(graphdl/lower/evaluate.py applies it; the verifier checks the types by the same rule).
Parameters, statistics and inputs are not touched: they stay f32 (the master weights;
the optimizer state follows them), and each op that reads one casts it where it
computes, so the gradient reaching a parameter is cast back to f32 by the cast's
transpose. Without the attribute, or with `precision = "f32"`, the pass changes nothing.

    ir train(%0, %1)  # precision bf16
      %0 = input(name="data.x") : f32[B, 40]
      %1 = input(name="data.y") : i32[B]
      %2 = param(name="mlp.dense.w", ...) : f32[40, 10]
      %3 = param(name="mlp.dense.b", ...) : f32[10]
      %4 = dense(x=%0, w=%2, b=%3, units=10, bias=true) : f32[B, 10]
      %5 = relu(%4) : f32[B, 10]
      %6 = cross_entropy(logits=%5, labels=%1) : f32[B]
      %7 = mean(%6, axis=none, keepdims=false) : f32[]
      return %7
    ==>
    ir train(%0, %1)  # precision bf16
      %0 = input(name="data.x") : f32[B, 40]
      %1 = input(name="data.y") : i32[B]
      %2 = param(name="mlp.dense.w", ...) : f32[40, 10]
      %3 = param(name="mlp.dense.b", ...) : f32[10]
      %4 = dense(x=%0, w=%2, b=%3, units=10, bias=true, compute="bf16") : bf16[B, 10]
      %5 = relu(%4, compute="bf16") : bf16[B, 10]
      %6 = cross_entropy(logits=%5, labels=%1, compute="f32") : f32[B]
      %7 = mean(%6, axis=none, keepdims=false, compute="f32") : f32[]
      return %7

The policy (docs/language.md section 9):
- f32: softmax, log_softmax, logsumexp, the normalisations (their statistics), the losses,
  sum/mean/prod, every op that owns running statistics, the IR's outputs (losses and
  metrics), the next value of a recurrent state, and whatever a distribution, a sample,
  a cost or a loop reads (log-probabilities and the values a loop carries stay f32);
- as declared: sources (inputs, parameters, statistics, constants, `zeros`, `arange`),
  `cast` (the graph's own conversion), and `embedding` (it gathers rows of the f32 table,
  so repeated tokens' gradients add up in f32);
- bf16: every other op with a float result (matmuls, convolutions, element-wise math,
  pooling, reshapes, dropout);
- the bodies of `scan` and `generate` follow the same policy (their states stay f32);
  an `expect` body (an exact enumeration) computes as declared.

A graph the policy would break is an error at its line (`check`): a value declared f16 or
f64 (bf16 and f16 do not mix, and f64 would be demoted), a `cast(x, "f32")` of a float
value (the policy decides where floats are f32: it would make that cast's users bf16),
and integers converted to floats that bf16 cannot hold exactly (an `arange` or an
arg-index past 256) read by an op that computes in bf16.
"""

from __future__ import annotations

from graphdl.dims import TensorType
from graphdl.errors import Diagnostic, GdlError, UserError
from graphdl.ir.graph import IR, node, nodes
from graphdl.ir.node import STRUCTURAL_OPS, Node
from graphdl.ops import REGISTRY
from graphdl.ops.training import DEFAULT_PRECISION

POLICY = "bf16"
F32_OPS = frozenset({
    "softmax", "log_softmax", "logsumexp", "batch_norm", "layer_norm",
    "cross_entropy", "nll", "bce", "mse", "sum", "mean", "prod", "ratio_of_sums",
})
AS_DECLARED = frozenset({"const", "zeros", "ones", "arange", "cast", "embedding"})
# dtypes a bf16 graph may not declare: f16 does not mix with bf16, f64 would be demoted
FOREIGN = ("f16", "f64")
BF16_EXACT = 256  # the largest integer bf16 (8 significant bits) holds with all below it


def run(g: IR) -> IR:
    if g.graph.get("precision", DEFAULT_PRECISION) == DEFAULT_PRECISION:
        return g
    problems: list[Diagnostic] = []
    check(g, problems)
    if problems:
        raise GdlError(problems)
    apply(g)
    return g


def retype(t, dtype: str):
    """`t` with each float dtype replaced by `dtype` (a tuple type item by item)."""
    if isinstance(t, tuple):
        return tuple(retype(x, dtype) for x in t)
    if isinstance(t, TensorType) and t.is_float():
        return TensorType(dtype, t.shape)
    return t


def _has_float(t) -> bool:
    if isinstance(t, tuple):
        return any(_has_float(x) for x in t)
    return isinstance(t, TensorType) and t.is_float()


def _dtypes(t) -> set[str]:
    if isinstance(t, tuple):
        return {x.dtype for x in t if isinstance(x, TensorType)}
    return {t.dtype} if isinstance(t, TensorType) else set()


def _f32_readers(g: IR) -> set[int]:
    """The nodes whose values must stay f32: outputs, states' next values, and what a
    structural node (sample, distribution, cost, loop) reads; through `getitem` to the
    node whose result it reads."""
    keep = set(g.graph["outputs"])
    keep.update(nxt for _, nxt in g.graph.get("states", {}).values())
    for _, n in nodes(g):
        if n.op in STRUCTURAL_OPS and n.op != "getitem":
            keep.update(n.inputs)
    todo = list(keep)
    while todo:
        nid = todo.pop()
        n = node(g, nid)
        if n.op == "getitem" and n.inputs[0] not in keep:
            keep.add(n.inputs[0])
            todo.append(n.inputs[0])
    return keep


def compute_of(nid: int, n: Node, keep: set[int]) -> str | None:
    """The dtype node `n` computes in under the bf16 policy; None: as declared."""
    op = REGISTRY.get(n.op)
    if op is None or n.op in AS_DECLARED or not _has_float(n.type):
        return None
    if nid in keep or n.op in F32_OPS or op.stats is not None:
        return "f32"
    return POLICY


def apply(g: IR) -> None:
    """Write the policy into `g` (and its loop bodies): `compute` attributes, new types."""
    keep = _f32_readers(g)
    for nid, n in nodes(g):
        if n.op in ("scan", "generate"):
            apply(n.attrs["body"])
        if n.op == "getitem":
            n.type = node(g, n.inputs[0]).type[n.attrs["index"]]
            continue
        dtype = compute_of(nid, n, keep)
        if dtype is not None:
            n.attrs["compute"] = dtype
            n.type = retype(n.type, dtype)


def check(g: IR, problems: list[Diagnostic]) -> None:
    """The errors of a graph the bf16 policy would break (see the module docstring)."""
    keep = _f32_readers(g)
    for nid, n in nodes(g):
        body = n.attrs.get("body")
        if n.op in ("scan", "generate") and isinstance(body, IR):
            check(body, problems)
        foreign = _dtypes(n.type) & set(FOREIGN)
        if foreign and not any(_dtypes(node(g, i).type) & set(FOREIGN) for i in n.inputs):
            dtype = sorted(foreign)[0]
            _add(problems, f'this value is {dtype}, but precision "{POLICY}" computes in '
                           f'{POLICY} with f32 where precision matters, and does not mix '
                           f'with {dtype}', n,
                 'declare f32 (the policy makes it bf16 where that is safe), or train '
                 'with precision = "f32"')
        if n.op == "cast" and _is_float(g, n.inputs[0]) and n.attrs.get("dtype") == "f32":
            _add(problems, f'cast(..., "f32") of a float value: under precision "{POLICY}" '
                           "the policy decides which values are f32, and would compute "
                           "this cast's users in bf16", n,
                 "remove the cast: softmax, normalisations, losses, sums and means already "
                 f'compute in f32 under {POLICY}; or train with precision = "f32"')
        if compute_of(nid, n, keep) == POLICY:
            for i in n.inputs:
                bound = _converted_bound(g, i)
                if bound is not None and bound > BF16_EXACT:
                    _add(problems, f"{POLICY} holds integers exactly only up to "
                                   f"{BF16_EXACT}, but this cast's values reach {bound}, "
                                   f"and {n.op}() computes with them in {POLICY}",
                         node(g, i), 'train with precision = "f32", or reduce them (sum, '
                                     "mean) first: reductions compute in f32")


def _is_float(g: IR, nid: int) -> bool:
    return _has_float(node(g, nid).type)


def _converted_bound(g: IR, nid: int) -> int | None:
    """The largest magnitude of an integer `cast` to a float at `nid`, where known."""
    n = node(g, nid)
    if n.op != "cast" or not _has_float(n.type) or _is_float(g, n.inputs[0]):
        return None
    src = node(g, n.inputs[0])
    if src.op == "arange" and isinstance(src.type, TensorType):
        size = src.type.concrete()
        return size[0] - 1 if size else None
    if src.op in ("argmax", "argmin"):
        x = node(g, src.inputs[0]).type
        axis = src.attrs.get("axis", -1)
        if isinstance(x, TensorType) and isinstance(axis, int) and x.shape[axis].is_int():
            return int(x.shape[axis]) - 1
    return None


def _add(problems: list[Diagnostic], message: str, n: Node, hint: str) -> None:
    d = UserError(message, n.span, hint).diagnostic
    if all((p.message, p.span) != (d.message, d.span) for p in problems):
        problems.append(d)
