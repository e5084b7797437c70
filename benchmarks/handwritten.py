"""The shipped models written by hand in plain JAX, as a user would, for benchmarks.

Each entry: the .gdl file (in models/, or a path from the repository root), and
`loss(params, stats, batch, key) -> (loss, new_stats)`. Parameter names are graphdl's, so
both sides start from identical values; the work per step is the same (dropout masks,
batch-norm running statistics). An entry with `params` lays graphdl's parameters out as
the hand-written model keeps them (the LSTM's four gates as one matrix).
benchmarks/torch_models.py has the same models in PyTorch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def dense(p, prefix, x):
    return x @ p[prefix + ".w"] + p[prefix + ".b"]


def xent(logits, y):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def dropout(key, x, rate):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def conv(p, prefix, x, dims):
    y = lax.conv_general_dilated(x, p[prefix + ".w"], (1,) * (x.ndim - 2), "SAME",
                                 dimension_numbers=dims)
    return y + p[prefix + ".b"]


def batch_norm(p, stats, new, prefix, x, momentum=0.9, eps=1e-5):
    axes = tuple(range(x.ndim - 1))
    m, v = jnp.mean(x, axes), jnp.var(x, axes)
    new[prefix + ".mean"] = momentum * stats[prefix + ".mean"] + (1 - momentum) * lax.stop_gradient(m)
    new[prefix + ".var"] = momentum * stats[prefix + ".var"] + (1 - momentum) * lax.stop_gradient(v)
    return (x - m) * lax.rsqrt(v + eps) * p[prefix + ".scale"] + p[prefix + ".bias"]


def max_pool(x, n):
    window = (1,) + (2,) * n + (1,)
    return lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")


def mlp_loss(p, stats, batch, key):
    x, y = batch["data.x"], batch["data.y"]
    k1, k2 = jax.random.split(key)
    h = dropout(k1, jax.nn.relu(dense(p, "mlp.out.dense", x)), 0.5)
    h = dropout(k2, jax.nn.relu(dense(p, "mlp.out.dense_1", h)), 0.5)
    return xent(dense(p, "mlp.out.dense_2", h), y), {}


def _blocks(p, stats, new, name, h, groups, dims):
    i = 0
    for n_blocks in groups:
        for _ in range(n_blocks):
            prefix = f"{name}.h.block" + (f"_{i}" if i else "") + ".out"
            h = jax.nn.relu(batch_norm(p, stats, new, prefix + ".batch_norm",
                                       conv(p, prefix + ".conv", h, dims)))
            i += 1
        h = max_pool(h, h.ndim - 2)
    return h


def cnn1d_loss(p, stats, batch, key):
    x, y = batch["data.x"], batch["data.y"]
    new = {}
    h = _blocks(p, stats, new, "cnn1d", x.reshape(x.shape[0], 40, 1), (2, 2, 1), ("NHC", "HIO", "NHC"))
    h = dropout(key, jax.nn.relu(dense(p, "cnn1d.out.dense", h.reshape(h.shape[0], -1))), 0.3)
    return xent(dense(p, "cnn1d.out.dense_1", h), y), new


def cnn2d_loss(p, stats, batch, key):
    x, y = batch["data.image"], batch["data.y"]
    new = {}
    k1, k2 = jax.random.split(key)
    h = _blocks(p, stats, new, "cnn2d", x, (2, 2), ("NHWC", "HWIO", "NHWC"))
    h = dropout(k1, h.reshape(h.shape[0], -1), 0.25)
    h = dropout(k2, jax.nn.relu(dense(p, "cnn2d.out.dense", h)), 0.5)
    return xent(dense(p, "cnn2d.out.dense_1", h), y), new


# -- the adding-problem LSTM: one [D + H, 4H] matmul per step, split into the gates --------
LSTM = "adder.run.lstm."
GATES = ("f", "w", "r", "new")  # forget, write, read, candidate: std.nn's order


def lstm_params(p):
    """graphdl's four gate denses as one matrix and one bias, the way a JAX user keeps them."""
    out = {k: v for k, v in p.items() if not k.startswith(LSTM)}
    out["lstm.w"] = jnp.concatenate([p[f"{LSTM}{g}.dense.w"] for g in GATES], axis=1)
    # std.nn's forget gate adds 1 to its pre-activation: folded into the bias, the same values
    out["lstm.b"] = jnp.concatenate([p[f"{LSTM}{g}.dense.b"] + (1.0 if g == "f" else 0.0)
                                     for g in GATES])
    return out


