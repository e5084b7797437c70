"""Evaluation pads its split's last, partial batch to the full size and masks the padding
in every metric: the metrics equal those of the unpadded batches (to float round-off),
and each evaluate block is traced and compiled once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import graphdl
from graphdl.ir.graph import node
from graphdl.lower.masked import masked_reduce
from graphdl.passes.pipeline import run_passes
from graphdl.runtime import train as train_mod
from graphdl.runtime.eval_pad import pad_batch, unpadded_because
from graphdl.runtime.train import Trainer

SOURCE = """\
graph net(x: f32[B, 4]) -> f32[B, 3] {
    return x |> dense(8) |> batch_norm |> relu |> dense(3)
}

data blobs = npz("blobs.npz", split = [0.5, 0.25, 0.25], seed = 0)

train {
    data      = blobs.train(batch = 16, shuffle = true)
    loss      = mean(cross_entropy(net(data.x), data.y))
    optimizer = adam(lr = 0.05)
    steps     = 6
    evaluate on blobs.val {
        ce = cross_entropy(net(data.x), data.y)
        accuracy = mean(argmax(net(data.x), -1) == data.y)
        loss = mean(ce)
        total = sum(ce)
        correct = sum(argmax(net(data.x), -1) == data.y)
        worst = max(ce)
        best = min(ce)
        spread = mean(abs(mean(data.x, axis = 0) - max(data.x, axis = 0)))
    }
    evaluate on blobs.test {
        guess = onehot(argmax(net(data.x), -1), 3)
        truth = onehot(data.y, 3)
        iou = ratio_of_sums(sum(truth * guess, [0]), sum(maximum(truth, guess), [0]))
        hit_rate = ratio_of_sums(sum(truth * guess), sum(truth))
    }
}
"""
# 1234 examples: val 308 and test 309 are one batch of 256 and a last one of 52 or 53;
# the train split's 617 make a val split of one partial batch in the SMALL variant


def project(tmp_path, n: int = 1234, source: str = SOURCE):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = (rng.normal(size=(n, 4)) + 1.5 * y[:, None]).astype(np.float32)
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    (tmp_path / "m.gdl").write_text(source)
    model = graphdl.load(tmp_path / "m.gdl")
    plan = model.plan()
    return Trainer(plan, model.sources, model.resize_eval(plan))


def trained(trainer: Trainer) -> Trainer:
    """A few steps, so that batch norm's running statistics are not their start values."""
    key0 = jax.random.key(1)
    for step, (_, batch) in enumerate(trainer.batch_stream(0)):
        trainer.params, trainer.stats, trainer.opt_states, _ = trainer.iteration(
            trainer.params, trainer.stats, trainer.opt_states, batch,
            jax.random.fold_in(key0, step))
    return trainer


def count_eval_traces(monkeypatch) -> list[int]:
    """Each trace of an evaluation program runs run_ir in eval mode once: a Python side
    effect of tracing, so it counts traces, not calls of the compiled program."""
    traces: list[int] = []
    real = train_mod.run_ir

    def counting(ir, ctx, *args, **kwargs):
        if not ctx.train:
            traces.append(1)
        return real(ir, ctx, *args, **kwargs)
    monkeypatch.setattr(train_mod, "run_ir", counting)
    return traces


def unpadded(monkeypatch, trainer: Trainer) -> dict:
    """The metrics as before padding: the last batch through a program of its own size."""
    with monkeypatch.context() as m:
        m.setattr(train_mod, "masked_reductions", lambda *args: None)
        trainer._eval_masked.clear()
        trainer._eval_fns.clear()
        values = {ev.split: trainer.evaluate(ev) for ev in trainer.plan.evaluations}
    trainer._eval_masked.clear()
    trainer._eval_fns.clear()
    return values


@pytest.mark.parametrize("n", [1234, 150])  # a last batch of 52/53; a split of one partial batch
def test_padded_metrics_equal_the_unpadded_ones_with_one_trace(tmp_path, monkeypatch, n):
    trainer = trained(project(tmp_path, n))
    assert any(np.any(np.asarray(v) != 0) for k, v in trainer.stats.items() if "mean" in k)
    want = unpadded(monkeypatch, trainer)
    traces = count_eval_traces(monkeypatch)
    got = {ev.split: trainer.evaluate(ev) for ev in trainer.plan.evaluations}
    got_again = {ev.split: trainer.evaluate(ev) for ev in trainer.plan.evaluations}
    assert len(traces) == 2  # one program per evaluate block, the partial batch included
    assert got_again == got
    for ev in trainer.plan.evaluations:
        n_split = len(trainer.sources[ev.source].arrays(ev.split)["x"])
        assert n_split % ev.batch.batch != 0  # the case under test: a partial last batch
        assert trainer._eval_masked[id(ev)][1]  # and it was padded, not resized
    assert set(got) == {"val", "test"} and set(got["val"]) >= {"total", "worst", "spread"}
    for split, metrics in want.items():
        for name, value in metrics.items():
            np.testing.assert_allclose(got[split][name], value, rtol=2e-6, atol=1e-6,
                                       err_msg=f"{split}.{name}")


