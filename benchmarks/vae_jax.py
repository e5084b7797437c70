"""The VAE of models/vae.gdl and models/vae_mnist1d.gdl written by hand in JAX and optax.

The twin of the .gdl models, for checking graphdl's numbers: the same architecture
(encoder x -> dense(H) -> relu -> (dense(Z), dense(Z)) for the mean and log-variance,
decoder z -> dense(H) -> relu -> dense(D) for Bernoulli logits), the same initialisation
scheme as graphdl's `dense` (Glorot-uniform weights, zero biases), the same data and split
(read through graphdl's own data sources), the same preprocessing (digits binarised at
1/2, MNIST-1D at 0; `--minmax` scales MNIST-1D to [0, 1] by the training split's range),
the same optimizer (optax adam), batch size, shuffling (graphdl's permutation of
(seed, epoch), last partial batch dropped) and epochs. The random draws (initial weights,
the sample of z) differ: agreement is expected within seed noise, not to the digit.

    python benchmarks/vae_jax.py --data digits --seed 0
    python benchmarks/vae_jax.py --data mnist1d --seed 0 --iw 100

Prints the test -ELBO in nats per example: one sample of z per example, averaged over
the test split (what the .gdl files' `nelbo` metric computes), and its KL term (`rate`);
with `--iw K`, also the
K-sample importance-weighted bound (Burda et al. 2016), which is tighter.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from graphdl.runtime.data import batches, open_source

# The settings of the two .gdl files: (source arguments, batch, epochs, lr, Z, H).
SETTINGS = {
    "digits": ({"name": "digits", "split": [0.8, 0.2], "seed": 0}, 64, 200, 1e-3, 8, 256),
    "mnist1d": ({"name": "mnist1d"}, 100, 50, 1e-3, 16, 256),
}


def load(data: str, minmax: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The train and test inputs in [0, 1], prepared as the .gdl file prepares them:
    binarised (digits at 1/2, MNIST-1D at 0). With `minmax`, MNIST-1D is scaled by the
    training split's range instead (the alternative the .gdl file explains it dropped)."""
    kwargs = dict(SETTINGS[data][0])
    source = open_source("dataset", [kwargs.pop("name")], kwargs, Path("."))
    train, test = source.arrays("train")["x"], source.arrays("test")["x"]
    if data == "mnist1d" and minmax:
        low, high = float(train.min()), float(train.max())
        return tuple(np.clip((a - low) / (high - low), 0.0, 1.0).astype(np.float32)
                     for a in (train, test))
    at = 0.5 if data == "digits" else 0.0
    return (train > at).astype(np.float32), (test > at).astype(np.float32)


def init(key, d: int, z: int, h: int) -> dict:
    glorot = jax.nn.initializers.glorot_uniform()
    shapes = {"enc.h": (d, h), "enc.mu": (h, z), "enc.logvar": (h, z),
              "dec.h": (z, h), "dec.out": (h, d)}
    keys = jax.random.split(key, len(shapes))
    return {name: {"w": glorot(k, shape), "b": jnp.zeros(shape[1])}
            for k, (name, shape) in zip(keys, shapes.items())}


def dense(p, x):
    return x @ p["w"] + p["b"]


def encode(p, x):
    h = jax.nn.relu(dense(p["enc.h"], x))
    return dense(p["enc.mu"], h), dense(p["enc.logvar"], h)


def decode(p, z):
    return dense(p["dec.out"], jax.nn.relu(dense(p["dec.h"], z)))


def bernoulli_log_prob(logits, x):
    return -(jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def rate(p, x):
    """KL(q(z|x) || N(0, I)) per example, in closed form."""
    mu, logvar = encode(p, x)
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar, axis=-1)


def nelbo(p, x, key):
    """-ELBO per example from one sample of z: KL(q || N(0, I)) - log p(x | z)."""
    mu, logvar = encode(p, x)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    rec = jnp.sum(bernoulli_log_prob(decode(p, z), x), axis=-1)
    return rate(p, x) - rec


def iw_bound(p, x, key, k: int):
    """-log of the K-sample importance-weighted estimate of p(x), per example."""
    mu, logvar = encode(p, x)
    std = jnp.exp(0.5 * logvar)
    eps = jax.random.normal(key, (k,) + mu.shape)
    z = mu + std * eps
    log_q = jnp.sum(-0.5 * jnp.square(eps) - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi), -1)
    log_prior = jnp.sum(-0.5 * jnp.square(z) - 0.5 * jnp.log(2 * jnp.pi), -1)
    log_lik = jnp.sum(bernoulli_log_prob(decode(p, z), x), -1)
    return -(jax.nn.logsumexp(log_lik + log_prior - log_q, axis=0) - jnp.log(k))


def run(data: str, seed: int, epochs: int | None = None, iw: int = 0,
        minmax: bool = False) -> dict:
    """Train with the file's settings; the test -ELBO (and the IW bound) in nats."""
    _, batch, file_epochs, lr, z, h = SETTINGS[data]
    epochs = file_epochs if epochs is None else epochs
    train, test = load(data, minmax)
    params = init(jax.random.key(seed), train.shape[1], z, h)
    optimizer = optax.adam(lr)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, key):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(nelbo(p, x, key)))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key0 = jax.random.key(seed + 1)
    start, i = time.perf_counter(), 0
    for epoch in range(epochs):
        for b in batches({"x": train}, batch, shuffle=True, seed=seed, epoch=epoch,
                         drop_last=True):
            params, opt_state, _ = step(params, opt_state, b["x"], jax.random.fold_in(key0, i))
            i += 1
    seconds = time.perf_counter() - start
    eval_key = jax.random.key(10_000 + seed)
    out = {"nelbo": float(jnp.mean(jax.jit(nelbo)(params, test, eval_key))),
           "rate": float(jnp.mean(jax.jit(rate)(params, test))),
           "steps": i, "seconds": seconds}
    if iw:
        bound = jax.jit(iw_bound, static_argnums=3)
        out["iw"] = float(np.mean(np.concatenate(
            [bound(params, test[j:j + 256], jax.random.fold_in(eval_key, j), iw)
             for j in range(0, len(test), 256)])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=sorted(SETTINGS), default="digits")
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--iw", type=int, default=0, help="also the K-sample IW bound")
    parser.add_argument("--minmax", action="store_true",
                        help="MNIST-1D min-max scaled to [0, 1], not binarised")
    args = parser.parse_args()
    for seed in args.seed:
        r = run(args.data, seed, args.epochs, args.iw, args.minmax)
        iw = f"  iw{args.iw} {r['iw']:.3f}" if args.iw else ""
        print(f"{args.data} seed {seed}: test -ELBO {r['nelbo']:.3f} nats (KL {r['rate']:.3f}){iw}  "
              f"({r['steps']} steps, {r['seconds']:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
