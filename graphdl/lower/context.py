"""What a lowering may ask for while an IR is traced: mode, keys, parameters, statistics.

Its own module so that evaluate.py and the lowerings it dispatches to (stochastic.py)
both import it without importing each other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from graphdl.dims import Dim


class LowerCtx:
    """What a lowering may ask for: mode, random keys, parameters and statistics."""

    def __init__(self, params: dict, stats: dict, key=None, train: bool = False,
                 stochastic: str = "sample"):
        self.params = params
        self.stats = dict(stats)
        self.new_stats: dict = {}
        self.base_key = key
        self.train = train
        self.stochastic = stochastic  # "sample" or "mean" (eval mode only)
        self.node_id = 0
        self._draws = 0
        self.stat_names: dict[str, str] = {}
        self.dims: dict = {}  # symbolic dim name -> its size here (an int, or a jax.export symbol)
        # a padded evaluation batch: 1 per real example, 0 per padding row, and the
        # `mean`/`sum` nodes (ids of their Node records) that reduce over those examples
        self.example_mask = None
        self.masked: frozenset[int] = frozenset()

    def size(self, d) -> object:
        """A dim of the IR as a size for JAX: an int, or, when exporting with symbolic
        shapes, an expression in jax.export's symbolic dims (`B`, `2 * B`)."""
        d = Dim.of(d)
        if d.is_int():
            return int(d)
        total = 0
        for mono, coef in d.terms.items():
            term = 1
            for sym in mono:
                if sym not in self.dims:
                    raise ValueError(f"dim {sym} is not known here; give it a number")
                term = term * self.dims[sym]
            if coef.denominator != 1:
                term = term // coef.denominator
            total = total + term * coef.numerator if mono else total + int(coef)
        return total

    def bind_dims(self, shape, value) -> None:
        """Learn each bare symbolic dim of an input from the array that came in."""
        if shape is None:
            return
        for d, size in zip(shape, jnp.shape(value)):
            d = Dim.of(d)
            if not d.is_const() and len(d.terms) == 1:
                (mono, coef), = d.terms.items()
                if len(mono) == 1 and coef == 1:
                    self.dims.setdefault(mono[0], size)

    def key(self):
        if self.base_key is None:
            raise NeedsKey()
        self._draws += 1
        return jax.random.fold_in(jax.random.fold_in(self.base_key, self.node_id), self._draws)

    def update(self, local: str, value) -> None:
        name = self.stat_names[local]
        self.new_stats[name] = value
        self.stats[name] = value


class NeedsKey(Exception):
    """A random op ran without a key."""
