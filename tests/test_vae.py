"""models/vae.gdl and models/vae_mnist1d.gdl: the ELBO graph computes what it says, a few
steps lower it, and the sampler graphs run from the training checkpoint.

(The full trainings and their test -ELBO bars are in tests/test_models.py, with the other
shipped models'.)
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import graphdl
from graphdl.api import train_model
from graphdl.cli.main import main
from graphdl.runtime.checkpoint import load_checkpoint

MODELS = Path(__file__).resolve().parents[1] / "models"


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _dense(p, prefix, x):
    return x @ np.asarray(p[prefix + ".w"]) + np.asarray(p[prefix + ".b"])


def _mlp(p, prefix, x):
    h = np.maximum(_dense(p, f"{prefix}.out.dense", x), 0)
    return _dense(p, f"{prefix}.out.dense_1", h)


def test_the_vae_graph_is_the_kl_minus_the_reconstruction():
    """With z at its mean (stochastic="mean"), vae(x) is KL(q || N(0, I)) - log p(x | mu),
    computed here in numpy from the same parameters."""
    vae = graphdl.load(MODELS / "vae.gdl").compile("vae")
    x = (np.random.default_rng(0).random((5, 64)) > 0.5).astype(np.float32)
    variables = vae.init(jax.random.key(0), x)
    got, rate = (np.asarray(v) for v in vae(variables, x, stochastic="mean"))
    p = variables["params"]
    h = np.maximum(_dense(p, "vae.enc.h.dense", x), 0)
    mu, logvar = _dense(p, "vae.enc.out.dense", h), _dense(p, "vae.enc.out.dense_1", h)
    logits = _mlp(p, "vae.dec", mu)
    rec = np.sum(x * np.log(_sigmoid(logits)) + (1 - x) * np.log(1 - _sigmoid(logits)), -1)
    kl = 0.5 * np.sum(np.exp(logvar) + mu ** 2 - 1 - logvar, -1)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, kl - rec, rtol=1e-4)
    np.testing.assert_allclose(rate, kl, rtol=1e-4)
    # a sampled z gives another value (the sample is drawn, not the mean)
    sampled = np.asarray(vae(variables, x, key=jax.random.key(1))[0])
    assert not np.allclose(sampled, got)


@pytest.mark.parametrize("name,sampler,latent,width", [
    ("vae.gdl", "decode", 8, 64), ("vae_mnist1d.gdl", "decode_signal", 16, 40)])
def test_training_lowers_the_nelbo_and_the_sampler_runs_from_the_checkpoint(
        tmp_path, capsys, name, sampler, latent, width):
    model = graphdl.load(MODELS / name)
    out = tmp_path / "run"
    result = train_model(model, out_dir=out, overrides={"steps": 30}, progress=False,
                         quiet=True)
    losses = [r["loss"] for r in result.history if r["split"] == "train"]
    assert np.mean(losses[-10:]) < np.mean(losses[:5])
    nelbo = result.metrics["test"]["nelbo"]
    assert np.isfinite(nelbo) and nelbo > 0

    z = np.random.default_rng(0).normal(size=(6, latent)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    code = main(["run", str(MODELS / name), "--out", str(out), "--graph", sampler,
                 "--input", f"z={tmp_path / 'z.npy'}"])
    assert code == 0, capsys.readouterr().err
    images = np.load(out / "output.npy")
    assert images.shape == (6, width)
    # the checkpoint's decoder, not fresh parameters
    params = load_checkpoint(out / "checkpoint").params
    prefix = "vae.dec" if name == "vae.gdl" else "signal_vae.m.dec"
    np.testing.assert_allclose(images, _sigmoid(_mlp(params, prefix, z)), rtol=1e-4,
                               atol=1e-6)
