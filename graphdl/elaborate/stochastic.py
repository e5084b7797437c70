"""Stochastic nodes: distributions as values, `name ~ dist by estimator`, and their checks.

    z ~ normal(mu, sigma)                 # default estimator: reparam (continuous)
    ==>
    %5 = sample(loc=%3, scale=%4, family="normal", estimator="reparam", name="z") : f32[B, Z]
"""

from __future__ import annotations

from graphdl.dims import Dim, TensorType
from graphdl.elaborate.build import Builder
from graphdl.elaborate.values import Const, DistV, Poison, Setting, Tensor, describe
from graphdl.errors import did_you_mean
from graphdl.ops.distributions import FAMILIES, analytic_kl, per_draw_shape
from graphdl.ops.estimators import (
    ESTIMATORS,
    admitted,
    default_estimator,
    estimator_error,
    estimator_hint,
)
from graphdl.ops.registry import ShapeError, broadcast
from graphdl.parse import ast as A


def _logits_from_probs(b: Builder, rule: str | None, p: Tensor, span) -> Tensor:
    """`probs = p` is stored as logits: log p (rule "log") or log p - log(1 - p) ("logit")."""
    log_p = b.apply_op("log", [p], {}, span, [span])
    if rule != "logit":
        return log_p
    one_minus = b.apply_op("sub", [Const(1.0), p], {}, span, [span, span])
    return b.apply_op("sub", [log_p, b.apply_op("log", [one_minus], {}, span, [span])], {},
                      span, [span, span])


def make_distribution(b: Builder, family: str, args, kwargs, span, arg_spans, kw_spans):
    fam = FAMILIES[family]
    params: dict[str, Tensor] = {}
    shape = kwargs.pop("shape", None)
    names = list(fam.params)
    if len(args) > len(names):
        return b.error(f"{family}() takes {len(names)} parameters ({', '.join(names)})", span)
    given = dict(zip(names, zip(args, arg_spans)))
    for k, v in kwargs.items():
        key = fam.aliases.get(k, k)
        if key not in names:
            return b.error(f"{family}() has no parameter `{k}`", kw_spans.get(k, span),
                           hint=f"its parameters are {', '.join(names)}, shape"
                           + (f"; {did_you_mean(k, names)}" if did_you_mean(k, names) else ""))
        if key in given:
            return b.error(f"{family}() got `{key}` twice (as `{k}`)", kw_spans.get(k, span),
                           hint="give the parameter once: logits or probs, loc or mu, ...")
        given[key] = (v, kw_spans.get(k, span))
    for n in names:
        if n not in given:
            return b.error(f"{family}() is missing its parameter `{n}`", span)
        v, s = given[n]
        if isinstance(v, Poison):
            return v
        if isinstance(v, Const) and isinstance(v.value, (int, float)):
            v = b.const_tensor(float(v.value), s)
        if not isinstance(v, Tensor):
            return b.error(f"parameter `{n}` of {family}() must be a tensor, got {describe(v)}", s)
        if n == "logits" and "probs" in kwargs and "logits" not in kwargs:
            v = _logits_from_probs(b, fam.probs, v, s)
        params[n] = v
    try:
        event = params[fam.event_from].type
        for p in params.values():
            event = TensorType("f32", broadcast(event, p.type, "combine"))
    except ShapeError as err:
        return b.error(f"the parameters of {family}() do not fit: {err.message}", span, err.hint)
    dims = event.shape[:-1] if fam.drop_last else event.shape
    if shape is not None:
        values = shape.value if isinstance(shape, Const) else None
        if not isinstance(values, list) or not all(
                isinstance(d, Dim) or (isinstance(d, int) and not isinstance(d, bool) and d >= 0)
                for d in values):
            return b.error("`shape` must be a list of dims like [B, 2]",
                           kw_spans.get("shape", span))
        dims = tuple(Dim.of(d) for d in values)
    return DistV(family, params, TensorType(fam.sample_dtype, tuple(dims)))


