"""Generated tasks, deterministic from `seed`: adding, copy, reverse, gaussian_ring, shapes.

Each generator draws all `n` examples from `numpy.random.default_rng(seed)` and the
examples are then split with the same seed, so one seed fixes the whole data set.
Regression targets are [N, 1] (not [N]) so that a `dense(1)` output and the target have
the same shape and `mse` cannot broadcast [B, 1] against [B] into [B, B].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from graphdl.runtime.data.base import (
    Arrays,
    DataError,
    Field,
    Source,
    split_arrays,
    split_names,
    want_float,
    want_int,
    want_split,
)

DEFAULT_SPLIT = (0.9, 0.1)

#: The most numbers a generated task may hold (n x per-example size): 10^8, 400 MB of f32.
MAX_GENERATED = 10**8


def _generated(
    args: dict,
    describe: str,
    fields: dict[str, Field],
    make: Callable[[np.random.Generator, int], Arrays],
    info: dict | None = None,
) -> Source:
    """A Source whose examples come from `make(rng, n)`; generated on first use."""
    n = want_int(args, "n", 2)
    size = n * sum(math.prod(f.shape) for f in fields.values())
    if size > MAX_GENERATED:
        raise DataError(
            f"{describe} with n = {n} would generate {size} numbers, more than the limit of "
            f"{MAX_GENERATED}",
            hint="use a smaller n (or a shorter T)",
            arg="n",
        )
    seed = want_int(args, "seed", 0)
    fractions = want_split(args) or DEFAULT_SPLIT
    names = split_names(len(fractions))

    def load():
        arrays = make(np.random.default_rng(seed), n)
        return split_arrays(arrays, fractions, seed, names, describe), {}

    return Source(fields, names, load, static_info=info or {}, describe=describe)


def open_adding(args: dict, base_dir: Path) -> Source:
    """The adding problem (Hochreiter & Schmidhuber): x[t] = (value in [0, 1), marker);
    one marker in each half of the sequence; y = the sum of the two marked values."""
    steps = want_int(args, "T", 2)

    def make(rng: np.random.Generator, n: int) -> Arrays:
        values = rng.random((n, steps), dtype=np.float32)
        half = steps // 2
        first = rng.integers(0, half, n)
        second = rng.integers(half, steps, n)
        markers = np.zeros((n, steps), np.float32)
        rows = np.arange(n)
        markers[rows, first] = markers[rows, second] = 1.0
        y = values[rows, first] + values[rows, second]
        return {"x": np.stack([values, markers], -1), "y": y[:, None].astype(np.float32)}

    fields = {"x": Field((steps, 2), "f32"), "y": Field((1,), "f32")}
    return _generated(args, f"adding({steps})", fields, make)


def _token_task(args: dict, kind: str, transform: Callable[[np.ndarray], np.ndarray]) -> Source:
    steps = want_int(args, "T", 1)
    vocab = want_int(args, "vocab", 2)

    def make(rng: np.random.Generator, n: int) -> Arrays:
        x = rng.integers(0, vocab, (n, steps), dtype=np.int32)
        return {"x": x, "y": np.ascontiguousarray(transform(x))}

    fields = {"x": Field((steps,), "i32"), "y": Field((steps,), "i32")}
    return _generated(args, f"{kind}({steps}, {vocab})", fields, make, {"vocab_size": vocab})


def open_copy(args: dict, base_dir: Path) -> Source:
    """Random token sequences in [0, vocab); y = x (a sequence-to-sequence sanity task)."""
    return _token_task(args, "copy", lambda x: x.copy())


def open_reverse(args: dict, base_dir: Path) -> Source:
    """Random token sequences in [0, vocab); y = x reversed along time."""
    return _token_task(args, "reverse", lambda x: x[:, ::-1])


def open_gaussian_ring(args: dict, base_dir: Path) -> Source:
    """A mixture of k Gaussians on a circle (the GAN mode-collapse benchmark);
    y is the index of the mode each point was drawn from."""
    k = want_int(args, "k", 1)
    radius = want_float(args, "radius", positive=True)
    std = want_float(args, "std", positive=True)

    def make(rng: np.random.Generator, n: int) -> Arrays:
        mode = rng.integers(0, k, n)
        angle = 2 * np.pi * mode / k
        centers = radius * np.stack([np.cos(angle), np.sin(angle)], -1)
        x = centers + std * rng.standard_normal((n, 2))
        return {"x": x.astype(np.float32), "y": mode.astype(np.int32)}

    fields = {"x": Field((2,), "f32"), "y": Field((), "i32")}
    return _generated(args, f"gaussian_ring({k})", fields, make, {"classes": k})


#: the classes of `shapes`, in mask order (0 is the background)
SHAPE_CLASSES = ("background", "circle", "rectangle", "triangle")
#: the largest image side `shapes` draws (a bigger one is a typo more often than a wish)
MAX_SHAPES_SIZE = 256


def _circle(rng: np.random.Generator, ys, xs, size: int) -> np.ndarray:
    r = rng.uniform(0.1, 0.2) * size
    cy, cx = rng.uniform(r, size - r, 2)
    return (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r


def _rectangle(rng: np.random.Generator, ys, xs, size: int) -> np.ndarray:
    hy, hx = rng.uniform(0.08, 0.2, 2) * size  # half-sides: squares and oblongs
    cy, cx = rng.uniform(hy, size - hy), rng.uniform(hx, size - hx)
    return (np.abs(ys - cy) <= hy) & (np.abs(xs - cx) <= hx)


def _triangle(rng: np.random.Generator, ys, xs, size: int) -> np.ndarray:
    # an equilateral triangle, turned at random: inside = on the inner side of all 3 edges
    r = rng.uniform(0.14, 0.26) * size  # circumradius
    cy, cx = rng.uniform(r / 2, size - r / 2, 2)
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(3) / 3
    py, px = cy + r * np.sin(angles), cx + r * np.cos(angles)
    inside = np.ones(ys.shape, bool)
    for i in range(3):
        j = (i + 1) % 3
        # the cross product's sign: counter-clockwise corners keep the inside on the left
        inside &= (px[j] - px[i]) * (ys - py[i]) - (py[j] - py[i]) * (xs - px[i]) >= 0
    return inside


_DRAW = (_circle, _rectangle, _triangle)


def draw_shapes(rng: np.random.Generator, n: int, size: int, max_shapes: int,
                noise: float) -> Arrays:
    """`n` images of 1..max_shapes shapes each: `image` f32[n, size, size, 1] in [0, 1]
    (each shape a grey level in [0.35, 1] on black, plus Gaussian noise of std `noise`,
    clipped) and `mask` i32[n, size, size] (0 background, else the index of the shape's
    class in SHAPE_CLASSES). A later shape covers an earlier one where they overlap.

    The shapes of one image get grey levels from different bands of [0.35, 1] (max_shapes
    bands, shuffled, each level within the middle 80% of its band), so two shapes that
    touch always differ by at least 0.65 / max_shapes * 0.8: where they had the same grey,
    their boundary was invisible and no model could place it."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    image = np.zeros((n, size, size), np.float32)
    mask = np.zeros((n, size, size), np.int32)
    counts = rng.integers(1, max_shapes + 1, n)
    band = 0.65 / max_shapes
    for i in range(n):
        levels = 0.35 + band * (rng.permutation(max_shapes) + rng.uniform(0.1, 0.9, max_shapes))
        for j in range(counts[i]):
            kind = int(rng.integers(len(_DRAW)))
            inside = _DRAW[kind](rng, ys, xs, size)
            image[i][inside] = levels[j]
            mask[i][inside] = kind + 1
    if noise:
        image += noise * rng.standard_normal(image.shape, dtype=np.float32)
        np.clip(image, 0.0, 1.0, out=image)
    return {"image": image[..., None], "mask": mask}


def open_shapes(args: dict, base_dir: Path) -> Source:
    """Images of circles, rectangles and triangles with a per-pixel class mask: a
    segmentation task (see draw_shapes)."""
    size = want_int(args, "size", 8)
    if size > MAX_SHAPES_SIZE:
        raise DataError(f"'size' must be at most {MAX_SHAPES_SIZE}, got {size}", arg="size")
    max_shapes = want_int(args, "max_shapes", 1)
    noise = want_float(args, "noise")
    if noise < 0:
        raise DataError(f"'noise' must be 0 or more, got {noise}", arg="noise")

    def make(rng: np.random.Generator, n: int) -> Arrays:
        return draw_shapes(rng, n, size, max_shapes, noise)

    fields = {"image": Field((size, size, 1), "f32"), "mask": Field((size, size), "i32")}
    info = {"classes": len(SHAPE_CLASSES), "class_names": list(SHAPE_CLASSES)}
    return _generated(args, f"shapes({size})", fields, make, info)
