"""models/regression.gdl: a network whose outputs are a Gaussian's parameters, on
`dataset("diabetes")`, whose targets are standardized on the train split."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import graphdl
from graphdl.api import train_model
from graphdl.elaborate.check import check_program
from graphdl.runtime.data import SOURCES

MODEL = Path(__file__).resolve().parents[1] / "models" / "regression.gdl"
BLOCKS = ["heteroscedastic", "constant_variance"]


def test_the_file_checks_with_both_blocks():
    checked = check_program(str(MODEL), MODEL.read_text(encoding="utf-8"), sources=SOURCES)
    assert checked.diagnostics == []
    assert [p.name for p in checked.trains] == BLOCKS


def test_diabetes_targets_are_standardized_on_the_train_split():
    source = graphdl.load(MODEL).sources["diabetes"]
    train, val, test = (source.arrays(s)["y"] for s in ("train", "val", "test"))
    assert train.shape == (265, 1) and train.dtype == np.float32
    np.testing.assert_allclose(train.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(), 1.0, atol=1e-5)
    # the same affine map on every split (the train split's statistics): the held-out
    # targets are near 0 and 1 but not exactly, and the raw scores come back from them
    assert 0 < abs(float(test.mean())) < 0.5 and 0.5 < float(test.std()) < 1.5
    from sklearn.datasets import load_diabetes
    raw = np.sort(load_diabetes().target)
    joined = np.sort(np.concatenate([train, val, test])[:, 0])
    slope, intercept = np.polyfit(joined, raw, 1)
    np.testing.assert_allclose(slope * joined + intercept, raw, atol=1e-3)
    assert slope > 10  # one train std of the scores, which run from 25 to 346


def test_the_constant_variance_block_learns_one_log_variance():
    variables = graphdl.load(MODEL).compile("noise").init(jax.random.key(0))
    assert {k: np.shape(v) for k, v in variables["params"].items()} == {"noise.log_var": (1,)}


@pytest.mark.parametrize("block", BLOCKS)
def test_a_short_run_lowers_the_nll_and_stays_finite(block):
    steps = 40
    result = train_model(graphdl.load(MODEL), train_name=block, overrides={"steps": steps},
                         max_steps=steps, progress=False, quiet=True)
    losses = [r["loss"] for r in result.history if r["split"] == "train"]
    assert len(losses) == steps and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    test = result.metrics["test"]
    assert np.isfinite(test["nll"]) and np.isfinite(test["mse"])
    assert test["mse"] < 1.0  # better than the train mean (0) on standardized targets
    log_var = result.variables["params"].get("noise.log_var")
    if block == "constant_variance":  # the one variance is trained (from log 1 = 0)
        assert log_var is not None and float(log_var[0]) != 0.0
    else:
        assert log_var is None
