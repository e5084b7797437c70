"""The stochastic surrogate: make the score-function gradient part of the IR.

A sample drawn by a score-function estimator (`by reinforce`, `by enumerate`) carries
no gradient; its parameters learn through cost * grad log p(sample) (Schulman et al.
2015). This pass writes that into the IR: a `dist_log_prob` node scores each such
sample, and a `surrogate` node beside each scalar loss adds
stop_gradient(loss) * (sum log p - stop_gradient(sum log p)), which is 0 in value and
has the score-function gradient. `g.graph["surrogates"]` maps each loss node to its
surrogate: a train step differentiates the surrogate and reports the loss.

    ir g(%0)                                     ir g(%0)
      %0 = input(name="l") : f32[B, 3]             %0 = input(name="l") : f32[B, 3]
      %1 = sample(logits=%0, ...) : i32[B]   ==>   %1 = sample(logits=%0, ...) : i32[B]
      %2 = mean(%1) : f32[]                        %2 = mean(%1) : f32[]
      return %2                                    %3 = dist_log_prob(p.logits=%0, x=%1) : f32[B]
                                                   %4 = surrogate(loss=%2, terms.0=%3) : f32[]
                                                   return %2

A sample inside a scanned cell is scored inside the body: its log-probability becomes
an extra body output, stacked over the steps as an extra result of the `scan` node, and
read at the top through a `getitem` (likewise through nested scans).

The cost is the whole loss, not only the costs downstream of each sample, and a
`baseline` is not subtracted yet: unbiased, with more variance than needed (the
stochastic issue makes this pass sharper; its place in the pipeline stays).
"""

from __future__ import annotations

from graphdl.dims import TensorType
from graphdl.ir.graph import IR, add_node, node, order
from graphdl.ops.distributions import FAMILIES, per_draw_shape
from graphdl.ops.estimators import ESTIMATORS


def run(g: IR) -> IR:
    terms = score_terms(g)
    if not terms:
        return g
    surrogates = {}
    for out in g.graph["outputs"]:
        loss = node(g, out)
        if isinstance(loss.type, TensorType) and loss.type.shape == () and loss.type.is_float():
            surrogates[out] = add_node(g, "surrogate", [out, *terms],
                                       ["loss", *(f"terms.{i}" for i in range(len(terms)))],
                                       {}, loss.type, loss.span, loss.scope)
    g.graph["surrogates"] = surrogates
    return g


def score_terms(g: IR) -> list[int]:
    """Insert a log-probability node for each score-function sample of `g` (and of the
    bodies of its scans); returns the ids of the nodes that hold them in `g`."""
    terms = []
    for nid in order(g):
        n = node(g, nid)
        if n.op == "sample" and ESTIMATORS[n.attrs["estimator"]].score_function:
            params = [(src, arg) for src, arg in n.operands() if arg != "baseline"]
            family = FAMILIES[n.attrs["family"]]
            logp_type = TensorType("f32", per_draw_shape(family, n.type.shape))
            terms.append(add_node(g, "dist_log_prob", [src for src, _ in params] + [nid],
                                  [f"p.{arg}" for _, arg in params] + ["x"],
                                  {"family": family.name}, logp_type, n.span, n.scope))
        elif n.op == "scan":
            terms.extend(_scan_terms(g, nid))
    return terms


def _scan_terms(g: IR, nid: int) -> list[int]:
    """The body's terms as extra body outputs; each a result of the scan, over the steps."""
    n = node(g, nid)
    body = n.attrs["body"]
    inner = score_terms(body)
    steps = node(g, n.inputs[0]).type.shape[n.attrs["axis"]]
    out = []
    for term in inner:
        body.graph["outputs"].append(term)
        stacked = TensorType("f32", (steps, *node(body, term).type.shape))
        n.type = (*n.type, stacked)
        out.append(add_node(g, "getitem", [nid], ["x"], {"index": len(n.type) - 1}, stacked,
                            n.span, n.scope))
    return out
