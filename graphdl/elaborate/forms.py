"""The shape of the forms table: how low modules reach the built-in forms above them.

Elaboration is mutually recursive: an expression can be a call of `scan`, whose cell body
has statements, which have expressions... The modules are layered so that every import
goes downward (values -> folding/indexing -> binding -> forms -> program -> build ->
calls -> cells -> stochastic -> train -> specials -> check), and the upward steps go
through one table instead: `specials.FORMS`, a `Forms` built at the top of the package
and handed to the `Program`, where every Builder finds it as `b.forms`.

    build.py    `scan(xs, lstm)`   ->  b.forms.calls["scan"]        (cells.scan)
    build.py    `mlp(x)`           ->  b.forms.callees[GraphRef]     (calls.inline_graph)
    calls.py    `z ~ normal(...)`  ->  b.forms.statements[A.Sample]  (stochastic.sample_statement)
    build.py    `charlm.step`      ->  b.forms.fields[GraphRef]      (calls.graph_layer)

So build.py and calls.py never import cells, stochastic or train; to add a built-in form,
write its handler where it belongs and add it to the table in specials.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# A handler's first argument is the Builder (build.py, above this module, so not named).
# (b, args, kwargs, span, arg_spans, kw_spans) -> value: a form called by name
CallForm = Callable[..., object]
# (b, callee, args, kwargs, span, arg_spans, kw_spans, instance) -> value: a call of a value
CalleeForm = Callable[..., object]
# (b, statement) -> None
StatementForm = Callable[..., None]
# (b, syntax node) -> value: a keyword argument read from its syntax, not evaluated
SyntaxReader = Callable[..., object]
# (b, value, A.Field node) -> value: a field of a value
FieldForm = Callable[..., object]


@dataclass(frozen=True)
class Forms:
    """Every built-in form and statement, by what a program writes."""

    # names a program calls: scan, generate, adam, cosine, early_stop, normal, log_prob, ...
    calls: Mapping[str, CallForm]
    # calls of a value, by its type: a graph (GraphRef), a data split (SplitRef)
    callees: Mapping[type, CalleeForm]
    # statements other than `name = value`, by syntax type: A.Sample (`~`), A.State, ...
    statements: Mapping[type, StatementForm]
    # an op that means something else when its first argument is a distribution (`mean(d)`)
    distribution_ops: Mapping[str, CallForm]
    # (form, keyword) whose value is read from its syntax: generate's `pick = sample`
    # (`sample` is no name in scope, and `beam(4)` no op)
    syntax_keywords: Mapping[tuple[str, str], SyntaxReader]
    # (form, positional index) -> the keyword of syntax_keywords that position is:
    # generate's fifth argument is `pick`, so `generate(d, s, tok, 5, sample)` reads it too
    syntax_positions: Mapping[tuple[str, int], str] = field(default_factory=dict)
    # `VALUE.NAME` of a value other than a record or a data source, by the value's type:
    # a graph's layer (`charlm.step`, GraphRef)
    fields: Mapping[type, FieldForm] = field(default_factory=dict)