def sample_statement(b: Builder, st: A.Sample) -> None:
    dist = b.expr(st.dist)
    if isinstance(dist, Poison):
        b.bind(st.target, dist, st.span)
        return
    if not isinstance(dist, DistV):
        b.error(f"`~` needs a distribution on its right, got {describe(dist)}", st.dist.span,
                hint="for example `z ~ normal(mu, sigma)`")
        b.bind(st.target, Poison(), st.span)
        return
    fam = FAMILIES[dist.family]
    est_name, est_args, est_span = None, {}, st.dist.span
    if st.estimator is not None:
        est_name = st.estimator.func.id
        est_span = st.estimator.func.span
        if est_name not in ESTIMATORS:
            b.error(f"unknown estimator `{est_name}`", est_span,
                    did_you_mean(est_name, ESTIMATORS) or f"estimators are {', '.join(ESTIMATORS)}")
            b.bind(st.target, Poison(), st.span)
            return
        if st.estimator.args:
            b.error(f"estimator `{est_name}` takes keyword arguments only", st.estimator.span)
        for kw in st.estimator.kwargs:
            if kw.name not in ESTIMATORS[est_name].keywords:
                allowed = ESTIMATORS[est_name].keywords
                b.error(f"estimator `{est_name}` has no keyword `{kw.name}`", kw.span,
                        hint=(f"its keywords are {', '.join(allowed)}" if allowed
                              else f"`{est_name}` takes no keywords"))
                continue
            value = b.expr(kw.value)
            problem = _option_problem(kw.name, value)
            if problem:
                b.error(problem, kw.value.span)
                b.bind(st.target, Poison(), st.span)
                return
            est_args[kw.name] = value.value if isinstance(value, Const) else value
    elif default_estimator(fam) is not None:
        est_name = default_estimator(fam)
    else:
        b.error(f"{dist.family} is discrete, so `{st.target} ~ {dist.family}(...)` needs an "
                "estimator", st.dist.span,
                hint=estimator_hint(fam).replace("use ", "add ", 1))
        b.bind(st.target, Poison(), st.span)
        return
    if est_name not in admitted(fam):
        msg, hint = estimator_error(fam, est_name)
        b.error(msg, est_span, hint)
        b.bind(st.target, Poison(), st.span)
        return
    baseline = est_args.get("baseline")
    if baseline is not None and not (isinstance(baseline, Setting) and baseline.name == "moving_average"):
        if not isinstance(baseline, Tensor):
            b.error("`baseline` must be moving_average(decay) or a tensor", st.estimator.span)
        else:
            per_example = dist.type.shape[:1]
            if baseline.type.shape not in ((), per_example) or not baseline.type.is_float():
                b.error(f"a baseline is one value per example ({TensorType('f32', per_example)})"
                        f", got {baseline.type}", st.estimator.span,
                        hint="a baseline network ends in dense(1); take its [:, 0]")
                baseline = None
    attrs = {"family": dist.family, "estimator": est_name, "name": st.target,
             "options": {k: v for k, v in est_args.items() if not isinstance(v, (Tensor, Setting))}}
    inputs = list(dist.params.values())
    names = list(dist.params)
    if isinstance(baseline, Setting):
        # the running average of the node's cost is training state, like batch norm's
        # statistics: a `stat` the surrogate pass reads and updates (passes/surrogate.py)
        attrs["moving_average"] = baseline.kwargs.get("decay", 0.9)
        baseline = b.param_node(b.call_prefix("moving_average", None), TensorType("f32", ()),
                                ("zeros",), st.estimator.span, kind="stat")
    if isinstance(baseline, Tensor):
        inputs.append(baseline)
        names.append("baseline")
    nid = b.node("sample", inputs, names, attrs, dist.type, st.span)
    b.g.graph.setdefault("stochastic", []).append(nid)
    b.bind(st.target, Tensor(nid, dist.type, f"`{st.target}`, sampled at {st.span.short()}"), st.span)


def _option_problem(name: str, value) -> str | None:
    """Why an estimator option does not fit, or None."""
    if isinstance(value, Poison):
        return None
    if name == "temperature":
        ok = isinstance(value, Const) and isinstance(value.value, (int, float)) \
            and not isinstance(value.value, bool) and value.value > 0
        return None if ok else "`temperature` must be a positive number"
    if name == "hard":
        ok = isinstance(value, Const) and isinstance(value.value, bool)
        return None if ok else "`hard` must be true or false"
    if name == "baseline" and isinstance(value, Setting) and value.name == "moving_average":
        decay = value.kwargs.get("decay", 0.9)
        ok = isinstance(decay, (int, float)) and not isinstance(decay, bool) and 0 <= decay < 1
        return None if ok else f"the decay of moving_average() must be in [0, 1), got {decay!r}"
    if name == "baseline" and not isinstance(value, (Setting, Tensor)):
        return "`baseline` must be moving_average(decay) or a tensor"
    return None


def dist_function(b: Builder, fn: str, args, kwargs, span):
    want = {"log_prob": 2, "entropy": 1, "mean": 1, "kl": 2}[fn]
    if len(args) != want or kwargs:
        return b.error(f"{fn}() takes {want} positional argument(s)", span)
    dist = args[0]
    if not isinstance(dist, DistV):
        return b.error(f"{fn}() needs a distribution first, got {describe(dist)}", span)
    inputs = list(dist.params.values())
    names = [f"p.{n}" for n in dist.params]
    attrs = {"family": dist.family}
    if fn == "log_prob":
        x = args[1]
        if isinstance(x, Const) and isinstance(x.value, (int, float)):
            x = b.const_tensor(x.value, span)
        if not isinstance(x, Tensor):
            return b.error(f"log_prob() needs a value to score, got {describe(x)}", span)
        inputs.append(x)
        names.append("x")
        out = TensorType("f32", per_draw_shape(FAMILIES[dist.family], x.type.shape))
    elif fn == "kl":
        q = args[1]
        if not isinstance(q, DistV):
            return b.error(f"kl() compares two distributions, got {describe(q)}", span)
        if analytic_kl(dist.family, q.family) is None:
            return b.error(f"kl({dist.family}, {q.family}) has no analytic form here", span,
                           hint="estimate it with log_prob(p, z) - log_prob(q, z) on a sample z")
        inputs += list(q.params.values())
        names += [f"q.{n}" for n in q.params]
        attrs["q_family"] = q.family
        try:
            shape = broadcast(TensorType("f32", dist.type.shape), TensorType("f32", q.type.shape))
        except ShapeError as err:
            return b.error(f"kl(): {err.message}", span, err.hint)
        out = TensorType("f32", per_draw_shape(FAMILIES[dist.family], shape))
    elif fn == "mean":  # the sample's type: a categorical's mean is its most likely index
        out = dist.type
    else:  # entropy: one value per draw, the class axis of a one-hot reduced
        out = TensorType("f32", per_draw_shape(FAMILIES[dist.family], dist.type.shape))
    nid = b.node(f"dist_{fn}", inputs, names, attrs, out, span)
    return Tensor(nid, out, f"the result of {fn}() at {span.short()}")
