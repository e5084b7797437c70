"""Symbolic dimensions and tensor types.

A dim is a polynomial with rational coefficients over symbol names (`B`, `D + H`,
`2 * H`, `T / 2`). Ints are constant polynomials. Two dims are equal only when their
polynomials are: `B` and `D` are different until a call binds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

Monomial = tuple[str, ...]  # sorted symbol names; () is the constant term

# -- limits ----------------------------------------------------------------------
# What the checker refuses, so that every input gets a result or a located error in
# bounded time and memory. One place: the file's settings and `--set` values are checked
# by the same functions. docs/language.md ("Limits") lists them.
MAX_INT = 2**63 - 1  # the largest integer a backend holds (int64)
MAX_INT32 = 2**31 - 1  # where an int32 is needed: sizes, axes, counts
MAX_ELEMENTS = 2**31  # elements in one tensor (8 GiB of f32)
MAX_PARAMS = 2**33  # parameter elements in one graph or train block, all together
MAX_SECTIONS = 4096  # results of one multi-result op (split, unstack)
MAX_TERMS = 256  # terms of one dim polynomial (`(A + B) * (C + D)` has 4)


class DimTooLarge(ValueError):
    """A dim polynomial grew past MAX_TERMS terms; the message says so in words."""

    def __init__(self):
        super().__init__(f"this dim expands to more than {MAX_TERMS} terms")
        self.message = str(self)


def int_problem(value: int, what: str, int32: bool = False) -> str | None:
    """Why an integer cannot be held by a backend (a message), or None when it can."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    bound, width = (MAX_INT32, "2^31") if int32 else (MAX_INT, "2^63")
    if abs(value) > bound:
        return f"{what} is too large: {_short(value)} is not below {width}"
    return None


