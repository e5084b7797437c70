"""What scores a sample: the additive terms of a loss, and which of them split per example.

Read by the surrogate pass (surrogate.py); it changes no IR. A scalar loss is a sum of
terms through `+`, `-`, unary `-`, a constant factor (`0.5 * x`, `x / 2`), `mean` and
`sum`; a node of any other op is a term of its own:

    loss = 0.1 * mean(kl) - mean(r) + log(mean(q))        kl, r, q: f32[B]
    ==>
    Term(kl, coef=0.1, per=[B])   Term(r, coef=-1.0, per=[B])   Term(log(...), coef=1.0)

so that loss = sum over terms of coef * prod(times) / prod(per) * sum(value): `per` are
the sizes a `mean` divides by, `times` the sizes an operand is broadcast over (in
`mean(x + c)` the scalar `c` counts B times before the division by B).

A term splits per example with respect to a sample when every node from the sample down
to the term keeps axis 0 as the axis of examples: element-wise ops on operands of one
rank, layers (axis 0 is their batch), reductions and softmaxes over other axes, ... (the
table `RULES`). Then entry i of the term depends on entry i of the sample only, and
example i's draw is scored by example i's entries alone. Otherwise `split_problem` names
the first node that mixes the examples (batch_norm, a mean over axis 0, `log(mean(...))`,
an op not in the table) and the term scores every draw of the sample with its whole value.
Both are unbiased; the split has the lower variance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx

from graphdl.dims import Dim
from graphdl.ir.graph import IR, dataflow, node, order
from graphdl.ir.node import Node
from graphdl.ops.distributions import FAMILIES


@dataclass(frozen=True)
class Term:
    """One additive term of a loss: it adds coef * prod(times) / prod(per) * sum(node)."""

    node: int
    coef: float
    times: tuple[Dim, ...] = ()
    per: tuple[Dim, ...] = ()

    def attrs(self) -> dict:
        return {"coef": self.coef, "times": list(self.times), "per": list(self.per)}


def additive_terms(g: IR, loss: int, stochastic: set[int]) -> list[Term]:
    """The terms of the scalar `loss` that depend on a sample (nodes in `stochastic`); a
    part of the loss that depends on none is not split further and not returned."""
    out: list[Term] = []

    def walk(nid: int, coef: float, times: tuple, per: tuple) -> None:
        if nid not in stochastic:
            return
        n = node(g, nid)
        operands = {arg: src for src, arg in n.operands()}
        x, y = operands.get("x"), operands.get("y")
        if n.op in ("add", "sub"):
            walk(x, coef, *_cancel(times + _broadcast(g, x, n), per))
            walk(y, -coef if n.op == "sub" else coef, *_cancel(times + _broadcast(g, y, n), per))
        elif n.op == "neg":
            walk(x, -coef, times, per)
        elif n.op == "mul" and (_constant(g, y) is not None or _constant(g, x) is not None):
            if _constant(g, y) is None:  # 0.5 * v: the factor first
                x, y = y, x
            factor, spread = _constant(g, y), times + _broadcast(g, x, n)
            if isinstance(factor, Dim):  # v * T, a symbolic dim used as a number
                walk(x, coef, *_cancel(spread + (factor,), per))
            else:
                walk(x, coef * factor, *_cancel(spread, per))
        elif n.op == "div" and _constant(g, y) not in (None, 0.0):
            factor, spread = _constant(g, y), times + _broadcast(g, x, n)
            if isinstance(factor, Dim):  # sum(v) / B
                walk(x, coef, *_cancel(spread, per + (factor,)))
            else:
                walk(x, coef / factor, *_cancel(spread, per))
        elif n.op in ("sum", "mean"):
            x = node(g, operands["x"])
            axes = _axes(n.attrs["axis"], len(x.shape))
            reduced = tuple(x.shape[a] for a in axes if x.shape[a] != 1)
            walk(operands["x"], coef, *_cancel(times, per + (reduced if n.op == "mean" else ())))
        else:
            out.append(Term(nid, coef, times, per))

    walk(loss, 1.0, (), ())
    return out


def _constant(g: IR, nid: int | None) -> float | Dim | None:
    """The number a scalar `const` node holds (a symbolic dim stays a Dim), or None."""
    if nid is None:
        return None
    n = node(g, nid)
    value = n.attrs.get("value")
    if n.op != "const" or n.shape != () or isinstance(value, bool):
        return None
    if isinstance(value, Dim):
        return float(value.const()) if value.is_const() else value
    return float(value) if isinstance(value, (int, float)) else None


def _broadcast(g: IR, src: int, n: Node) -> tuple[Dim, ...]:
    """The sizes operand `src` of `n` is broadcast over (each of its entries counts that
    many times in sum(n))."""
    shape, out = node(g, src).shape, n.shape
    lead = len(out) - len(shape)
    return tuple(d for k, d in enumerate(out)
                 if d != 1 and (k < lead or shape[k - lead] == 1))


def _cancel(times: tuple, per: tuple) -> tuple[tuple, tuple]:
    """times / per with the sizes both hold taken out (mean(x + c): c counts B / B = 1)."""
    times, per = list(times), list(per)
    for d in list(times):
        if d in per:
            times.remove(d)
            per.remove(d)
    return tuple(times), tuple(per)


def _axes(axis, rank: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(rank))
    return tuple(sorted(int(a) % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])))


# -- which nodes keep axis 0 as the examples ------------------------------------------
def split_problem(g: IR, sample: int, term: int) -> str | None:
    """Why `term` does not split per example with respect to the draws of `sample`, or
    None when entry i of the term depends on entry i of the sample only."""
    s = node(g, sample)
    if not s.shape:
        return f"`{s.attrs.get('name', '?')}` is one draw, not one per example"
    if term == sample:
        return None
    if not node(g, term).shape:  # log(mean(...)), mean(r) * mean(q): not additive
        return f"{_what(node(g, term))} is not a sum over the examples"
    flow = dataflow(g)
    path = (nx.descendants(flow, sample) & nx.ancestors(flow, term)) | {term}
    for nid in [i for i in order(g) if i in path]:
        n = node(g, nid)
        on_path = [(arg, node(g, src)) for src, arg in n.operands()
                   if src in path or src == sample]
        shape = n.type[0].shape if isinstance(n.type, tuple) else n.shape  # split's parts
        if not shape:
            return f"{_what(n)} leaves no axis of examples"
        rule = RULES.get(n.op)
        if rule is None or not rule(n, on_path):
            return f"{_what(n)} mixes the examples"
    return None


def _what(n: Node) -> str:
    where = f" at {n.span.line}:{n.span.col}" if n.span else ""
    return f"{n.op}(){where}"


Rule = Callable[[Node, list], bool]  # (node, [(argument name, on-path operand)]) -> keeps axis 0


def _same_rank(n: Node, on_path: list) -> bool:
    """Element-wise: an operand of the result's rank is aligned with it axis by axis (a
    lower one would be broadcast in front, its axis 0 landing elsewhere)."""
    return all(len(o.shape) == len(n.shape) for _, o in on_path)


def _rank_at_least(k: int) -> Rule:
    """A layer: axis 0 is its batch by definition, given operands of rank >= k (dense
    over a rank-1 `x` would mix its only axis)."""
    return lambda n, on_path: all(len(o.shape) >= k for _, o in on_path)


def _axis_not_0(of_result: bool = False, rank_of: str = "x") -> Rule:
    """An op along `axis` (a reduction, softmax, concat, ...) keeps axis 0 unless the axis
    is 0; the axis counts in the operand's rank, or the result's for stack/expand_dims."""
    def rule(n: Node, on_path: list) -> bool:
        if any(arg == "i" for arg, _ in on_path):  # take(x, i): the indices pick examples
            return False
        rank = len(n.shape) if of_result else max(len(o.shape) for _, o in on_path)
        return 0 not in _axes(n.attrs.get("axis"), rank)
    return rule


def _transpose(n: Node, on_path: list) -> bool:
    perm = n.attrs.get("perm")
    return perm is not None and int(perm[0]) % len(n.shape) == 0


def _reshape(n: Node, on_path: list) -> bool:
    # row-major: with the same leading size, example i's entries stay block i
    return all(o.shape and o.shape[0] == n.shape[0] for _, o in on_path)


def _index(n: Node, on_path: list) -> bool:
    subs = n.attrs.get("subs") or []
    return not subs or (subs[0][0] == "slice" and subs[0][1] in (None, 0)
                        and subs[0][2] is None and subs[0][3] in (None, 1))


def _matmul(n: Node, on_path: list) -> bool:
    # x [B, ..., D] @ w: row by row; y only as a batch of matrices [B, D, H]
    return all(len(o.shape) == len(n.shape) and (arg == "x" or len(o.shape) >= 3)
               for arg, o in on_path)


def _draws(n: Node, on_path: list) -> bool:
    """A sample or a distribution function: draw i comes from entry i of the parameters
    when they have the rank of the draws plus the class axis the result drops (so nothing
    is broadcast in front of them); a value scored by log_prob likewise."""
    family = FAMILIES[n.attrs["family"]]
    rank = len(n.shape)
    dropped = family.drop_last or (family.one_hot and n.op not in ("sample", "dist_mean"))
    want = {"x": rank + (1 if family.one_hot else 0), "baseline": None}
    return all(want.get(arg, rank + dropped) in (None, len(o.shape)) for arg, o in on_path)


ELEMENTWISE = (
    "add", "sub", "mul", "div", "pow", "mod", "maximum", "minimum", "eq", "ne", "lt", "le",
    "gt", "ge", "where", "exp", "log", "tanh", "sigmoid", "relu", "gelu", "softplus", "sqrt",
    "sin", "cos", "elu", "silu", "log_sigmoid", "neg", "abs", "square", "leaky_relu",
    "stop_gradient", "clip", "cast", "dropout", "noise", "bce",
)
LAYERS = {
    "dense": 2, "layer_norm": 2, "conv": 3, "conv_transpose": 3, "max_pool": 3,
    "avg_pool": 3, "max_unpool": 3, "global_avg_pool": 3, "global_max_pool": 3,
    "upsample": 3, "random_shift": 3, "random_crop": 3, "flatten": 1, "embedding": 1,
    "onehot": 1, "cross_entropy": 1, "nll": 1, "mse": 1,
}
AXIS_OPS = ("softmax", "log_softmax", "argmax", "argmin", "sum", "mean", "max", "min", "prod",
            "logsumexp", "concat", "split", "squeeze", "random_flip", "take")

# op -> whether a node of it keeps axis 0 as the examples, given its on-path operands.
# An op missing here counts as mixing: the terms below it score with their whole value.
RULES: dict[str, Rule] = {
    **{op: _same_rank for op in ELEMENTWISE},
    **{op: _rank_at_least(k) for op, k in LAYERS.items()},
    **{op: _axis_not_0() for op in AXIS_OPS},
    "stack": _axis_not_0(of_result=True), "expand_dims": _axis_not_0(of_result=True),
    "transpose": _transpose, "reshape": _reshape, "index": _index, "matmul": _matmul,
    "getitem": lambda n, on_path: True,  # a result of split: the split was checked
    "sample": _draws, "dist_log_prob": _draws, "dist_entropy": _draws, "dist_mean": _draws,
    "dist_kl": _draws,
}
