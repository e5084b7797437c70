"""models/gan.gdl: each `step` block updates only its own parameters, with its own
optimizer state; and (slow) the ring GAN covers the 8 modes (docs/ring_coverage.py).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import graphdl
from graphdl.lower.compile import compile_fn
from graphdl.runtime.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
GAN = ROOT / "models" / "gan.gdl"


def _ring_coverage():
    spec = importlib.util.spec_from_file_location("ring_coverage", ROOT / "docs" / "ring_coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ring_coverage


def _snapshot(params: dict) -> dict:
    """Host copies: the trainer donates its buffers to the jitted iteration."""
    return {k: np.array(v) for k, v in params.items()}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not np.array_equal(before[k], np.asarray(after[k]))}


def _optimizer_names(opt_state) -> set[str]:
    """The parameter names an optimizer state holds moments for."""
    names = set()
    for path, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        names |= {k.key for k in path if isinstance(k, jax.tree_util.DictKey)}
    return names


@pytest.fixture(scope="module", params=["ring", "digits"])
def trainer(request):
    model = graphdl.load(GAN)
    return Trainer(model.plan(request.param), model.sources)


def test_each_step_trains_its_own_graph(trainer):
    disc, gen = trainer.subsets
    prefix = {"ring": "", "digits": "digit_"}[trainer.plan.name]
    assert disc and all(n.startswith(f"{prefix}discriminator.") for n in disc)
    assert gen and all(n.startswith(f"{prefix}generator.") for n in gen)
    # each optimizer state holds moments for its own step's parameters alone
    assert _optimizer_names(trainer.opt_states[0]) == set(disc)
    assert _optimizer_names(trainer.opt_states[1]) == set(gen)


def test_each_step_updates_only_its_own_parameters(trainer):
    _, batch = next(trainer.batch_stream(0))
    key = jax.random.key(1)
    disc, gen = (set(s) for s in trainer.subsets)
    apply_step = compile_fn(trainer._apply_step, static_argnames=("i",))  # one step alone
    before = _snapshot(trainer.params)
    params, stats, _, loss = apply_step(0, trainer.params, trainer.stats,
                                        trainer.opt_states[0], batch, key)
    assert np.isfinite(loss)
    assert _changed(before, params) == disc  # the generator bitwise as it was
    after_disc = _snapshot(params)
    params, _, _, loss = apply_step(1, params, stats, trainer.opt_states[1], batch, key)
    assert np.isfinite(loss)
    assert _changed(after_disc, params) == gen  # the discriminator bitwise as it was


def test_one_iteration_runs_both_steps(trainer):
    _, batch = next(trainer.batch_stream(0))
    before = _snapshot(trainer.params)
    disc, gen = (set(s) for s in trainer.subsets)
    copy = functools.partial(jax.tree.map, jnp.copy)  # the iteration donates its inputs
    params, _, opt_states, losses = trainer.iteration(
        copy(trainer.params), copy(trainer.stats), copy(trainer.opt_states), batch,
        jax.random.key(2))
    assert losses.shape == (2,)
    assert _changed(before, params) == disc | gen
    assert [_optimizer_names(s) for s in opt_states] == [disc, gen]


def test_the_coverage_criterion():
    ring_coverage = _ring_coverage()
    angle = 2 * np.pi * np.arange(8) / 8
    centers = 2 * np.stack([np.cos(angle), np.sin(angle)], -1)
    rng = np.random.default_rng(0)
    points = centers[rng.integers(0, 8, 1000)] + 0.02 * rng.standard_normal((1000, 2))
    good = ring_coverage(points)
    assert good["passes"] and good["covered"] == 8 and good["near"] > 0.97
    collapsed = ring_coverage(centers[np.arange(1000) % 7])  # one mode never drawn
    assert collapsed["covered"] == 7 and not collapsed["passes"]
    between = ring_coverage(np.concatenate([points, 0.5 * points[:200]]))  # 1/6 inside
    assert between["covered"] == 8 and between["near"] < 0.9 and not between["passes"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_ring_gan_covers_every_mode(seed, tmp_path):
    """The issue's criterion: of 2,500 samples, every mode holds >= 1% and >= 90% lie
    within 3 std of a mode (about 3 minutes a seed on 2 CPU cores)."""
    model = graphdl.load(GAN)
    model.train("ring", out=str(tmp_path), seed=seed)
    samples = model.sample("generator", 2500, seed=0, out=tmp_path).output
    result = _ring_coverage()(samples)
    assert result["passes"], f"seed {seed}: {result}"