def float_problem(value: float | int, what: str) -> str | None:
    """Why a number cannot be a float (it overflows to infinity), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return f"{what} is too large for a float: {_short(value)}"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{what} is too large for a float"
    return None


def number_problem(value, what: str) -> str | None:
    """Why a number given as a setting (lr, steps, eps) cannot be used, or None."""
    return int_problem(value, what) or float_problem(value, what)


def const_problem(value, what: str) -> str | None:
    """Why a graph constant's value (`H = 512`, `--set mlp.H=512`) cannot be used, or None:
    an integer must fit an int32 (a constant is a size), a number must be a finite float."""
    if isinstance(value, Dim) and value.is_int():
        value = int(value)
    if isinstance(value, int):
        return int_problem(value, what, int32=True)
    if isinstance(value, float):
        return float_problem(value, what)
    return None


def elements(shape) -> int | None:
    """The number of elements of a shape whose dims are all known ints, else None."""
    n = 1
    for d in shape:
        d = Dim.of(d)
        if not d.is_int():
            return None
        n *= int(d)
    return n


def size_problem(shape, what: str) -> str | None:
    """Why a tensor of this shape cannot be allocated (a dim or the element count is too
    large), or None. Symbolic dims count as 1, so `f32[B, 10**12]` is refused too."""
    n = 1
    for d in shape:
        d = Dim.of(d)
        if d.is_const():
            c = d.const()
            if abs(c) > MAX_INT:
                return f"{what} has a dim that is too large: {_short(int(c))} is not below 2^63"
            n *= max(int(c), 0)
    if n > MAX_ELEMENTS:
        return (f"{what} has {_short(n)} elements; the limit is 2^31 ({MAX_ELEMENTS}) "
                "elements in one tensor")
    return None


def _short(n: int) -> str:
    """A big integer for a message: all its digits up to 30 of them, else `1.0e+40`."""
    text = str(n)
    if len(text) <= 30:
        return text
    return f"{text[0]}.{text[1:4]}e+{len(text) - 1} ({len(text)} digits)"


class Dim:
    """An immutable polynomial over symbolic dim names."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: dict[Monomial, Fraction] | int | str | Dim):
        if isinstance(terms, Dim):
            terms = terms.terms
        elif isinstance(terms, int):
            terms = {(): Fraction(terms)} if terms else {}
        elif isinstance(terms, str):
            terms = {(terms,): Fraction(1)}
        self.terms = {m: c for m, c in terms.items() if c != 0}
        self._hash = hash(frozenset(self.terms.items()))

    @staticmethod
    def of(value: Dim | int | str) -> Dim:
        return value if isinstance(value, Dim) else Dim(value)

    # -- queries -----------------------------------------------------------
    def is_const(self) -> bool:
        return all(m == () for m in self.terms)

    def is_int(self) -> bool:
        return self.is_const() and self.const().denominator == 1

    def const(self) -> Fraction:
        return self.terms.get((), Fraction(0))

    def __int__(self) -> int:
        if not self.is_int():
            raise ValueError(f"dim {self} is not a known integer")
        return int(self.const())

    def symbols(self) -> set[str]:
        return {s for m in self.terms for s in m}

    def substitute(self, env: dict[str, Dim]) -> Dim:
        out: Dim = Dim(0)
        for mono, coef in self.terms.items():
            term: Dim = Dim({(): coef})
            for s in mono:
                term = term * env.get(s, Dim(s))
            out = out + term
        return out

    # -- arithmetic --------------------------------------------------------
    def __add__(self, other: Dim | int) -> Dim:
        other = Dim.of(other)
        terms = dict(self.terms)
        for m, c in other.terms.items():
            terms[m] = terms.get(m, Fraction(0)) + c
        if len(terms) > MAX_TERMS:
            raise DimTooLarge()
        return Dim(terms)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return Dim({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Dim | int) -> Dim:
        return self + (-Dim.of(other))

    def __rsub__(self, other: Dim | int) -> Dim:
        return Dim.of(other) - self

    def __mul__(self, other: Dim | int) -> Dim:
        other = Dim.of(other)
        terms: dict[Monomial, Fraction] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = tuple(sorted(m1 + m2))
                terms[m] = terms.get(m, Fraction(0)) + c1 * c2
            if len(terms) > MAX_TERMS:
                raise DimTooLarge()
        return Dim(terms)

    __rmul__ = __mul__

    def __truediv__(self, other: Dim | int) -> Dim:
        other = Dim.of(other)
        if not other.is_const() or other.const() == 0:
            raise ValueError(f"cannot divide a dim by {other}")
        return Dim({m: c / other.const() for m, c in self.terms.items()})

    def floordiv(self, k: int) -> Dim | None:
        """`self // k` when it is known, else None."""
        if self.is_const():
            return Dim(int(self.const() // k))
        exact = self / k
        return exact if all(c.denominator == 1 for c in exact.terms.values()) else None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            other = Dim(other)
        return isinstance(other, Dim) and self.terms == other.terms

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Dim({self})"

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        denominator = math.lcm(*(c.denominator for c in self.terms.values()))
        if denominator > 1 and len(self.terms) > 1:  # (L - 1) / 2, not L / 2 - 1 / 2
            return f"({self * denominator}) / {denominator}"
        parts = []
        for mono in sorted(self.terms, key=lambda m: (-len(m), m)):
            coef = self.terms[mono]
            name = " * ".join(mono)
            if not mono:
                text = str(abs(coef)) if coef.denominator == 1 else f"{abs(coef.numerator)} / {coef.denominator}"
            elif abs(coef) == 1:
                text = name
            elif coef.denominator == 1:
                text = f"{abs(coef.numerator)} * {name}"
            elif abs(coef.numerator) == 1:
                text = f"{name} / {coef.denominator}"
            else:
                text = f"{abs(coef.numerator)} * {name} / {coef.denominator}"
            sign = "-" if coef < 0 else "+"
            parts.append((sign, text))
        out = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        for sign, text in parts[1:]:
            out += f" {sign} {text}"
        return out


Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class DType:
    """A GDL dtype: its spelling in .gdl, the numpy/jax name, and its kind."""

    name: str  # "f32"
    numpy: str  # "float32"; "bfloat16" is ml_dtypes' (jax imports it), so resolve it
    #             with jnp.dtype(name) at the use site: this module must not import jax
    kind: str  # "float", "int" or "bool"


# The one dtype table; its order is the order messages list dtypes in ("dtypes are ...").
DTYPE_TABLE: dict[str, DType] = {d.name: d for d in (
    DType("f32", "float32", "float"), DType("f16", "float16", "float"),
    DType("bf16", "bfloat16", "float"), DType("f64", "float64", "float"),
    DType("i32", "int32", "int"), DType("i64", "int64", "int"),
    DType("bool", "bool", "bool"),
)}
DTYPES = tuple(DTYPE_TABLE)
FLOAT_DTYPES = tuple(n for n, d in DTYPE_TABLE.items() if d.kind == "float")
INT_DTYPES = tuple(n for n, d in DTYPE_TABLE.items() if d.kind == "int")
# numpy/jax dtype name -> GDL name: `FROM_NUMPY.get(str(array.dtype))`
FROM_NUMPY: dict[str, str] = {d.numpy: d.name for d in DTYPE_TABLE.values()}


def numpy_name(dtype: str) -> str:
    """The numpy/jax name of a GDL dtype ("f32" -> "float32"); KeyError for an unknown one."""
    return DTYPE_TABLE[dtype].numpy


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: Shape

    @staticmethod
    def make(dtype: str, shape) -> TensorType:
        return TensorType(dtype, tuple(Dim.of(d) for d in shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def concrete(self) -> tuple[int, ...] | None:
        """The shape as ints, or None while a dim is symbolic."""
        if all(d.is_int() for d in self.shape):
            return tuple(int(d) for d in self.shape)
        return None

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


def shape_str(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def promote(a: str, b: str) -> str:
    """Result dtype of a binary op, JAX-style (bool < ints < floats, wider wins)."""
    order = ["bool", "i32", "i64", "bf16", "f16", "f32", "f64"]
    if a == b:
        return a
    if {a, b} == {"bf16", "f16"}:
        return "f32"
    return max(a, b, key=order.index)
