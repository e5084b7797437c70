"""An evaluation's last, partial batch padded to the full batch size, masked in its metrics.

Without this, the split's last batch (1000 test examples in batches of 128: a last one
of 104) needed an IR and a compiled program of its own: a second compile at every run's
first evaluation. Padded, one program serves every batch: the padding rows repeat the
batch's own examples (so every value they make stays finite), and each `mean`, `sum`,
`max` and `min` that reduces over the examples counts the real ones only
(graphdl/lower/masked.py), so every metric equals that of the unpadded batch up to float
round-off. A random draw is made for the padded shape; with JAX's partitionable threefry
(the default) each element's bits depend on its index only, so the real rows draw what
they drew unpadded and a stochastic metric is unchanged too.

Which reductions run over the examples is read from the IR: a value "carries the
examples" when its axis 0 is the batch's (an input of batch size, a random draw of that
size, and what is computed from them keeping that leading dim). An evaluation whose IR
does something else with that axis (reshapes or transposes it away, reduces it with
another op, works along it, or reduces over it inside a cell body) is not padded: its
last batch gets its own program as before.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from graphdl.dims import TensorType
from graphdl.ir.graph import IR, node, order
from graphdl.ops import REGISTRY

# the reductions over the examples that the mask makes exact (graphdl/lower/masked.py)
MASKED_OPS = ("mean", "sum", "max", "min")
_REDUCTIONS = ("sum", "mean", "max", "min", "prod", "logsumexp")


def masked_reductions(ir: IR, batch: int, metrics) -> frozenset[int] | None:
    """The ids of the `mean`/`sum` nodes of `ir` to mask when its batch of `batch`
    examples is padded; None when padding could change a metric (see the module doc).
    `metrics`: the node ids the evaluation reads (each must be a reduction's result)."""
    return unpadded_because(ir, batch, metrics)[0]


def unpadded_because(ir: IR, batch: int, metrics) -> tuple[frozenset[int] | None, str]:
    """masked_reductions' answer, and when it is None, the node that stopped it."""
    needed = set(metrics).union(*(nx.ancestors(ir, m) for m in metrics))
    masked: set[int] = set()
    carries, why = _follow(ir, batch, needed, masked)
    if why:
        return None, why
    if any(m in carries for m in metrics):
        return None, "a metric keeps the examples' axis"
    return frozenset(masked), ""


def _follow(ir: IR, batch: int, needed, masked: set[int] | None) -> tuple[set[int], str]:
    """The nodes of `ir` (those in `needed`) that carry the examples, and why padding
    would change a value ("" when it would not). The `mean`/`sum` reductions over the
    examples go into `masked`; in a cell body (`masked` None) there must be none."""
    carries: set[int] = set()
    for nid in order(ir):
        if nid not in needed:
            continue
        n = node(ir, nid)
        lead = _lead(n.type)
        fed = any(i in carries for i in n.inputs)
        if n.op in ("input", "state") or (_random(n.op) and not fed):
            if lead == batch:
                carries.add(nid)
            continue
        if not fed:
            continue  # parameters, constants and what is made of them alone
        if "body" in n.attrs:  # a loop over the examples' steps: its body works per example?
            body = n.attrs["body"]
            _, why = _follow(body, batch, set(body.nodes), None)
            if why:
                return carries, f"in the body of %{nid} = {n.op}: {why}"
        if isinstance(n.type, tuple):  # a loop's results, read through getitem
            carries.add(nid)
            continue
        if n.op in _REDUCTIONS and n.inputs[0] in carries and _covers_axis0(n, ir):
            if n.op not in MASKED_OPS or masked is None:
                return carries, f"%{nid} = {n.op} over the examples"
            masked.add(nid)
            if lead == batch:  # keepdims on a batch of 1: never padded anyway
                return carries, f"%{nid} = {n.op} keeps the examples' axis"
            continue
        if (n.inputs[0] in carries and _along_axis0(n, ir)) or lead != batch:
            return carries, f"%{nid} = {n.op} : {n.type} moves or mixes the examples"
        carries.add(nid)
    return carries, ""


def pad_batch(batch: dict[str, np.ndarray], size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`batch` (n <= size examples) padded to `size` by repeating its own examples, and
    the mask: 1 for the n real examples, 0 for the padding."""
    n = len(next(iter(batch.values())))
    rows = np.arange(size) % n
    padded = {k: v if n == size else np.asarray(v)[rows] for k, v in batch.items()}
    return padded, (np.arange(size) < n).astype(np.float32)


def _lead(t) -> int | None:
    if not isinstance(t, TensorType) or t.rank == 0:
        return None
    d = t.shape[0]
    return int(d) if d.is_int() else None


def _random(op: str) -> bool:
    return op == "sample" or (op in REGISTRY and REGISTRY[op].random)


def _axes(value, rank: int) -> set[int]:
    if value is None:
        return set(range(rank))
    values = value if isinstance(value, (list, tuple)) else [value]
    return {int(a) % rank for a in values} if rank else set()


def _operand_rank(n, ir: IR) -> int:
    t = node(ir, n.inputs[0]).type if n.inputs else None
    return t.rank if isinstance(t, TensorType) else 0


def _covers_axis0(n, ir: IR) -> bool:
    return 0 in _axes(n.attrs.get("axis"), _operand_rank(n, ir))


def _along_axis0(n, ir: IR) -> bool:
    """An op that works along axis 0 (concat, softmax, cumsum, flip over it): it mixes
    the examples, so the padding rows would reach the real ones."""
    rank = _operand_rank(n, ir)
    return any(key in n.attrs and n.attrs[key] is not None and 0 in _axes(n.attrs[key], rank)
               for key in ("axis", "axes"))
