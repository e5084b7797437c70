"""Built-in forms that are not plain ops: scan, distributions, optimizers, schedules."""

from __future__ import annotations

from graphdl.elaborate.build import Builder
from graphdl.elaborate.values import Const, Poison, Setting
from graphdl.errors import Span, did_you_mean
from graphdl.ops.registry import REQUIRED, parse_signature
from graphdl.ops.training import OPTIMIZERS, SCHEDULES

SETTINGS_FORMS = {
    "early_stop": "metric: any, patience = 5, mode = \"max\"",
    "moving_average": "decay = 0.9",
}


class Bound(dict):
    """Arguments bound to a special form's signature, with the span of each."""

    def __init__(self, values: dict, spans: dict, default_span: Span):
        super().__init__(values)
        self.spans = spans
        self.default_span = default_span

    def span(self, name: str) -> Span:
        return self.spans.get(name, self.default_span)


def bind_special(b: Builder, name: str, signature: str, args, kwargs, span, arg_spans, kw_spans):
    sig = parse_signature(signature.replace(": any", ""))
    names = [a.name for a in sig]
    if len(args) > len(sig):
        b.error(f"{name}() takes at most {len(sig)} arguments, got {len(args)}", span,
                hint=f"its arguments are {', '.join(names)}")
        return None
    values = dict(zip(names, args))
    spans = dict(zip(names, arg_spans))
    for k, v in kwargs.items():
        if k not in names:
            near = did_you_mean(k, names)
            b.error(f"{name}() has no keyword `{k}`", kw_spans.get(k, span),
                    hint=f"its keywords are {', '.join(names)}" + (f"; {near}" if near else ""))
            return None
        values[k] = v
        spans[k] = kw_spans.get(k, span)
    for a in sig:
        if a.name not in values:
            if a.default is REQUIRED:
                b.error(f"{name}() is missing its argument `{a.name}`", span)
                return None
            values[a.name] = Const(a.default)
    return Bound(values, spans, span)


def _setting(kind: str, table: dict):
    def form(b: Builder, args, kwargs, span, arg_spans, kw_spans):
        name = form.current
        bound = bind_special(b, name, table[name], args, kwargs, span, arg_spans, kw_spans)
        if bound is None:
            return Poison()
        out = {}
        for k, v in bound.items():
            if kind != "setting" and not isinstance(v, Const):
                return b.error(f"`{k}` of {name}() must be a constant", bound.span(k))
            out[k] = v.value if isinstance(v, Const) else v
        return Setting(kind, name, out, span)
    return form


def _make(kind: str, table: dict, name: str):
    form = _setting(kind, table)
    form.current = name
    return form


def _scan(b, args, kwargs, span, arg_spans, kw_spans):
    from graphdl.elaborate.cells import scan
    return scan(b, args, kwargs, span, arg_spans, kw_spans)


def _generate(b, args, kwargs, span, arg_spans, kw_spans):
    from graphdl.elaborate.cells import generate
    return generate(b, args, kwargs, span, arg_spans, kw_spans)


def _dist(family: str):
    def form(b, args, kwargs, span, arg_spans, kw_spans):
        from graphdl.elaborate.stochastic import make_distribution
        return make_distribution(b, family, args, kwargs, span, arg_spans, kw_spans)
    return form


def _dist_fn(fn: str):
    def form(b, args, kwargs, span, arg_spans, kw_spans):
        from graphdl.elaborate.stochastic import dist_function
        return dist_function(b, fn, args, kwargs, span)
    return form


SPECIALS = {"scan": _scan, "generate": _generate}
SPECIALS.update({n: _make("optimizer", {n: o.signature}, n) for n, o in OPTIMIZERS.items()})
SPECIALS.update({n: _make("schedule", {n: s.signature}, n) for n, s in SCHEDULES.items()})
SPECIALS.update({n: _make("setting", SETTINGS_FORMS, n) for n in SETTINGS_FORMS})
for _family in ("normal", "uniform", "bernoulli", "categorical", "onehot_categorical"):
    SPECIALS[_family] = _dist(_family)
for _fn in ("log_prob", "entropy", "kl"):
    SPECIALS[_fn] = _dist_fn(_fn)
