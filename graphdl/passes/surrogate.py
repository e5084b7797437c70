"""The stochastic surrogate: the gradient of an expected loss, written into the IR.

A sample drawn `by reinforce` carries no gradient; its parameters learn from the score
function cost * grad log p(sample) (Schulman et al. 2015). A sample drawn `by enumerate`
carries none either: the loss terms below it are replaced by their exact expectation,
the sum over its support weighted by the probabilities. For each scalar loss this pass
adds what that takes and a `surrogate` node beside the loss, which a train step
differentiates (`g.graph["surrogates"]`: loss -> surrogate) while it reports the loss:

- `dist_log_prob` scores each `reinforce` sample (inside a scanned cell: an extra body
  output, stacked over the steps as an extra result of the scan, read by a `getitem`).
- The loss is split into additive terms (costs.py). A sample's cost is the sum of the
  terms that depend on it, per example where the graph keeps the examples apart: example
  i's draw is scored by example i's entries of the terms alone. A term that does not
  split (an op that mixes the examples, or a non-additive op like `log(mean(...))`)
  scores every draw with its whole value; its `split` attribute names the op. Terms that
  do not depend on a sample add nothing to its score. The `cost` node holds a sample's
  cost per example (no gradient), the quantity a baseline predicts, in the units of one
  example: each term's share of the loss times the number of examples N (for
  loss = mean(f) the cost of example i is f_i).
- `expect` (one per enumerated sample) runs the nodes between the sample and its terms
  (its `body`) once per point of the support, vmapped, and sums them weighted by the
  probabilities; per example when the terms split, else jointly over the whole node.
- `surrogate` is DiCE's objective (Foerster et al. 2018) with a baseline term (Mao et
  al. 2019): loss + D - stop_gradient(D), where D sums, per term, magic(tau) * value -
  value (tau: the log-probabilities of the draws the term depends on, example by
  example; magic(x) = exp(x - stop_gradient(x)); the expectation in place of value for an
  enumerated term) and, per baselined sample, mean((1 - magic(log p)) * b). Its value is
  the loss; its derivatives of every order are the expected loss's.
- Baselines: `moving_average(decay)` is a `stat` (training state, like batch norm's) the
  surrogate updates to decay * b + (1 - decay) * mean(cost) after using it; a tensor
  baseline is also fitted to the cost by the added regression term mean((b - cost)^2).

    graph g(l: f32[B, 3], y: i32[B]) -> f32[] {
        a ~ categorical(logits = l) by reinforce(baseline = moving_average(0.9))
        return -mean(cast(a == y, "f32"))
    }

    ir g(%0, %1)
      %0 = input(name="l") : f32[B, 3]
      %1 = input(name="y") : i32[B]
      %2 = stat(name="g.a.moving_average", init=["zeros"], frozen=false) : f32[]
      %3 = sample(logits=%0, baseline=%2, family="categorical", estimator="reinforce",
                  name="a", options={}, moving_average=0.9) : i32[B]
      %4 = eq(x=%3, y=%1) : bool[B]
      %5 = cast(x=%4, dtype="f32") : f32[B]
      %6 = mean(x=%5, axis=none, keepdims=false) : f32[]
      %7 = neg(x=%6) : f32[]
      return %7
    ==>
      ... %0 to %7 as they were, then
      %8 = dist_log_prob(p.logits=%0, x=%3, family="categorical") : f32[B]
      %9 = cost(term.0=%5, sample="a", terms=[{coef = -1.0, times = [], per = [B],
                split = "example"}]) : f32[B]
      %10 = surrogate(loss=%7, term.0=%5, logp.0=%8, cost.0=%9, baseline.0=%2,
                samples=["a"], terms=[{coef = -1.0, times = [], per = [B], example = [0],
                whole = []}], baselines=[{moving_average = 0.9, update = true}]) : f32[]
      return %7

The loss -mean(r) has one term, r (coefficient -1, divided by B), which splits per
example: a_i's cost is -r_i, and its score is (-r_i - b) * grad log p(a_i) / B.

Errors, each at the sample's line: an enumerated support of more than MAX_SUPPORT points
(ops/estimators.py), two enumerated samples in one term, a sample drawn below an
enumerated one, `enumerate` or a tensor baseline inside a cell. (A baseline cannot depend
on its own sample: the name is bound after the baseline is computed.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx

from graphdl.dims import Dim, TensorType
from graphdl.errors import Diagnostic, GdlError, Span, UserError
from graphdl.ir.graph import IR, add_node, dataflow, new_ir, node, order
from graphdl.ir.graph import clone as clone_ir
from graphdl.ops.distributions import FAMILIES, per_draw_shape, values_per_draw
from graphdl.ops.estimators import ESTIMATORS, support_problem
from graphdl.passes.costs import Term, additive_terms, split_problem


@dataclass(frozen=True)
class Scored:
    """A sample scored by its log-probability (drawn by a score-function estimator)."""

    name: str
    origin: int  # the node of this IR below which it acts: the sample, or the scan drawing it
    logp: int  # its log-probability in this IR (stacked over the steps for a cell's sample)
    span: Span | None
    scope: str
    baseline: int | None = None  # a `stat` (moving average) or a tensor, a node of this IR
    decay: float | None = None  # moving_average(decay); None for a tensor baseline
    in_cell: bool = False

    def per_example(self, g: IR) -> bool:
        return not self.in_cell and bool(node(g, self.origin).shape)


def run(g: IR) -> IR:
    losses = [o for o in g.graph["outputs"] if _is_loss(node(g, o).type)]
    if not losses:
        return g
    problems: dict[tuple, Diagnostic] = {}
    scored = scored_samples(g, problems)
    exact = [nid for nid in order(g) if node(g, nid).op == "sample"
             and ESTIMATORS[node(g, nid).attrs["estimator"]].exact]
    surrogates = {}
    if scored or exact:
        updated: set[int] = set()  # a moving average is updated by the first loss only
        for loss in losses:
            surrogates[loss] = _surrogate(g, loss, scored, exact, updated, problems)
    if problems:
        raise GdlError(sorted(problems.values(), key=_position))
    g.graph["surrogates"] = {k: v for k, v in surrogates.items() if v != k}
    return g


def _is_loss(t) -> bool:
    return isinstance(t, TensorType) and t.shape == () and t.is_float()


def _position(d: Diagnostic) -> tuple:
    return (d.span.line, d.span.col) if d.span else (0, 0)


def _problem(problems: dict, message: str, span: Span | None, hint: str | None = None,
             notes: tuple = ()) -> None:
    problems.setdefault((message, span), UserError(message, span, hint, notes).diagnostic)


# -- the samples and their log-probabilities --------------------------------------------
def scored_samples(g: IR, problems: dict, in_cell: bool = False) -> list[Scored]:
    """Insert a log-probability node for each score-function sample of `g` and of the
    bodies of its scans; returns them as seen from `g`."""
    out = []
    for nid in order(g):
        n = node(g, nid)
        if n.op == "sample":
            estimator = ESTIMATORS[n.attrs["estimator"]]
            if estimator.exact and in_cell:
                _problem(problems, f"`{n.attrs['name']}` cannot be enumerated inside a cell: "
                         "its support would grow with the steps", n.span,
                         "draw it `by reinforce` (a moving_average baseline works in a cell)")
            if estimator.score_function:
                out.append(_score(g, nid, n, in_cell, problems))
        elif n.op == "scan":
            out.extend(_scan_samples(g, nid, problems))
    return out


def _score(g: IR, nid: int, n, in_cell: bool, problems: dict) -> Scored:
    params = [(src, arg) for src, arg in n.operands() if arg != "baseline"]
    family = FAMILIES[n.attrs["family"]]
    logp_type = TensorType("f32", per_draw_shape(family, n.type.shape))
    logp = add_node(g, "dist_log_prob", [src for src, _ in params] + [nid],
                    [f"p.{arg}" for _, arg in params] + ["x"],
                    {"family": family.name}, logp_type, n.span, n.scope)
    baseline = dict((arg, src) for src, arg in n.operands()).get("baseline")
    decay = n.attrs.get("moving_average")
    if baseline is not None and decay is None and in_cell:
        _problem(problems, f"`{n.attrs['name']}` is drawn inside a cell, so a tensor cannot "
                 "be its baseline: its cost is the whole loss, not one per example", n.span,
                 "use `baseline = moving_average(0.9)`")
        baseline = None
    return Scored(n.attrs["name"], nid, logp, n.span, n.scope, baseline, decay, in_cell)


def _scan_samples(g: IR, nid: int, problems: dict) -> list[Scored]:
    """The body's samples, scored inside the body: each log-probability an extra body
    output, a result of the scan stacked over the steps, read here by a getitem."""
    n = node(g, nid)
    body = n.attrs["body"]
    steps = node(g, n.inputs[0]).type.shape[n.attrs["axis"]]
    out = []
    for inner in scored_samples(body, problems, in_cell=True):
        body.graph["outputs"].append(inner.logp)
        stacked = TensorType("f32", (steps, *node(body, inner.logp).type.shape))
        n.type = (*n.type, stacked)
        logp = add_node(g, "getitem", [nid], ["x"], {"index": len(n.type) - 1}, stacked,
                        n.span, n.scope)
        baseline = None
        if inner.baseline is not None:  # the moving average's statistic, read here too
            stat = node(body, inner.baseline)
            baseline = add_node(g, "stat", [], [], dict(stat.attrs), stat.type, stat.span,
                                stat.scope)
        out.append(Scored(inner.name, nid, logp, inner.span, inner.scope, baseline,
                          inner.decay, in_cell=True))
    return out


# -- one loss -----------------------------------------------------------------------
def _surrogate(g: IR, loss: int, scored: list[Scored], exact: list[int], updated: set,
               problems: dict) -> int:
    """Add the cost, expectation and surrogate nodes of the scalar `loss`; returns the
    surrogate (the loss itself when nothing stochastic is below it)."""
    flow = dataflow(g)
    origins = {s.origin for s in scored} | set(exact)
    below = set(origins).union(*(nx.descendants(flow, o) for o in origins))
    terms = additive_terms(g, loss, below)
    above = [nx.ancestors(flow, t.node) | {t.node} for t in terms]
    expected, exact_why = _enumerations(g, terms, above, exact, scored, problems)
    used = [s for s in scored if any(s.origin in a for a in above)]
    if not terms or (not used and not expected):
        return loss
    specs, costs = [], {j: [] for j in range(len(used))}
    for k, (t, a) in enumerate(zip(terms, above)):
        example, whole = [], []
        for j, s in enumerate(used):
            if s.origin not in a:
                continue
            why = _split(g, s, t, a, exact_why)
            (whole if why else example).append(j)
            costs[j].append((k, why or "example"))
        specs.append({**t.attrs(), "example": example, "whole": whole})
    inputs, args = [loss], ["loss"]
    for k, t in enumerate(terms):
        inputs.append(t.node)
        args.append(f"term.{k}")
        if k in expected:
            inputs.append(expected[k])
            args.append(f"exact.{k}")
    baselines = []
    for j, s in enumerate(used):
        cost = _cost_node(g, s, [(terms[k], expected.get(k, terms[k].node), why)
                                 for k, why in costs[j]])
        inputs += [s.logp, cost]
        args += [f"logp.{j}", f"cost.{j}"]
        if s.baseline is None:
            baselines.append(None)
            continue
        inputs.append(s.baseline)
        args.append(f"baseline.{j}")
        if s.decay is None:
            baselines.append("tensor")
        else:
            baselines.append({"moving_average": s.decay, "update": s.baseline not in updated})
            updated.add(s.baseline)
    n = node(g, loss)
    return add_node(g, "surrogate", inputs, args,
                    {"samples": [s.name for s in used], "terms": specs, "baselines": baselines},
                    n.type, n.span, n.scope)


def _split(g: IR, s: Scored, t: Term, above: set, exact_why: dict) -> str | None:
    """Why term `t` does not split per example for sample `s`, or None when it does."""
    if s.in_cell:
        scan = node(g, s.origin)
        return f"`{s.name}` is drawn inside a cell (scan() at {scan.span.line}:{scan.span.col})" \
            if scan.span else f"`{s.name}` is drawn inside a cell"
    for e, why in exact_why.items():
        if why and e in above and s.origin in nx.ancestors(dataflow(g), e):
            return f"the enumeration of `{node(g, e).attrs['name']}` is joint: {why}"
    return split_problem(g, s.origin, t.node)


def _cost_node(g: IR, s: Scored, parts: list[tuple[Term, int, str]]) -> int:
    """A sample's cost per example (one value when it is not split per example): each
    term's share of the loss times the examples N (for loss = mean(f) that is f_i)."""
    shape = node(g, s.origin).shape[:1] if s.per_example(g) else ()
    return add_node(g, "cost", [value for _, value, _ in parts],
                    [f"term.{i}" for i in range(len(parts))],
                    {"sample": s.name, "terms": [{**t.attrs(), "split": why} for t, _, why in parts]},
                    TensorType("f32", shape), s.span, s.scope)


