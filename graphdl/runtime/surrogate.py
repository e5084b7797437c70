"""The surrogate loss for score-function (REINFORCE) samples.

For each such sample, the gradient estimate is cost * grad log p(sample), with the cost
stop-gradiented (Schulman et al. 2015). With no score-function samples the surrogate is
the loss itself.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def surrogate(loss, score_terms: list):
    """loss + sum_i stop_gradient(loss) * (log p_i - stop_gradient(log p_i)), DiCE-style.

    The added term is 0 in value, so the reported loss is unchanged, and its gradient is
    cost * grad log p. The cost here is the whole loss (an unbiased, higher-variance
    choice until per-example costs are wired in).
    """
    extra = 0.0
    for logp, _attrs in score_terms:
        total = jnp.sum(logp)
        extra = extra + lax.stop_gradient(loss) * (total - lax.stop_gradient(total))
    return loss + extra
