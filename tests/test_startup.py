"""A run's start compiles few programs: the same values as op-by-op code, fewer programs
to trace (the persistent cache skips XLA's compile, not JAX's tracing and lowering)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from graphdl.lower import init_params
from graphdl.runtime.train import _init_opt_states, step_key

REPO = Path(__file__).resolve().parents[1]


MODEL = """\
graph net(x: f32[B, 4]) -> f32[B, 3] {
    return x |> dense(8) |> relu |> dense(3)
}

data blobs = npz("blobs.npz", split = [0.8, 0.2], seed = 0)

train {
    data      = blobs.train(batch = 16, shuffle = true)
    loss      = mean(cross_entropy(net(data.x), data.y))
    optimizer = adam()
    evaluate on blobs.test {
        accuracy = mean(argmax(net(data.x), -1) == data.y)
    }
}
"""  # 300 examples: a test split of 60, one partial batch


@pytest.mark.parametrize("seed", [0, 7, -1, 2**31 - 1, 2**31, 2**40])
@pytest.mark.parametrize("index", [0, 5, 2**31 - 1])
def test_step_key_is_fold_in_of_the_seeds_key(seed, index):
    want = jax.random.fold_in(jax.random.key(seed), index)
    np.testing.assert_array_equal(jax.random.key_data(step_key(seed, index)),
                                  jax.random.key_data(want))


def test_init_params_from_a_seed_equals_from_its_key(tmp_path):
    import graphdl
    write_project(tmp_path, MODEL.replace("relu", "batch_norm |> relu"))
    ir = graphdl.load(tmp_path / "m.gdl").plan().ir
    from_seed = init_params([ir], 3)
    from_key = init_params([ir], jax.random.key(3))
    for got, want in zip(from_seed, from_key):
        assert got.keys() == want.keys() and got
        for name in got:
            np.testing.assert_array_equal(got[name], want[name])


def test_optimizer_states_from_one_program_equal_the_eager_ones():
    params = {"w": np.ones((3, 4), np.float32), "b": np.arange(4, dtype=np.float32)}
    optimizers = [optax.adam(1e-3), optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, 0.9))]
    subsets = [["w", "b"], ["b"]]
    got = _init_opt_states(optimizers, subsets, params)
    want = [tx.init({k: params[k] for k in sub}) for tx, sub in zip(optimizers, subsets)]
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)



def write_project(folder: Path, source: str) -> None:
    rng = np.random.default_rng(0)
    np.savez(folder / "blobs.npz", x=rng.normal(size=(300, 4)).astype(np.float32),
             y=rng.integers(0, 3, 300).astype(np.int32))
    (folder / "m.gdl").write_text(source)


def test_a_run_compiles_one_program_per_job(tmp_path):
    """`graphdl run --steps 1` compiles the parameter init, the optimizer init, the step
    key, the iteration and the evaluation once each (the evaluation's partial batch is
    padded, not compiled again), and no small programs op by op."""
    write_project(tmp_path, MODEL)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_LOG_COMPILES": "1",
           "GRAPHDL_COMPILE_CACHE": "off"}
    proc = subprocess.run([sys.executable, "-m", "graphdl", "run", "m.gdl", "--steps", "1",
                           "--out", "out", "--quiet"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    compiled = re.findall(r"Compiling jit\(([^)]*)\)", proc.stderr)
    assert sorted(compiled) == ["_fold_in_seed", "_iteration", "fn", "init", "make"], compiled