# -- enumeration ----------------------------------------------------------------------
def _enumerations(g: IR, terms: list[Term], above: list[set], exact: list[int],
                  scored: list[Scored], problems: dict) -> tuple[dict, dict]:
    """An `expect` node for each enumerated sample below which some term lies; returns
    (term index -> its expectation, sample -> why it is enumerated jointly or None)."""
    feeds: dict[int, list[int]] = {}
    for k, a in enumerate(above):
        found = [e for e in exact if e in a]
        if len(found) > 1:
            first, second = (node(g, e) for e in found[:2])
            _problem(problems, f"`{first.attrs['name']}` and `{second.attrs['name']}` are both "
                     "enumerated and reach one term of the loss; they cannot be summed over "
                     "jointly here", second.span, "draw one of them `by reinforce`")
        elif found:
            feeds.setdefault(found[0], []).append(k)
    expected, joint = {}, {}
    for e, ks in feeds.items():
        made = _expect(g, e, [terms[k] for k in ks], scored, problems)
        if made is not None:
            ex, joint[e] = made
            for i, k in enumerate(ks):
                t = node(g, ex).type[i]
                expected[k] = add_node(g, "getitem", [ex], ["x"], {"index": i}, t,
                                       node(g, e).span, node(g, e).scope)
    return expected, joint


