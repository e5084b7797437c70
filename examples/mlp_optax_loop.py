"""A compiled graphdl graph inside your own JAX training loop.

`models/mlp.gdl` defines the network; everything else here is plain JAX and optax,
written the way you would write it for a Flax or hand-written model: the compiled
graph is a pure function `(variables, x, key=..., train=...)` that composes with
`jax.jit`, `jax.grad` and `optax`.

    python examples/mlp_optax_loop.py            # 1500 steps on MNIST-1D (~67% test accuracy)
    python examples/mlp_optax_loop.py --quick    # 500 steps (~55%), or GRAPHDL_QUICK=1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from mnist1d.data import get_dataset_args, make_dataset

import graphdl

QUICK = "--quick" in sys.argv or os.environ.get("GRAPHDL_QUICK") == "1"
STEPS = 500 if QUICK else 1500
BATCH = 100


def main() -> None:
    # MNIST-1D, generated locally: 4000 training and 1000 test signals of length 40
    data = make_dataset(get_dataset_args())
    x_train, y_train = data["x"].astype(np.float32), data["y"].astype(np.int32)
    x_test, y_test = data["x_test"].astype(np.float32), data["y_test"].astype(np.int32)

    # the network comes from the .gdl file (its constants can be overridden: H=256)
    model = graphdl.load(Path(__file__).resolve().parents[1] / "models" / "mlp.gdl")
    mlp = model.compile("mlp")
    variables = mlp.init(jax.random.key(0), x_train[:BATCH])
    print("parameters:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in variables["params"].items()))

    optimizer = optax.adam(optax.cosine_decay_schedule(2e-3, STEPS))
    opt_state = optimizer.init(variables["params"])

    def loss_fn(params, x, y, key):
        logits, _ = mlp({"params": params}, x, key=key, train=True)  # dropout on
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def train_step(params, opt_state, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def accuracy(params, x, y):
        return jnp.mean(jnp.argmax(mlp({"params": params}, x), -1) == y)  # eval mode

    params = variables["params"]
    rng = np.random.default_rng(0)
    key = jax.random.key(1)
    for step in range(1, STEPS + 1):
        idx = rng.choice(len(x_train), BATCH, replace=False)
        key, sub = jax.random.split(key)
        params, opt_state, loss = train_step(params, opt_state, x_train[idx], y_train[idx], sub)
        if step % (STEPS // 5) == 0:
            print(f"step {step:5d}  loss {float(loss):.4f}")
    print(f"train accuracy: {float(accuracy(params, x_train, y_train)):.4f}")
    print(f"test accuracy: {float(accuracy(params, x_test, y_test)):.4f}")


if __name__ == "__main__":
    main()
