"""The shipped models written by hand in plain JAX, as a user would, for benchmarks.

Each entry: the .gdl file, and a loss function (params by graphdl's names, batch, key).
The parameter names are graphdl's so both sides start from identical values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _dense(p, prefix, x):
    return x @ p[prefix + ".w"] + p[prefix + ".b"]


def _xent(logits, y):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def mlp_loss(p, batch, key):
    x, y = batch["data.x"], batch["data.y"]
    h = jax.nn.relu(_dense(p, "mlp.out.dense", x))
    h = jax.nn.relu(_dense(p, "mlp.out.dense_1", h))
    return _xent(_dense(p, "mlp.out.dense_2", h), y)


HANDWRITTEN = {
    "mlp": {"file": "mlp.gdl", "loss": mlp_loss},
}
