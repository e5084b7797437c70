"""The inputs `graphdl sample` gives a graph: given arrays, a data split's first examples,
and N(0, 1) noise for the rest.

A graph's inputs are filled in this order: the arrays given by name (`--input`), then the
fields of a data split with the inputs' names (`--data digits.test`: its first n
examples), then every remaining float input whose leading dim is symbolic is drawn from
N(0, 1) with that dim = n (or the size the given arrays bound it to). Anything else (an
integer input, a fixed leading dim, another symbolic dim nothing bound) cannot be filled
and is a `SampleError` that says what to give.

The types come from the graph's IR (its input nodes, with graph constants resolved), as
plain (name, dtype, dims) records, so nothing here reads syntax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from graphdl.dims import FLOAT_DTYPES, numpy_name
from graphdl.ir.graph import node

#: The most samples one `sample` draws (each a full forward pass of the graph).
MAX_SAMPLES = 100_000


class SampleError(Exception):
    """A `sample` request that cannot be met; the message is one line for the user."""


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, dtype (`f32`) and dims (an int, or a symbolic name)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def shown(self, sizes: dict[str, int] | None = None) -> str:
        sizes = sizes or {}
        dims = ", ".join(str(sizes.get(d, d)) if isinstance(d, str) else str(d)
                         for d in self.dims)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass
class FilledInputs:
    """The arrays in the graph's argument order, and how each was filled."""

    names: list[str]
    arrays: list[np.ndarray]
    given: dict[str, str] = field(default_factory=dict)   # name -> where it came from
    drawn: list[str] = field(default_factory=list)        # "z: f32[64, 2] ~ normal(0, 1)"


def input_specs(ir) -> list[InputSpec]:
    """The input records of a graph's IR, in argument order."""
    specs = []
    for nid in ir.graph["inputs"]:
        n = node(ir, nid)
        dims = tuple(int(d) if d.is_int() else str(d) for d in n.type.shape)
        specs.append(InputSpec(n.attrs["name"], n.type.dtype, dims))
    return specs


def check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_SAMPLES:
        raise SampleError(f"--n {n}: the number of samples must be an integer from 1 to "
                          f"{MAX_SAMPLES}")


def fill_inputs(graph: str, specs: list[InputSpec], n: int, *, seed: int,
                given: dict[str, tuple[str, np.ndarray]] | None = None,
                data: tuple[str, dict[str, np.ndarray]] | None = None) -> FilledInputs:
    """The arrays for `specs`: `given` maps a name to (where, array); `data` is
    (its name, {field: array}), of which the first `n` examples feed the inputs named like
    its fields; the rest is drawn from N(0, 1) with the key of `seed` (a key of its own,
    not the one the graph's `~` draws with)."""
    check_n(n)
    given = dict(given or {})
    names = [s.name for s in specs]
    for name in given:
        if name not in names:
            raise SampleError(f"--input {name}: `{graph}` has no input `{name}`; its inputs "
                              f"are {', '.join(names) or 'none'}")
    if data is not None:
        where, arrays = data
        fed = [s.name for s in specs if s.name in arrays and s.name not in given]
        if not fed:
            raise SampleError(f"--data {where}: no input of `{graph}` is named like a field of "
                              f"it; its fields are {', '.join(arrays)}, the inputs "
                              f"{', '.join(names) or 'none'}")
        for name in fed:
            given[name] = (f"--data {where}", np.asarray(arrays[name][:n]))
    sizes: dict[str, int] = {}
    bound_by: dict[str, str] = {}
    out: list[np.ndarray | None] = []
    filled = FilledInputs(names, [])
    for spec in specs:
        if spec.name in given:
            where, x = given[spec.name]
            out.append(_checked(graph, spec, x, where, sizes, bound_by))
            filled.given[spec.name] = where
        else:
            out.append(None)
    key = jax.random.key(seed)
    for i, spec in enumerate(specs):
        if out[i] is not None:
            continue
        shape = _drawn_shape(graph, spec, n, sizes)
        draw = jax.random.normal(jax.random.fold_in(key, i), shape)
        out[i] = np.asarray(draw, numpy_name(spec.dtype))
        filled.drawn.append(f"{spec.shown(sizes)} ~ normal(0, 1)")
    filled.arrays = [x for x in out if x is not None]
    return filled


def _checked(graph: str, spec: InputSpec, x: np.ndarray, where: str,
             sizes: dict[str, int], bound_by: dict[str, str]) -> np.ndarray:
    """`x` for input `spec`: its rank, fixed sizes, dtype kind and symbolic dims checked
    (a symbolic dim binds to its first size)."""
    declared = f"`{graph}` takes {spec.shown()}"
    if x.ndim != len(spec.dims):
        raise SampleError(f"{where} gives {spec.name} of shape {tuple(x.shape)}, but {declared}")
    for axis, (size, dim) in enumerate(zip(x.shape, spec.dims)):
        if isinstance(dim, int) and size != dim:
            raise SampleError(f"{where} gives {spec.name} of shape {tuple(x.shape)}, but "
                              f"{declared}: axis {axis} must be {dim}")
        if isinstance(dim, str):
            if dim in sizes and sizes[dim] != size:
                raise SampleError(f"{where} gives {spec.name} of shape {tuple(x.shape)}, but "
                                  f"{declared}, and {dim} is {sizes[dim]} from {bound_by[dim]}")
            sizes.setdefault(dim, size)
            bound_by.setdefault(dim, where)
    want = numpy_name(spec.dtype)
    if (x.dtype.kind == "f") != (spec.dtype in FLOAT_DTYPES) or x.dtype.kind not in "biuf":
        raise SampleError(f"{where} gives {spec.name} of dtype {x.dtype}, but {declared}")
    return x.astype("float32" if want == "bfloat16" else want)


def _drawn_shape(graph: str, spec: InputSpec, n: int, sizes: dict[str, int]) -> tuple:
    """The shape N(0, 1) noise for `spec` takes, or the SampleError saying why it has none."""
    give = f"give it with --input {spec.name}=FILE.npy"
    if spec.dtype not in FLOAT_DTYPES:
        raise SampleError(f"`{graph}` takes {spec.shown()}, an integer input that sample "
                          f"cannot draw; {give}")
    if not spec.dims or not isinstance(spec.dims[0], str):
        raise SampleError(f"`{graph}` takes {spec.shown()}, whose leading dim is not a "
                          f"symbolic batch dim (like B) that --n could set; {give}")
    sizes.setdefault(spec.dims[0], n)
    unbound = [d for d in spec.dims[1:] if isinstance(d, str) and d not in sizes]
    if unbound:
        raise SampleError(f"`{graph}` takes {spec.shown()}, and nothing gives the size of "
                          f"{unbound[0]}; {give}")
    return tuple(sizes[d] if isinstance(d, str) else d for d in spec.dims)
