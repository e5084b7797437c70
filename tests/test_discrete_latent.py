"""models/discrete_vae.gdl: one discrete-latent model, five estimators of its gradient.

The train blocks must be the same model with only the estimator of `z` changed (so that
their numbers compare estimators, not models), each must train, and the estimators that
claim to be unbiased must be: the mean of many `reinforce` gradients on one batch is
`enumerate`'s exact gradient, within Monte-Carlo error, while `straight_through`'s is not.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import graphdl
from graphdl.api import train_model
from graphdl.elaborate.check import check_program
from graphdl.ir.graph import node, order
from graphdl.runtime.data import SOURCES

MODEL = Path(__file__).resolve().parents[1] / "models" / "discrete_vae.gdl"
BLOCKS = ["reinforce", "value_net", "no_baseline", "enumerate", "straight_through"]
# What a block may change: the sample's estimator, its options and its baseline.
ESTIMATOR_ATTRS = {"estimator", "options", "moving_average"}


def _canonical(ir) -> list[str]:
    """The train IR as lines without ids or positions, leaving out the sample's estimator
    attributes and what only its baseline reads (the moving average, the value network)."""
    keep, stack = set(), list(ir.graph["outputs"])
    while stack:
        nid = stack.pop()
        if nid not in keep:
            keep.add(nid)
            n = node(ir, nid)
            stack += [i for i, a in n.operands() if not (n.op == "sample" and a == "baseline")]
    index = {nid: k for k, nid in enumerate(n for n in order(ir) if n in keep)}
    lines = []
    for nid in index:
        n = node(ir, nid)
        operands = [f"{a}=%{index[i]}" for i, a in n.operands() if a != "baseline"]
        attrs = [f"{k}={v!r}" for k, v in n.attrs.items() if k not in ESTIMATOR_ATTRS]
        lines.append(f"{n.op}({', '.join(operands + attrs)}) : {n.type} @ {n.scope}")
    return lines + [f"return {[index[o] for o in ir.graph['outputs']]}"]


def _sample(ir):
    (nid,) = [nid for nid in order(ir) if node(ir, nid).op == "sample"]
    return node(ir, nid)


def test_the_file_checks_with_five_train_blocks():
    checked = check_program(str(MODEL), MODEL.read_text(encoding="utf-8"), sources=SOURCES)
    assert checked.diagnostics == []
    assert [p.name for p in checked.trains] == BLOCKS


def test_the_blocks_differ_only_in_the_estimator():
    plans = {p.name: p for p in graphdl.load(MODEL).checked.trains}
    first = _canonical(plans["reinforce"].ir)
    assert any(line.startswith("sample(") for line in first)
    for name in BLOCKS[1:]:
        assert _canonical(plans[name].ir) == first, name
        # and their evaluations compute the same metrics the same way
        assert [_canonical(e.ir) for e in plans[name].evaluations] == \
            [_canonical(e.ir) for e in plans["reinforce"].evaluations], name
    samples = {name: _sample(plans[name].ir) for name in BLOCKS}
    assert {name: s.attrs["estimator"] for name, s in samples.items()} == {
        "reinforce": "reinforce", "value_net": "reinforce", "no_baseline": "reinforce",
        "enumerate": "enumerate", "straight_through": "straight_through"}
    assert samples["reinforce"].attrs["moving_average"] == 0.9
    baselined = {name for name, s in samples.items() if "baseline" in s.args}
    assert baselined == {"reinforce", "value_net"}


@pytest.mark.parametrize("block", BLOCKS)
def test_a_few_steps_of_each_block_lower_the_loss(block):
    # Z = 3 keeps enumerate's support (8 points) small; the rest is the file's block
    model = graphdl.load(MODEL, Z=3)
    steps = 30
    result = train_model(model, train_name=block, overrides={"steps": steps},
                         max_steps=steps, progress=False, quiet=True)
    losses = [r["loss"] for r in result.history if r["split"] == "train"]
    assert len(losses) == steps and np.all(np.isfinite(losses))
    start, end = np.mean(losses[:5]), np.mean(losses[-5:])
    assert end < start - 1.0, f"{block}: -ELBO {start:.2f} at the start, {end:.2f} at the end"
    assert np.isfinite(result.metrics["test"]["neg_elbo"])


# The train block's loss as a graph, so that `value_and_grad` gives one batch's gradient.
NEG_ELBO = """
graph neg_elbo(x: f32[B, 64]) -> f32[] {
    q     = bernoulli(logits = encoder(x))
    z     ~ q by ESTIMATOR
    recon = sum(bce(decoder(z), x), axis = -1)
    return mean(recon + sum(kl(q, bernoulli(logits = 0.0)), axis = -1))
}
"""


def _gradients(estimator: str, x, variables, keys) -> dict[str, np.ndarray]:
    """Each parameter's gradient for each key: [len(keys), *shape]."""
    text = MODEL.read_text(encoding="utf-8") + NEG_ELBO.replace("ESTIMATOR", estimator)
    step = graphdl.loads(text, Z=3).value_and_grad("neg_elbo")
    grads = [step(variables, x, key=k)[1] for k in keys]
    return {name: np.stack([np.asarray(g[name]) for g in grads]) for name in grads[0]}


def _mismatch(exact: dict, draws: dict) -> dict[str, float]:
    """Per encoder tensor (the decoder's gradient is the same pathwise one under every
    estimator): sum (mean of the draws - exact)^2 / sum (standard error)^2, about 1 for an
    unbiased estimator (0.1 to 3 measured over three sets of keys, the entries being
    correlated), growing with the number of draws for a biased one (90 to 190 at 200)."""
    out = {}
    for k in (k for k in exact if ".encoder." in k):
        err = np.sum((draws[k].mean(0) - exact[k][0]) ** 2)
        out[k] = float(err / np.sum(draws[k].var(0, ddof=1) / len(draws[k])))
    assert len(out) == 4, out
    return out


@pytest.fixture(scope="module")
def batch():
    x = graphdl.load(MODEL).sources["digits"].arrays("train")["x"][:16]
    x = (np.asarray(x) > 0.5).astype(np.float32)
    model = graphdl.loads(MODEL.read_text(encoding="utf-8")
                          + NEG_ELBO.replace("ESTIMATOR", "enumerate"), Z=3)
    variables = model.compile("neg_elbo").init(jax.random.key(0), x)
    keys = list(jax.random.split(jax.random.key(1), 600))
    exact = _gradients("enumerate", x, variables, keys[:1])
    return x, variables, keys, exact


@pytest.mark.parametrize("estimator", ["reinforce", "reinforce(baseline = moving_average(0.9))"])
def test_reinforce_averages_to_the_exact_gradient_of_enumerate(batch, estimator):
    x, variables, keys, exact = batch
    if "moving_average" in estimator:
        # a baseline far from zero: it must not move the expected gradient
        variables = {**variables, "stats": {"neg_elbo.z.moving_average": np.float32(30.0)}}
    draws = _gradients(estimator, x, variables, keys)
    assert max(_mismatch(exact, draws).values()) < 8.0, _mismatch(exact, draws)


def test_straight_through_is_biased_and_the_check_sees_it(batch):
    x, variables, keys, exact = batch
    draws = _gradients("straight_through", x, variables, keys[:200])
    assert min(_mismatch(exact, draws).values()) > 50.0, _mismatch(exact, draws)
