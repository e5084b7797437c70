"""Each op's declared type against what its lowering computes.

The front end types every node with the op's shape rule (`op.infer`); the lowering then
computes values in JAX. The two must agree, or a graph checks as one dtype and runs as
another (bf16 @ f32 weights is f32, not bf16). For every case of tests/test_lowering.py
(which covers every registry op), with its inputs as written and with its float inputs in
bf16, the graph is elaborated for concrete inputs and each registry-op node is compared:
the type its shape rule gives for the node's operand types, against `jax.eval_shape` of
its lowering on abstract operands of those types, in eval and in train mode.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_lowering import CASES, g1

from graphdl.api import loads
from graphdl.dims import TensorType, numpy_name
from graphdl.ir import IR, Node, node, nodes, verify
from graphdl.ir.verify import rule_arguments
from graphdl.lower.context import LowerCtx
from graphdl.lower.evaluate import _operands
from graphdl.ops import REGISTRY

# ops that no value case of test_lowering runs (they have dedicated tests there)
EXTRA = {
    "stop_gradient": (g1("stop_gradient(x) * x"), {"x": np.ones((2, 3), np.float32)}),
}
SOURCES = {c.id: (c.src, c.inputs) for c in CASES} | EXTRA
VARIANTS = [(cid, "as written") for cid in SOURCES] + [
    (cid, "bf16") for cid, (_, inputs) in SOURCES.items()
    if any(np.asarray(v).dtype == np.float32 for v in inputs.values())]


def bf16(src: str, inputs: dict) -> tuple[str, dict]:
    """The case with its f32 arguments declared and passed as bf16."""
    head, rest = src.split("\n", 1)
    assert head.startswith("graph g("), head
    return (head.replace("f32[", "bf16[") + "\n" + rest,
            {k: v.astype(jnp.bfloat16) if v.dtype == np.float32 else v for k, v in inputs.items()})


def walk(ir: IR):
    for _, n in nodes(ir):
        yield ir, n
        if "body" in n.attrs:
            yield from walk(n.attrs["body"])


def abstract(t: TensorType) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(t.concrete(), numpy_name(t.dtype))


def lowered_type(g: IR, n: Node, train: bool):
    """jax.eval_shape of the node's lowering on operands of their declared types."""
    kwargs = _operands(n, {i: abstract(node(g, i).type) for i in n.inputs})
    ctx = LowerCtx({}, {}, jax.random.key(0), train)
    ctx.stat_names = {a: node(g, i).attrs["name"] for i, a in n.operands()
                      if node(g, i).op == "stat"}
    return jax.eval_shape(lambda kw: REGISTRY[n.op].lower(ctx, **kw, **n.attrs), kwargs)


def mismatch(declared, lowered) -> str | None:
    want = declared if isinstance(declared, tuple) else (declared,)
    got = lowered if isinstance(lowered, tuple) else (lowered,)
    if len(want) != len(got):
        return f"{len(want)} results declared, {len(got)} computed"
    for t, s in zip(want, got):
        if tuple(t.concrete()) != tuple(s.shape) or jnp.dtype(numpy_name(t.dtype)) != s.dtype:
            return f"declares {t}, the lowering gives {s.dtype}{list(s.shape)}"
    return None


@functools.cache
def checked_ops(cid: str, variant: str) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(op, problem or "", dtypes of its tensor arguments) per registry-op node of the case
    (the weights of a layer are not its arguments: they stay f32)."""
    src, inputs = SOURCES[cid]
    if variant == "bf16":
        src, inputs = bf16(src, inputs)
    # the ops as the case writes them: without the rewrite passes, which replace some
    # (conv -> conv_lowered, pools -> reshape + max); those have cases of their own
    ir, _ = loads(src, rewrites=False).compile("g").lowered(
        [np.asarray(v) for v in inputs.values()])
    assert verify(ir) == []
    out = []
    for g, n in walk(ir):
        if n.op not in REGISTRY:
            continue
        operand_types = {a: node(g, i).type for i, a in n.operands()}
        types, missing = rule_arguments(REGISTRY[n.op], n, operand_types)
        assert not missing, missing
        declared = REGISTRY[n.op].infer(**types)
        assert declared == n.type  # the IR holds what the rule says
        problems = [f"{'train' if train else 'eval'}: {p}" for train in (False, True)
                    if (p := mismatch(declared, lowered_type(g, n, train)))]
        arguments = {a.name for a in REGISTRY[n.op].args}
        dtypes = tuple(t.dtype for a, t in operand_types.items() if a.split(".")[0] in arguments)
        out.append((n.op, "; ".join(problems), dtypes))
    return tuple(out)


@pytest.mark.parametrize("cid, variant", VARIANTS, ids=[f"{c}-{v}" for c, v in VARIANTS])
def test_declared_type_is_the_lowered_type(cid, variant):
    bad = [f"{op}: {problem}" for op, problem, _ in checked_ops(cid, variant) if problem]
    assert not bad, "\n".join(bad)


def test_every_op_is_checked_and_in_bf16_where_it_takes_floats():
    as_written = [r for cid in SOURCES for r in checked_ops(cid, "as written")]
    in_bf16 = [r for cid, v in VARIANTS if v == "bf16" for r in checked_ops(cid, v)]
    assert set(REGISTRY) <= {op for op, *_ in as_written}
    takes_floats = {op for op, _, dtypes in as_written if "f32" in dtypes}
    assert takes_floats - {op for op, _, dtypes in in_bf16 if "bf16" in dtypes} == set()


def test_dense_on_bf16_is_f32():
    """bf16 inputs meet f32 weights: x @ w promotes, and the rule says so."""
    x = TensorType.make("bf16", ["B", 3])
    assert str(REGISTRY["dense"].infer(x=x, units=4, bias=True)) == "f32[B, 4]"
