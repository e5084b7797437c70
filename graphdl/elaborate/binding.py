"""One signature binder for every call: ops, built-in forms, graphs, initializers, data sources.

Binding works like Python's: positionals in order, then keywords, then defaults. Every
caller gets the same wording and the same carets, so a user learns one set of messages:

    dense(x, 10, true, 4)   ->  dense() takes at most 3 arguments, got 4    (caret on `4`)
    adam(learning_rate = 1) ->  adam() has no keyword `learning_rate`       (caret on it)
                                hint: its keywords are lr, b1, b2, eps; did you mean `lr`?
    dense(x)                ->  dense() is missing its argument `units`     (caret on the call)
    dense(x, 10, units = 3) ->  dense() got `units` twice                   (caret on `units = 3`)

The binder only matches names to values; what a value must be (a tensor, a constant
integer) is checked by the caller, which knows the form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from graphdl.elaborate.folding import gdl_literal
from graphdl.elaborate.values import Const
from graphdl.errors import Span, did_you_mean
from graphdl.ops.registry import REQUIRED, Arg, parse_signature

__all__ = ["Arg", "Bound", "Reporter", "bind", "signature", "signature_text"]


class Reporter(Protocol):
    """Whatever collects a diagnostic: a Builder, or the Program while it opens data."""

    def error(self, message: str, span: Span | None, hint: str | None = None,
              notes: Sequence[str] = ()) -> object: ...


class Bound(dict):
    """Arguments bound to a signature (name -> value, defaults as `Const`), with the span
    each was written at; a default's span is the call's."""

    def __init__(self, values: dict, spans: dict, default_span: Span):
        super().__init__(values)
        self.spans = spans
        self.default_span = default_span

    def span(self, name: str) -> Span:
        return self.spans.get(name, self.default_span)


def signature(text: str) -> tuple[Arg, ...]:
    """`"xs, cell, axis = 1"` -> Args (the ops' signature syntax; defaults are GDL literals)."""
    return parse_signature(text)


def signature_text(what: str, sig: Sequence[Arg]) -> str:
    """`dense(x, units: int, bias: bool = true)`: how hints show a signature."""
    parts = []
    for a in sig:
        text = a.name if a.kind in ("tensor", "any") else f"{a.name}: {a.kind}"
        if a.default is not REQUIRED:
            text += f" = {gdl_literal(a.default) if a.default is not None else 'none'}"
        parts.append(text)
    return f"{what}({', '.join(parts)})"


def _arguments(n: int) -> str:
    return "no arguments" if n == 0 else f"at most {n} argument{'s' if n != 1 else ''}"


def bind(r: Reporter, what: str, sig: Sequence[Arg], args: Sequence, kwargs: Mapping[str, object],
         span: Span, arg_spans: Sequence[Span] = (), kw_spans: Mapping[str, Span] | None = None
         ) -> Bound | None:
    """Bind `what(*args, **kwargs)` to `sig`; None (after one error on `r`) if they do not fit.

    `arg_spans[i]` is where positional i is written (a missing one, as for the piped-in
    value of `x |> f(...)`, falls back to `span`); `kw_spans[k]` where keyword k is.
    """
    kw_spans = kw_spans or {}
    names = [a.name for a in sig]
    shown = signature_text(what, sig)
    if len(args) > len(sig):
        at = arg_spans[len(sig)] if len(arg_spans) > len(sig) else span
        r.error(f"{what}() takes {_arguments(len(sig))}, got {len(args)}", at,
                hint=f"its signature is {shown}")
        return None
    values: dict[str, object] = {}
    spans: dict[str, Span] = {}
    for i, (a, v) in enumerate(zip(sig, args)):
        values[a.name] = v
        spans[a.name] = arg_spans[i] if i < len(arg_spans) else span
    for k, v in kwargs.items():
        at = kw_spans.get(k, span)
        if k not in names:
            near = did_you_mean(k, names)
            hint = (f"its keywords are {', '.join(names)}" + (f"; {near}" if near else "")
                    if names else f"it takes no arguments: write {what}()")
            r.error(f"{what}() has no keyword `{k}`", at, hint)
            return None
        if k in values:
            r.error(f"{what}() got `{k}` twice", at,
                    hint=f"`{k}` is also given by position; its signature is {shown}")
            return None
        values[k], spans[k] = v, at
    for a in sig:
        if a.name not in values:
            if a.required:
                r.error(f"{what}() is missing its argument `{a.name}`", span,
                        hint=f"its signature is {shown}")
                return None
            values[a.name] = Const(a.default)
    # in signature order, so that callers iterating a Bound see the declared order
    return Bound({n: values[n] for n in names}, spans, span)