def test_a_stochastic_metric_draws_the_same_noise_for_the_real_rows(tmp_path, monkeypatch):
    source = SOURCE.replace("        worst = max(ce)\n",
                            "        z ~ normal(data.x, 1.0)\n        noisy = mean(z)\n"
                            "        spiky = max(z)\n")
    trainer = project(tmp_path, source=source)
    ev = trainer.plan.evaluations[0]
    want = unpadded(monkeypatch, trainer)["val"]
    got = trainer.evaluate(ev)
    assert trainer._eval_masked[id(ev)][1]
    for name in ("noisy", "spiky"):
        np.testing.assert_allclose(got[name], want[name], rtol=2e-6, atol=1e-6)


def test_the_unpadded_path_would_trace_twice(tmp_path, monkeypatch):
    """The counter can fail: without padding, the last batch is traced on its own."""
    trainer = project(tmp_path)
    monkeypatch.setattr(train_mod, "masked_reductions", lambda *args: None)
    traces = count_eval_traces(monkeypatch)
    trainer.evaluate(trainer.plan.evaluations[0])
    assert len(traces) == 2


@pytest.mark.parametrize("metric, why", [
    ("mean(logsumexp(cross_entropy(net(data.x), data.y)))", "logsumexp over the examples"),
    ("max(softmax(cross_entropy(net(data.x), data.y), 0))", "moves or mixes the examples"),
    ("mean(reshape(net(data.x), [-1]))", "moves or mixes the examples"),
])
def test_an_evaluation_that_mixes_the_examples_is_not_padded(tmp_path, monkeypatch, metric, why):
    source = SOURCE.replace("        worst = max(ce)\n", f"        odd = {metric}\n")
    trainer = project(tmp_path, source=source)
    ev = trainer.plan.evaluations[0]
    ir = run_passes(ev.ir)
    masked, reason = unpadded_because(ir, ev.batch.batch, list(ev.metrics.values()))
    assert masked is None and why in reason
    traces = count_eval_traces(monkeypatch)
    got = trainer.evaluate(ev)  # the last batch through its own program, as before
    assert len(traces) == 2 and np.isfinite(got["odd"])


def test_masked_reductions_skip_the_padding_rows():
    x = jnp.array([[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]])
    mask = jnp.array([1.0, 1.0, 0.0])
    np.testing.assert_allclose(masked_reduce("mean", mask, x), 2.5)
    np.testing.assert_allclose(masked_reduce("mean", mask, x, axis=0), [2.0, 3.0])
    np.testing.assert_allclose(masked_reduce("sum", mask, x, axis=[0], keepdims=True), [[4.0, 6.0]])
    np.testing.assert_allclose(masked_reduce("max", mask, x, axis=0), [3.0, 4.0])
    np.testing.assert_allclose(masked_reduce("min", mask, x), 1.0)
    flags = jnp.array([True, False, True])
    count = masked_reduce("sum", mask, flags)
    assert count.dtype == jnp.sum(flags).dtype and int(count) == 1  # a bool sum is a count
    rate = masked_reduce("mean", mask, jnp.array([1, 0, 1], jnp.int32))
    assert rate.dtype == jnp.float32 and float(rate) == 0.5
    assert masked_reduce("max", mask, jnp.array([1, 2, 9], jnp.int32)) == 2


def test_pad_batch_repeats_the_real_examples():
    batch = {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "y": np.array([7, 8, 9])}
    padded, mask = pad_batch(batch, 8)
    assert padded["y"].tolist() == [7, 8, 9, 7, 8, 9, 7, 8]
    assert mask.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    full, ones = pad_batch(batch, 3)
    assert full["x"] is batch["x"] and ones.tolist() == [1, 1, 1]


def test_every_shipped_style_metric_pads(tmp_path):
    """The metrics of SOURCE (means, sums, max/min, ratio_of_sums, a mean over axis 0)
    mask the reductions over the examples and nothing else."""
    trainer = project(tmp_path)
    val = trainer.plan.evaluations[0]
    ir = run_passes(val.ir)
    masked, why = unpadded_because(ir, val.batch.batch, list(val.metrics.values()))
    assert why == "" and masked
    ops = sorted(node(ir, i).op for i in masked)
    assert ops.count("max") == 2 and ops.count("min") == 1 and "sum" in ops and "mean" in ops
