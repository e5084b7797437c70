"""The forms table: every built-in form and statement, and the handler of each.

Lower modules (build, calls) look forms up here at run time through `b.forms` instead of
importing the modules that implement them (see forms.py for the layering). To add a
form, write its handler in the module it belongs to and add it to FORMS below.
"""

from __future__ import annotations

from graphdl.dims import number_problem
from graphdl.elaborate.binding import bind, signature
from graphdl.elaborate.build import Builder
from graphdl.elaborate.calls import graph_layer, inline_graph, layer_statement, param_statement
from graphdl.elaborate.cells import generate, pick_value, scan, state_statement
from graphdl.elaborate.forms import Forms
from graphdl.elaborate.stochastic import dist_function, make_distribution, sample_statement
from graphdl.elaborate.train import batch_of
from graphdl.elaborate.values import Const, GraphRef, Poison, Setting, SplitRef
from graphdl.ops.distributions import FAMILIES
from graphdl.ops.training import OPTIMIZERS, SCHEDULES
from graphdl.parse import ast as A

SETTINGS_FORMS = {
    "early_stop": "metric: any, patience = 5, mode = \"max\"",
    "moving_average": "decay = 0.9",
}


def _setting(kind: str, table: dict):
    def form(b: Builder, args, kwargs, span, arg_spans, kw_spans):
        name = form.current
        bound = bind(b, name, signature(table[name]), args, kwargs, span, arg_spans, kw_spans)
        if bound is None:
            return Poison()
        out = {}
        for k, v in bound.items():
            if kind != "setting" and not isinstance(v, Const):
                return b.error(f"`{k}` of {name}() must be a constant", bound.span(k))
            problem = number_problem(v.value, f"`{k}` of {name}()") \
                if isinstance(v, Const) else None
            if problem:
                return b.error(problem, bound.span(k))
            out[k] = v.value if isinstance(v, Const) else v
        return Setting(kind, name, out, span)
    return form


def _make(kind: str, table: dict, name: str):
    form = _setting(kind, table)
    form.current = name
    return form


def _dist(family: str):
    def form(b, args, kwargs, span, arg_spans, kw_spans):
        return make_distribution(b, family, args, kwargs, span, arg_spans, kw_spans)
    return form


def _dist_fn(fn: str):
    def form(b, args, kwargs, span, arg_spans, kw_spans):
        return dist_function(b, fn, args, kwargs, span)
    return form


SPECIALS = {"scan": scan, "generate": generate}
SPECIALS.update({n: _make("optimizer", {n: o.signature}, n) for n, o in OPTIMIZERS.items()})
SPECIALS.update({n: _make("schedule", {n: s.signature}, n) for n, s in SCHEDULES.items()})
SPECIALS.update({n: _make("setting", SETTINGS_FORMS, n) for n in SETTINGS_FORMS})
for _family in FAMILIES:  # one form per family in the table
    SPECIALS[_family] = _dist(_family)
for _fn in ("log_prob", "entropy", "kl"):
    SPECIALS[_fn] = _dist_fn(_fn)

FORMS = Forms(
    calls=SPECIALS,
    callees={GraphRef: inline_graph, SplitRef: batch_of},
    statements={A.Sample: sample_statement, A.State: state_statement,
                A.Param: param_statement, A.Layer: layer_statement},
    distribution_ops={"mean": _dist_fn("mean")},
    syntax_keywords={("generate", "pick"): pick_value},
    syntax_positions={("generate", 4): "pick"},
    fields={GraphRef: graph_layer},
)