def _expect(g: IR, e: int, terms: list[Term], scored: list[Scored], problems: dict):
    """The `expect` node of sample `e` over `terms`, and why it is joint (None when it is
    per example); None when it cannot be built (a problem is recorded)."""
    n = node(g, e)
    name = n.attrs["name"]
    family = FAMILIES[n.attrs["family"]]
    why = next((p for p in (split_problem(g, e, t.node) for t in terms) if p), None)
    draws_shape = per_draw_shape(family, n.shape)[0 if why else 1:]
    draws = math.prod(draws_shape, start=Dim(1))
    params = [(src, arg) for src, arg in n.operands() if arg != "baseline"]
    classes = node(g, dict((a, s) for s, a in params)[family.event_from]).shape[-1] \
        if family.drop_last else (n.shape[-1] if family.one_hot else None)
    values = Dim.of(values_per_draw(family, classes))
    if values.is_int() and draws.is_int():
        problem = support_problem(name, int(values), int(draws))
        if problem:
            notes = (f"it is summed over for the whole batch at once because {why}",) if why else ()
            _problem(problems, problem, n.span, "draw it `by reinforce(baseline = "
                     "moving_average(0.9))`, or enumerate a smaller node", notes)
            return None
    flow = dataflow(g)
    outs = [t.node for t in terms]
    keep = (set(outs) | (nx.descendants(flow, e) & set().union(*(nx.ancestors(flow, o) for o in outs))))
    keep.discard(e)
    below = [s for s in scored if s.origin in keep] + \
        [i for i in keep if node(g, i).op == "sample"]
    if below:
        other = node(g, below[0] if isinstance(below[0], int) else below[0].origin)
        _problem(problems, f"`{other.attrs.get('name', other.op)}` is drawn below the "
                 f"enumerated `{name}`; enumerating `{name}` would need it drawn once per "
                 "value", other.span, f"draw `{name}` `by reinforce`")
        return None
    body, frees = _support_body(g, e, outs, keep)
    types = tuple(TensorType("f32", node(g, o).shape) for o in outs)
    attrs = {"family": family.name, "name": name, "values": values, "draws": draws,
             "over": "whole" if why else "example", **({"why": why} if why else {}),
             "body": body}
    ex = add_node(g, "expect", [src for src, _ in params] + frees,
                  [f"p.{arg}" for _, arg in params] + [f"in.{i}" for i in range(len(frees))],
                  attrs, types, n.span, n.scope)
    return ex, why


def _support_body(g: IR, e: int, outs: list[int], keep: set) -> tuple[IR, list[int]]:
    """The nodes `keep` (between sample `e` and the terms `outs`) as an IR of their own:
    input `x` stands for the sample, `in.i` for each value read from outside."""
    s = node(g, e)
    body = new_ir(f"{s.attrs['name']}_support")
    ids = {e: _input(body, "x", s)}
    frees: list[int] = []
    for nid in order(g):
        if nid not in keep:
            continue
        n = node(g, nid)
        for src in n.inputs:
            if src not in ids:
                ids[src] = _input(body, f"in.{len(frees)}", node(g, src))
                frees.append(src)
        attrs = {k: clone_ir(v) if isinstance(v, nx.DiGraph) else v for k, v in n.attrs.items()}
        ids[nid] = add_node(body, n.op, [ids[i] for i in n.inputs], n.args, attrs, n.type,
                            n.span, n.scope)
    body.graph["outputs"] = [ids[o] for o in outs]
    return body, frees


def _input(body: IR, name: str, like) -> int:
    nid = add_node(body, "input", [], [], {"name": name}, like.type, like.span, like.scope)
    body.graph["inputs"].append(nid)
    return nid
