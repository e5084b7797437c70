"""Distribution families: one `Family` entry per family in `FAMILIES`.

An entry is everything the pipeline knows about a family: the elaboration reads its
parameters, aliases and sample type; the lowering calls its JAX functions; the
estimator table (graphdl/ops/estimators.py) decides from its flags which estimators
apply. Adding a family is adding one entry here (plus its row in docs/language.md).

The functions take the parameters as a dict keyed by the names in `params`; jax is
reached through the lazy handles so `graphdl check` never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from graphdl.ops._jax import jax, jnn, jnp

Params = dict  # parameter name -> jax array


@dataclass(frozen=True)
class Family:
    name: str
    params: tuple[str, ...]  # positional order
    continuous: bool
    reparameterizable: bool  # a sample is a differentiable function of the parameters
    sample_dtype: str  # GDL dtype of a sample (and of its mean in `stochastic="mean"` mode)
    event_from: str  # which parameter's shape the sample takes
    sample: Callable  # (key, params, shape) -> a sample of `shape`
    log_prob: Callable  # (params, x) -> log p(x), one value per draw
    entropy: Callable  # (params) -> one value per draw
    mean: Callable  # (params) -> the mean (the most likely index for a categorical)
    kl: Callable | None = None  # (p, q) -> analytic KL(p || q) against the same family
    aliases: Mapping[str, str] = field(default_factory=dict)  # keyword alias -> parameter
    # `probs = p` in place of logits is converted in the graph: "log" gives log p (a
    # softmax normalises it), "logit" gives log p - log(1 - p) (one probability of 1)
    probs: str | None = None
    drop_last: bool = False  # the sample drops the parameters' last (class) axis
    one_hot: bool = False  # a sample is one-hot over its last axis: one draw is a vector
    hint: str | None = None  # the hint when an estimator does not apply (else: the list)
    # a discrete family: (K) -> every value one draw takes, stacked on a new first axis
    # (K is the class count, the last axis of the logits); `by enumerate` sums over them
    support: Callable | None = None


def per_draw_shape(family: Family, sample_shape: tuple) -> tuple:
    """The shape of one value per draw (log_prob, entropy, kl): a one-hot axis reduced."""
    return sample_shape[:-1] if family.one_hot else sample_shape


def values_per_draw(family: Family, classes):
    """How many values one draw of a discrete family takes, for `classes` classes (the
    last axis of its logits; an int or a symbolic dim)."""
    return classes if family.drop_last or family.one_hot else 2


# -- normal -------------------------------------------------------------------
def _normal_sample(key, p: Params, shape):
    return p["loc"] + p["scale"] * jax.random.normal(key, shape)


def _normal_log_prob(p: Params, x):
    z = (x - p["loc"]) / p["scale"]
    return -0.5 * z * z - jnp.log(p["scale"]) - 0.5 * jnp.log(2 * jnp.pi)


def _normal_entropy(p: Params):
    return 0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(p["scale"])


def _normal_kl(p: Params, q: Params):
    var_ratio = jnp.square(p["scale"] / q["scale"])
    t1 = jnp.square((p["loc"] - q["loc"]) / q["scale"])
    return 0.5 * (var_ratio + t1 - 1 - jnp.log(var_ratio))


# -- uniform ------------------------------------------------------------------
def _uniform_sample(key, p: Params, shape):
    return p["low"] + (p["high"] - p["low"]) * jax.random.uniform(key, shape)


def _uniform_log_prob(p: Params, x):
    inside = (x >= p["low"]) & (x <= p["high"])
    return jnp.where(inside, -jnp.log(p["high"] - p["low"]), -jnp.inf)


# -- bernoulli ----------------------------------------------------------------
def _bernoulli_sample(key, p: Params, shape):
    return jax.random.bernoulli(key, jnn.sigmoid(p["logits"]), shape).astype(jnp.float32)


def _bernoulli_log_prob(p: Params, x):
    # x * logits - log(1 + exp(logits)): jax.nn.softplus is stable for large logits of
    # either sign, and its own derivative (a sigmoid) compiles to fewer passes than the
    # derivative of the max(z, 0) + log1p(exp(-|z|)) form
    return p["logits"] * x - jnn.softplus(p["logits"])


def _bernoulli_entropy(p: Params):
    q = jnn.sigmoid(p["logits"])
    return -(q * jnn.log_sigmoid(p["logits"]) + (1 - q) * jnn.log_sigmoid(-p["logits"]))


def _bernoulli_kl(p: Params, q: Params):
    a, b = p["logits"], q["logits"]
    pa = jnn.sigmoid(a)
    return (pa * (jnn.log_sigmoid(a) - jnn.log_sigmoid(b))
            + (1 - pa) * (jnn.log_sigmoid(-a) - jnn.log_sigmoid(-b)))


# -- categorical (an index) and onehot_categorical (a one-hot vector) ---------
def _categorical_sample(key, p: Params, shape):
    # `shape` (the sample's, without the class axis) may add leading axes to the logits'
    # (`shape = [S, ...]`): draws, not one per distribution
    return jax.random.categorical(key, p["logits"], axis=-1, shape=shape).astype(jnp.int32)


def _categorical_log_prob(p: Params, x):
    logp = jnn.log_softmax(p["logits"], axis=-1)
    # the draws and the logits broadcast (draws `shape = [S, ...]` of one distribution)
    batch = jnp.broadcast_shapes(jnp.shape(x), logp.shape[:-1])
    logp = jnp.broadcast_to(logp, batch + logp.shape[-1:])
    return jnp.take_along_axis(logp, jnp.broadcast_to(x, batch)[..., None], axis=-1)[..., 0]


def _categorical_mean(p: Params):
    return jnp.argmax(p["logits"], axis=-1).astype(jnp.int32)


def _onehot_sample(key, p: Params, shape):
    idx = jax.random.categorical(key, p["logits"], axis=-1, shape=shape[:-1])
    return jnn.one_hot(idx, p["logits"].shape[-1])


def _onehot_log_prob(p: Params, x):
    return jnp.sum(x * jnn.log_softmax(p["logits"], axis=-1), axis=-1)


def _softmax_entropy(p: Params):
    logp = jnn.log_softmax(p["logits"], axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _softmax_kl(p: Params, q: Params):
    lp, lq = jnn.log_softmax(p["logits"], -1), jnn.log_softmax(q["logits"], -1)
    return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)


_NORMAL_ALIASES = MappingProxyType({"mu": "loc", "sigma": "scale", "std": "scale"})
_PROBS = MappingProxyType({"probs": "logits"})

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("normal", ("loc", "scale"), continuous=True, reparameterizable=True,
           sample_dtype="f32", event_from="loc", sample=_normal_sample,
           log_prob=_normal_log_prob, entropy=_normal_entropy, mean=lambda p: p["loc"],
           kl=_normal_kl, aliases=_NORMAL_ALIASES),
    Family("uniform", ("low", "high"), continuous=True, reparameterizable=True,
           sample_dtype="f32", event_from="low", sample=_uniform_sample,
           log_prob=_uniform_log_prob, entropy=lambda p: jnp.log(p["high"] - p["low"]),
           mean=lambda p: (p["low"] + p["high"]) / 2),
    Family("bernoulli", ("logits",), continuous=False, reparameterizable=False,
           sample_dtype="f32", event_from="logits", sample=_bernoulli_sample,
           log_prob=_bernoulli_log_prob, entropy=_bernoulli_entropy,
           mean=lambda p: jnn.sigmoid(p["logits"]), kl=_bernoulli_kl, aliases=_PROBS,
           probs="logit", support=lambda k: jnp.array([0.0, 1.0], jnp.float32),
           hint="use `by reinforce`, `by enumerate` or `by straight_through`"),
    Family("categorical", ("logits",), continuous=False, reparameterizable=False,
           sample_dtype="i32", event_from="logits", sample=_categorical_sample,
           log_prob=_categorical_log_prob, entropy=_softmax_entropy, mean=_categorical_mean,
           kl=_softmax_kl, aliases=_PROBS, probs="log", drop_last=True,
           support=lambda k: jnp.arange(k, dtype=jnp.int32),
           hint="use `by reinforce`, `by enumerate`, or onehot_categorical with "
                "`by gumbel_softmax(...)`"),
    Family("onehot_categorical", ("logits",), continuous=False, reparameterizable=False,
           sample_dtype="f32", event_from="logits", sample=_onehot_sample,
           log_prob=_onehot_log_prob, entropy=_softmax_entropy,
           mean=lambda p: jnn.softmax(p["logits"], axis=-1), kl=_softmax_kl, aliases=_PROBS,
           probs="log", one_hot=True, support=lambda k: jnp.eye(k, dtype=jnp.float32)),
)}


def analytic_kl(p_family: str, q_family: str) -> Callable | None:
    """KL(p || q) in closed form, or None: defined here between members of one family."""
    return FAMILIES[p_family].kl if p_family == q_family else None
