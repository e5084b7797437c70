"""A compiled graphdl graph as a feature extractor inside hand-written jax.jit + jax.vmap code.

The convolutional trunk is written in GDL; the per-example embedding function, the
classifier head, the loss, the update rule and a nearest-centroid classifier are plain
JAX. The compiled graph is just another pure function: `jax.vmap` maps it over
examples, `jax.grad` differentiates through it into its parameters.

    python examples/feature_extractor.py            # 1000 steps on sklearn's digits
    python examples/feature_extractor.py --quick    # 150 steps (or GRAPHDL_QUICK=1)
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import graphdl

QUICK = "--quick" in sys.argv or os.environ.get("GRAPHDL_QUICK") == "1"
STEPS = 150 if QUICK else 1000

TRUNK = """
graph trunk[F = 32](x: f32[B, 8, 8, 1]) -> f32[B, F] {
    h = x |> conv(16, 3) |> relu |> max_pool(2)       # [B, 4, 4, 16]
    return h |> conv(F, 3) |> relu |> global_avg_pool
}
"""


def main() -> None:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # NHWC in [0, 1]
    y = digits.target.astype(np.int32)
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    trunk = graphdl.loads(TRUNK).compile("trunk")
    trunk_vars = trunk.init(jax.random.key(0), x_train[:1])

    # one example in, one feature vector out; vmap makes it a batch function again
    def embed_one(tv, image):                      # image: [8, 8, 1]
        return trunk(tv, image[None])[0]           # -> [F]

    embed = jax.vmap(embed_one, in_axes=(None, 0))

    def logits_fn(params, images):
        feats = embed(params["trunk"], images)
        return feats @ params["head"]["w"] + params["head"]["b"]

    def loss_fn(params, images, labels):
        logp = jax.nn.log_softmax(logits_fn(params, images))
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    @jax.jit
    def sgd_step(params, images, labels, lr):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss

    @jax.jit
    def accuracy(params, images, labels):
        return jnp.mean(jnp.argmax(logits_fn(params, images), -1) == labels)

    params = {"trunk": trunk_vars,
              "head": {"w": 0.1 * jax.random.normal(jax.random.key(1), (32, 10)),
                       "b": jnp.zeros(10)}}
    rng = np.random.default_rng(0)
    for step in range(1, STEPS + 1):
        idx = rng.choice(len(x_train), 64, replace=False)
        params, loss = sgd_step(params, x_train[idx], y_train[idx], 0.5)
        if step % (STEPS // 4) == 0:
            print(f"step {step:4d}  loss {float(loss):.4f}")
    print(f"linear head test accuracy: {float(accuracy(params, x_test, y_test)):.4f}")

    # the trained trunk's features, used by a nearest-centroid classifier written with vmap
    @jax.jit
    def nearest_centroid(tv, train_images, train_labels, images):
        feats = embed(tv, train_images)
        centroids = jax.vmap(lambda c: jnp.sum(jnp.where((train_labels == c)[:, None], feats, 0), 0)
                             / jnp.sum(train_labels == c))(jnp.arange(10))
        def classify(image):
            f = embed_one(tv, image)
            return jnp.argmin(jnp.sum((centroids - f) ** 2, axis=1))
        return jax.vmap(classify)(images)

    pred = nearest_centroid(params["trunk"], x_train, y_train, x_test)
    print(f"nearest-centroid test accuracy: {float(np.mean(np.asarray(pred) == y_test)):.4f}")


if __name__ == "__main__":
    main()
