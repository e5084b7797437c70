"""Lazy handles on jax modules, so the front end (`graphdl check`) never imports jax."""

from __future__ import annotations

import importlib


class _Lazy:
    def __init__(self, module: str):
        self._module_name = module
        self._module = None

    def __getattr__(self, name: str):
        if self._module is None:
            self._module = importlib.import_module(self._module_name)
        return getattr(self._module, name)


jax = _Lazy("jax")
jnp = _Lazy("jax.numpy")
lax = _Lazy("jax.lax")
jnn = _Lazy("jax.nn")
