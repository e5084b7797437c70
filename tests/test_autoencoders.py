"""models/autoencoder.gdl and models/conv_autoencoder.gdl: they check, a few steps lower
their loss, the samplers run from the checkpoint, `graphdl sample --color` colours a 2-D
code by class, and (slow) each autoencoder rebuilds the test digits better than PCA with
the same code size (docs/pca_baseline.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import graphdl
from graphdl.api import train_model
from graphdl.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def _pca_baseline():
    spec = importlib.util.spec_from_file_location("pca_baseline", ROOT / "docs" / "pca_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_files_check(capsys):
    assert main(["check", str(MODELS / "autoencoder.gdl"),
                 str(MODELS / "conv_autoencoder.gdl")]) == 0
    out = capsys.readouterr().out
    assert "autoencoder.gdl: ok (5 graphs, 1 train block)" in out
    assert "conv_autoencoder.gdl: ok (8 graphs, 2 train blocks)" in out


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """models/autoencoder.gdl trained 40 steps into a tmp folder: (the result, the folder)."""
    out = tmp_path_factory.mktemp("ae") / "run"
    result = train_model(graphdl.load(MODELS / "autoencoder.gdl"), out_dir=out,
                         overrides={"steps": 40}, progress=False, quiet=True)
    return result, out


def _lowered(result) -> None:
    losses = [r["loss"] for r in result.history if r["split"] == "train"]
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:5])
    mse = result.metrics["test"]["mse"]
    assert 0 < mse < 0.1


def test_a_few_steps_lower_the_dense_loss_and_the_samplers_run(dense_run, capsys):
    result, out = dense_run
    _lowered(result)
    model = graphdl.load(MODELS / "autoencoder.gdl")
    codes = model.sample("encode", 7, data="digits.test", out=out).output
    assert codes.shape == (7, 2) and np.all(np.isfinite(codes))
    rebuilt = model.sample("reconstruct", 7, data="digits.test", out=out)
    assert rebuilt.output.shape == (7, 64)
    # the trained encoder and decoder: their MSE is the evaluation's on those digits
    x = rebuilt.inputs["x"]
    assert np.all((rebuilt.output > 0) & (rebuilt.output < 1))
    assert np.mean((rebuilt.output - x) ** 2) < 0.1


# the plain conv block compiles like segnet's, and tests/test_models.py steps every block:
# one conv block here keeps the file fast
@pytest.mark.parametrize("train", [pytest.param(None, marks=pytest.mark.slow), "segnet"])
def test_a_few_steps_lower_the_conv_losses_and_the_samplers_run(tmp_path, train):
    model = graphdl.load(MODELS / "conv_autoencoder.gdl")
    result = train_model(model, train_name=train, out_dir=tmp_path, overrides={"steps": 30},
                         progress=False, quiet=True)
    _lowered(result)
    sampler = "reconstruct" if train is None else "reconstruct_segnet"
    drawn = model.sample(sampler, 5, data="digits.test", out=tmp_path)
    assert drawn.output.shape == (5, 8, 8, 1)
    assert drawn.given == {"image": "--data digits.test"}


def test_color_draws_the_codes_coloured_by_class(dense_run, capsys):
    _, out = dense_run
    png = out / "latent.png"
    capsys.readouterr()
    status = main(["sample", str(MODELS / "autoencoder.gdl"), "--graph", "encode",
                   "--out", str(out), "--data", "digits.test", "--n", "100",
                   "--color", "y", "--png", str(png)])
    text, err = capsys.readouterr()
    assert status == 0, err
    assert f"wrote {png} (a scatter of 100 samples, coloured by y)" in text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1.2 * height  # the legend of the classes beside the square scatter


@pytest.mark.parametrize("args, message", [
    (["--graph", "encode", "--color", "y"],
     "--color y: needs --data SRC.SPLIT"),
    (["--graph", "encode", "--data", "digits.test", "--color", "label"],
     "--color label: the split digits.test has no field `label`; its fields are x, image, y"),
    (["--graph", "encode", "--data", "digits.test", "--color", "x"],
     "--color x: the field digits.test.x is float32[64] per example; --color takes an "
     "integer field"),
    (["--graph", "reconstruct", "--data", "digits.test", "--color", "y"],
     "--color y: `reconstruct` returns [64, 64], not 2-D points [N, 2]"),
])
def test_color_misuse_exits_2(dense_run, capsys, args, message):
    _, out = dense_run
    capsys.readouterr()
    status = main(["sample", str(MODELS / "autoencoder.gdl"), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert status == 2, err
    assert message in err and "Traceback" not in err


def test_pca_baseline_is_the_best_linear_code():
    """On random data PCA's error falls with Z, is 0 at full rank, and at Z = 0 is the
    variance around the train mean."""
    pca_mse = _pca_baseline().pca_mse
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    test = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    errors = [pca_mse(train, test, z) for z in range(7)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-20
    np.testing.assert_allclose(errors[0], np.mean((test - train.mean(0)) ** 2))


def _full_mse(name: str, train: str | None = None) -> float:
    result = train_model(graphdl.load(MODELS / name), train_name=train, progress=False,
                         quiet=True)
    return result.metrics["test"]["mse"]


@pytest.mark.slow
def test_the_dense_autoencoder_beats_pca_with_a_2d_code():
    pca = _pca_baseline()
    bar = pca.pca_mse(*pca.digits_splits(), 2)
    mse = _full_mse("autoencoder.gdl")
    assert mse < bar, f"autoencoder.gdl: test mse {mse:.5f}, PCA at Z = 2 {bar:.5f}"


@pytest.mark.slow
def test_the_conv_autoencoder_beats_pca_and_segnet_indices_help():
    """At Z = 8 the conv autoencoder beats PCA with 8 components; SegNet's decoder, given
    the encoder's pooling indices beside the same 8 numbers, beats the conv decoder."""
    pca = _pca_baseline()
    bar = pca.pca_mse(*pca.digits_splits(), 8)
    conv = _full_mse("conv_autoencoder.gdl")
    segnet = _full_mse("conv_autoencoder.gdl", "segnet")
    assert conv < bar, f"conv_autoencoder.gdl: test mse {conv:.5f}, PCA at Z = 8 {bar:.5f}"
    assert segnet < conv, f"segnet: test mse {segnet:.5f}, the conv decoder's {conv:.5f}"
