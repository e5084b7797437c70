"""Labels against the model's classes: `cross_entropy(logits, data.y)` with a label at or
past the logits' class count gives a NaN loss (or a silently wrong one), so a train block
whose labels do not fit its logits is refused before the first step."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphdl.errors import GdlError, UserError
from graphdl.ir.graph import node, nodes
from graphdl.runtime.data.base import Source


def check_label_classes(plan, sources: Mapping[str, Source]) -> None:
    """For each `cross_entropy` of the train block and its evaluations whose labels are a
    data field read straight from a batch: the source's class count (when it knows one,
    e.g. dataset("digits") has 10) and every label of the split must be below the logits'
    last axis. Raises a GdlError at the cross_entropy call."""
    for ir, batch in [(plan.ir, plan.batch)] + [(e.ir, e.batch) for e in plan.evaluations]:
        if batch is None:
            continue
        fields = {nid: name for name, nid in batch.inputs.items()}
        for _, n in nodes(ir):
            if n.op != "cross_entropy" or len(n.inputs) != 2 or n.inputs[1] not in fields:
                continue
            logits, labels = node(ir, n.inputs[0]), node(ir, n.inputs[1])
            shape = logits.type.concrete() if logits.type is not None else None
            if not shape or labels.type is None or labels.type.dtype != "i32":
                continue
            _check(n, shape[-1], sources[batch.source], batch.source, batch.split,
                   fields[n.inputs[1]])


def _check(ce, count: int, source: Source, name: str, split: str, field: str) -> None:
    where = getattr(source, "_where", None)
    text = {ce.span.file: where[3]} if where and ce.span is not None else {}
    known = source.static_info.get("classes")
    if isinstance(known, int) and known > count:
        raise GdlError([UserError(
            f"the logits have {count} classes, but the labels `{name}.{field}` have {known} "
            f"({source.describe} has {known} classes)", ce.span,
            hint=f"make the last layer {known} wide").diagnostic], text)
    labels = source.arrays(split)[field]
    if not labels.size:
        return
    flat = labels.reshape(len(labels), -1)
    bad = np.flatnonzero(((flat < 0) | (flat >= count)).any(axis=1))
    if bad.size:
        i = int(bad[0])
        row = flat[i]
        value = int(row[(row < 0) | (row >= count)][0])
        raise GdlError([UserError(
            f"the logits have {count} classes, but `{name}.{field}` holds the label {value} "
            f"(split '{split}', example {i} of {source.describe})", ce.span,
            hint=f"labels must be 0..{count - 1}; widen the last layer or fix the data"
        ).diagnostic], text)
