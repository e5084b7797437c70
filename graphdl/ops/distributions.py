"""Distributions: parameters, sample type, and the estimators each admits.

Each family is one entry: its parameter names (positional order), whether it is
continuous, the dtype/shape of a sample, and its JAX functions (sample, log_prob,
entropy, mean) used by the lowering.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphdl.ops._jax import jax, jnn, jnp

ESTIMATORS = {
    "reparam": "reparameterization: the sample is a differentiable function of the parameters",
    "reinforce": "score function (REINFORCE): cost * grad log p, unbiased, high variance",
    "enumerate": "exact sum over the values of a small discrete distribution",
    "gumbel_softmax": "relaxed one-hot sample, biased by design (temperature)",
    "straight_through": "hard sample forward, identity gradient backward, biased by design",
}
ESTIMATOR_KEYWORDS = {
    "reparam": (), "reinforce": ("baseline",), "enumerate": (),
    "gumbel_softmax": ("temperature", "hard"), "straight_through": (),
}


@dataclass(frozen=True)
class Family:
    name: str
    params: tuple[str, ...]
    continuous: bool
    sample_dtype: str
    estimators: tuple[str, ...]
    event_from: str  # which parameter's shape the sample takes
    drop_last: bool = False  # categorical: the sample drops the class axis


FAMILIES = {
    "normal": Family("normal", ("loc", "scale"), True, "f32", ("reparam", "reinforce"), "loc"),
    "uniform": Family("uniform", ("low", "high"), True, "f32", ("reparam", "reinforce"), "low"),
    "bernoulli": Family("bernoulli", ("logits",), False, "f32",
                        ("reinforce", "enumerate", "straight_through"), "logits"),
    "categorical": Family("categorical", ("logits",), False, "i32",
                          ("reinforce", "enumerate"), "logits", drop_last=True),
    "onehot_categorical": Family("onehot_categorical", ("logits",), False, "f32",
                                 ("reinforce", "enumerate", "gumbel_softmax", "straight_through"),
                                 "logits"),
}
ALIASES = {"probs": "logits", "mu": "loc", "sigma": "scale", "std": "scale"}


def estimator_error(family: Family, estimator: str) -> tuple[str, str]:
    """The message and hint for an estimator that cannot apply to a family."""
    kind = "continuous" if family.continuous else "discrete"
    if estimator == "reparam":
        msg = f"`reparam` needs a continuous distribution, but {family.name} is {kind}"
    else:
        msg = f"`{estimator}` does not apply to {family.name} ({kind})"
    hints = {
        "categorical": "use `by reinforce`, `by enumerate`, or onehot_categorical with "
                       "`by gumbel_softmax(...)`",
        "bernoulli": "use `by reinforce`, `by enumerate` or `by straight_through`",
    }
    return msg, hints.get(family.name, f"{family.name} admits {', '.join(family.estimators)}")


# -- lowering -----------------------------------------------------------------
def sample(family: str, key, p: dict, shape):
    if family == "normal":
        return p["loc"] + p["scale"] * jax.random.normal(key, shape)
    if family == "uniform":
        return p["low"] + (p["high"] - p["low"]) * jax.random.uniform(key, shape)
    if family == "bernoulli":
        return jax.random.bernoulli(key, jnn.sigmoid(p["logits"]), shape).astype(jnp.float32)
    if family == "categorical":
        return jax.random.categorical(key, p["logits"], axis=-1).astype(jnp.int32)
    if family == "onehot_categorical":
        idx = jax.random.categorical(key, p["logits"], axis=-1)
        return jnn.one_hot(idx, p["logits"].shape[-1])
    raise KeyError(family)


def log_prob(family: str, p: dict, x):
    if family == "normal":
        z = (x - p["loc"]) / p["scale"]
        return -0.5 * z * z - jnp.log(p["scale"]) - 0.5 * jnp.log(2 * jnp.pi)
    if family == "uniform":
        inside = (x >= p["low"]) & (x <= p["high"])
        return jnp.where(inside, -jnp.log(p["high"] - p["low"]), -jnp.inf)
    if family == "bernoulli":
        return -(jnp.maximum(p["logits"], 0) - p["logits"] * x
                 + jnp.log1p(jnp.exp(-jnp.abs(p["logits"]))))
    if family == "categorical":
        logp = jnn.log_softmax(p["logits"], axis=-1)
        return jnp.take_along_axis(logp, x[..., None], axis=-1)[..., 0]
    if family == "onehot_categorical":
        return jnp.sum(x * jnn.log_softmax(p["logits"], axis=-1), axis=-1)
    raise KeyError(family)


def entropy(family: str, p: dict):
    if family == "normal":
        return 0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(p["scale"])
    if family == "uniform":
        return jnp.log(p["high"] - p["low"])
    if family == "bernoulli":
        q = jnn.sigmoid(p["logits"])
        return -(q * jnn.log_sigmoid(p["logits"]) + (1 - q) * jnn.log_sigmoid(-p["logits"]))
    logp = jnn.log_softmax(p["logits"], axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def mean(family: str, p: dict):
    if family == "normal":
        return p["loc"]
    if family == "uniform":
        return (p["low"] + p["high"]) / 2
    if family == "bernoulli":
        return jnn.sigmoid(p["logits"])
    if family == "categorical":
        return jnp.argmax(p["logits"], axis=-1).astype(jnp.int32)
    return jnn.softmax(p["logits"], axis=-1)


def kl(fp: str, p: dict, fq: str, q: dict):
    """Analytic KL(p || q) for pairs of the same family."""
    if fp == fq == "normal":
        var_ratio = jnp.square(p["scale"] / q["scale"])
        t1 = jnp.square((p["loc"] - q["loc"]) / q["scale"])
        return 0.5 * (var_ratio + t1 - 1 - jnp.log(var_ratio))
    if fp == fq == "bernoulli":
        a, b = p["logits"], q["logits"]
        pa = jnn.sigmoid(a)
        return (pa * (jnn.log_sigmoid(a) - jnn.log_sigmoid(b))
                + (1 - pa) * (jnn.log_sigmoid(-a) - jnn.log_sigmoid(-b)))
    if fp == fq and fp in ("categorical", "onehot_categorical"):
        lp, lq = jnn.log_softmax(p["logits"], -1), jnn.log_softmax(q["logits"], -1)
        return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)
    raise KeyError((fp, fq))


ANALYTIC_KL = {("normal", "normal"), ("bernoulli", "bernoulli"),
               ("categorical", "categorical"), ("onehot_categorical", "onehot_categorical")}
