"""Gradient estimators for `z ~ dist by ESTIMATOR`: one `Estimator` entry each in `ESTIMATORS`.

An entry says which keywords the estimator takes, which families it applies to (a
predicate on the family's flags, so a new family needs no edit here), and how it lowers:
`lower(key, family, params, shape, options) -> value`. A `score_function` estimator's
value carries no gradient: the surrogate pass (graphdl/passes/surrogate.py) scores the
sample with the family's log_prob and adds cost * grad log p to the loss. An `exact`
estimator's value carries none either: the surrogate pass replaces the loss terms that
depend on the sample by their expectation, summed over the support (`support_size`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from graphdl.dims import FLOAT_DTYPES
from graphdl.ops._jax import jax, jnn, jnp, lax
from graphdl.ops.distributions import Family, Params


@dataclass(frozen=True)
class Estimator:
    name: str
    description: str
    keywords: tuple[str, ...]  # the keyword options it accepts: `by reinforce(baseline = b)`
    applies: Callable[[Family], bool]
    lower: Callable  # (key, family, params, shape, options) -> value
    score_function: bool  # the surrogate pass adds a log-probability term for it
    default: bool = False  # chosen when `~` names no estimator and it applies
    requires: str | None = None  # "needs ..." in the error when it does not apply
    exact: bool = False  # the surrogate pass sums the loss over the support instead


# `by enumerate` runs the graph below the node once per point of its support (vmapped):
# beyond this many points that is no longer the cheap exact answer it promises
MAX_SUPPORT = 1024


def _reparam(key, family: Family, p: Params, shape, options: dict):
    return family.sample(key, p, shape)


def _no_gradient(key, family: Family, p: Params, shape, options: dict):
    # the sample carries no gradient: the surrogate pass adds cost * grad log p(sample)
    # (reinforce) or the exact expectation over the support (enumerate)
    return lax.stop_gradient(family.sample(key, p, shape))


def _gumbel_softmax(key, family: Family, p: Params, shape, options: dict):
    g = jax.random.gumbel(key, shape)  # the sample's shape, which `shape = [...]` may widen
    soft = jnn.softmax((p["logits"] + g) / options.get("temperature", 1.0), axis=-1)
    if not options.get("hard", False):
        return soft
    hard = jnn.one_hot(jnp.argmax(soft, -1), soft.shape[-1])
    return soft + lax.stop_gradient(hard - soft)


def _straight_through(key, family: Family, p: Params, shape, options: dict):
    # the hard sample's value, the mean's gradient (the mean has the sample's type here)
    probs = family.mean(p)
    hard = family.sample(key, p, shape)
    return probs + lax.stop_gradient(hard - probs)


ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    Estimator("reparam", "reparameterization: the sample is a differentiable function of the "
              "parameters", (), lambda f: f.reparameterizable, _reparam, score_function=False,
              default=True, requires="a continuous distribution"),
    Estimator("reinforce", "score function (REINFORCE): cost * grad log p, unbiased, high "
              "variance", ("baseline",), lambda f: True, _no_gradient, score_function=True),
    Estimator("enumerate", "exact sum over the values of a small discrete distribution", (),
              lambda f: not f.continuous, _no_gradient, score_function=False, exact=True),
    Estimator("gumbel_softmax", "relaxed one-hot sample, biased by design (temperature)",
              ("temperature", "hard"), lambda f: f.one_hot and f.params == ("logits",),
              _gumbel_softmax, score_function=False),
    # a float sample of a discrete family: its mean is a relaxed sample of the same type
    Estimator("straight_through", "hard sample forward, identity gradient backward, biased "
              "by design", (), lambda f: not f.continuous and f.sample_dtype in FLOAT_DTYPES,
              _straight_through, score_function=False),
)}


def admitted(family: Family) -> tuple[str, ...]:
    """The estimators that apply to `family`, in table order."""
    return tuple(name for name, e in ESTIMATORS.items() if e.applies(family))


def default_estimator(family: Family) -> str | None:
    """The estimator `~` uses without `by`, or None when the author must choose one."""
    return next((name for name, e in ESTIMATORS.items() if e.default and e.applies(family)),
                None)


def estimator_hint(family: Family) -> str:
    """Which estimators to use instead, for a message about `family`."""
    return family.hint or f"{family.name} admits {', '.join(admitted(family))}"


def estimator_error(family: Family, estimator: str) -> tuple[str, str]:
    """The message and hint for an estimator that cannot apply to a family."""
    kind = "continuous" if family.continuous else "discrete"
    requires = ESTIMATORS[estimator].requires
    if requires:
        msg = f"`{estimator}` needs {requires}, but {family.name} is {kind}"
    else:
        msg = f"`{estimator}` does not apply to {family.name} ({kind})"
    return msg, estimator_hint(family)


def support_problem(name: str, values: int, draws: int) -> str | None:
    """Why `values ** draws` points are too many to enumerate, or None."""
    if values ** min(draws, 64) <= MAX_SUPPORT:
        return None
    count = f"{values}^{draws}" + (f" = {values ** draws}" if draws <= 64 else "")
    return f"`{name}` is too large to enumerate: its support has {count} points, " \
           f"more than {MAX_SUPPORT}"