def lstm_loss(p, stats, batch, key):
    x, y = batch["data.x"], batch["data.y"]
    hidden = p["lstm.b"].shape[0] // 4

    def step(carry, x_t):
        h, c = carry
        gates = jnp.concatenate([x_t, h], -1) @ p["lstm.w"] + p["lstm.b"]
        f, w, r, new = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(w) * jnp.tanh(new)
        h = jax.nn.sigmoid(r) * jnp.tanh(c)
        return (h, c), None

    zeros = jnp.zeros((x.shape[0], hidden), x.dtype)
    (h, _), _ = lax.scan(step, (zeros, zeros), jnp.moveaxis(x, 1, 0))
    pred = dense(p, "adder.out.dense", h)
    return jnp.mean(jnp.square(pred - y)), {}


# -- the adding-problem RNN (std.nn's rnn: h = tanh([x_t, h] @ W + b)) ----------------------
def rnn_loss(p, stats, batch, key):
    x, y = batch["data.x"], batch["data.y"]
    w, b = p["adder.run.rnn.h.dense.w"], p["adder.run.rnn.h.dense.b"]

    def step(h, x_t):
        return jnp.tanh(jnp.concatenate([x_t, h], -1) @ w + b), None

    h, _ = lax.scan(step, jnp.zeros((x.shape[0], b.shape[0]), x.dtype), jnp.moveaxis(x, 1, 0))
    return jnp.mean(jnp.square(dense(p, "adder.out.dense", h) - y)), {}


# -- the deck's CNN on 28x28x1 images (benchmarks/cnn_mnist.gdl) ------------------------------
def cnn_mnist_loss(p, stats, batch, key):
    x, y = batch["data.image"], batch["data.mask"][:, 14, 14]  # the class under the centre
    dims = ("NHWC", "HWIO", "NHWC")
    h = max_pool(jax.nn.relu(conv(p, "cnn.h.conv", x, dims)), 2)
    h = max_pool(jax.nn.relu(conv(p, "cnn.h.conv_1", h, dims)), 2)
    return xent(dense(p, "cnn.out.dense", h.reshape(h.shape[0], -1)), y), {}


# -- the VAE of models/vae.gdl: one reparameterised sample of z, Bernoulli decoder ----------
def vae_loss(p, stats, batch, key):
    x = (batch["data.x"] > 0.5).astype(jnp.float32)  # binarize, as the train block does
    h = jax.nn.relu(dense(p, "vae.enc.h.dense", x))
    mu, logvar = dense(p, "vae.enc.out.dense", h), dense(p, "vae.enc.out.dense_1", h)
    std = jnp.exp(0.5 * logvar)
    z = mu + std * jax.random.normal(key, mu.shape)
    logits = dense(p, "vae.dec.out.dense_1", jax.nn.relu(dense(p, "vae.dec.out.dense", z)))
    reconstruction = jnp.sum(x * logits - jax.nn.softplus(logits), -1)
    rate = jnp.sum(-jnp.log(std) + 0.5 * (jnp.square(std) + jnp.square(mu)) - 0.5, -1)
    return jnp.mean(rate - reconstruction), {}


HANDWRITTEN = {
    "mlp": {"file": "mlp.gdl", "loss": mlp_loss},
    "cnn1d": {"file": "cnn1d.gdl", "loss": cnn1d_loss},
    "cnn2d": {"file": "cnn2d.gdl", "loss": cnn2d_loss},
    "lstm": {"file": "benchmarks/lstm_adding.gdl", "loss": lstm_loss, "params": lstm_params},
    "cnn_mnist": {"file": "benchmarks/cnn_mnist.gdl", "loss": cnn_mnist_loss},
    "rnn": {"file": "benchmarks/rnn_adding.gdl", "loss": rnn_loss},
    "vae": {"file": "vae.gdl", "loss": vae_loss},
}
