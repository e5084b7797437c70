"""Shared pieces of the data sources: the error type, fields, the lazy `Source`, and
the helpers every source uses (argument checks, dtype conversion, deterministic splits).

The public names are re-exported by `graphdl.runtime.data`; import them from there.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphdl.dims import numpy_name
from graphdl.errors import GdlError, Span, UserError
from graphdl.reading import FileRefused, open_regular

#: Tolerance on the sum of split fractions (they are written as decimals in a .gdl file).
SPLIT_TOLERANCE = 1e-6

Arrays = dict[str, np.ndarray]
SplitArrays = dict[str, Arrays]


class DataError(Exception):
    """A user error in a data source: a bad argument, a missing or malformed file.

    `message` says what is wrong, `hint` (or None) how to fix it, `arg` names the
    argument of the source call that caused it (or None), so the front end can put the
    caret under that argument rather than under the whole call.
    """

    def __init__(self, message: str, hint: str | None = None, arg: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.arg = arg

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


@dataclass(frozen=True)
class Field:
    """Per-example shape (without the leading N) and GDL dtype ('f32', 'i32', 'bool')."""

    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """A 'did you mean ...?' hint for a misspelt name, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def split_names(count: int) -> tuple[str, ...]:
    """The split names for 2 or 3 fractions."""
    return ("train", "test") if count == 2 else ("train", "val", "test")


@dataclass
class Source:
    """One opened data source.

    `fields` and `splits` are known as soon as the source is opened (from the arguments,
    a file header or a constant), so the checker can bind dims without reading data.
    `load()` produces every split at once; it runs on the first `arrays()` call and its
    result is cached. It may also return facts that need the data (a text vocabulary),
    which are merged into `info`; reading `info` then triggers the load.
    """

    fields: dict[str, Field]
    splits: tuple[str, ...]
    load: Callable[[], tuple[SplitArrays, dict]]
    static_info: dict = field(default_factory=dict)
    describe: str = "data source"
    info_needs_load: bool = False
    _cache: SplitArrays | None = field(default=None, repr=False)
    _loaded_info: dict = field(default_factory=dict, repr=False)
    #: (name, call span, argument spans, .gdl text), set by the front end via `locate`
    _where: tuple | None = field(default=None, repr=False)

    def locate(self, name: str, span: Span, arg_spans: dict[str, Span], text: str) -> None:
        """Where the `data NAME = ...` line is, so that an error found when the data are
        loaded (at train time) is a located diagnostic like one found when opening."""
        self._where = (name, span, dict(arg_spans), text)

    def located(self, err: DataError) -> Exception:
        """`err` as a GdlError at the data line (under the argument at fault), if known."""
        if self._where is None:
            return err
        name, span, arg_spans, text = self._where
        at = arg_spans.get(err.arg, span) if err.arg else span
        diag = UserError(f"data source `{name}`: {err.message}", at, err.hint).diagnostic
        return GdlError([diag], {at.file: text})

    @property
    def info(self) -> dict:
        """Extra facts: {'classes': 10}, {'vocab': [...], 'vocab_size': V}, ..."""
        if self.info_needs_load:
            self._ensure_loaded()
        return {**self.static_info, **self._loaded_info}

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        """The arrays of one split, [N, *field.shape] each, read-only, loaded once."""
        if split not in self.splits:
            raise DataError(
                f"{self.describe} has no split '{split}'; it has {', '.join(self.splits)}",
                hint=did_you_mean(split, self.splits) or _val_hint(split, self.splits),
            )
        return dict(self._ensure_loaded()[split])

    def _ensure_loaded(self) -> SplitArrays:
        if self._cache is None:
            try:
                splits, extra = self.load()
                self._check_loaded(splits)
            except DataError as err:
                raise self.located(err) from None
            self._loaded_info = dict(extra)
            self._cache = splits
        return self._cache

    def _check_loaded(self, splits: SplitArrays) -> None:
        # A file can disagree with its own header (or a download with the expected
        # shape); the checker already trusted `fields`, so a mismatch must stop here.
        for split in self.splits:
            arrays = splits[split]
            sizes = {len(a) for a in arrays.values()}
            if len(sizes) != 1 or 0 in sizes:
                raise DataError(
                    f"{self.describe}: split '{split}' is empty or ragged",
                    hint="give the source more examples, or a larger fraction to this split",
                    arg="split",
                )
            for name, spec in self.fields.items():
                arr = arrays[name]
                if arr.shape[1:] != spec.shape or arr.dtype != np.dtype(numpy_name(spec.dtype)):
                    raise DataError(
                        f"{self.describe}: field '{name}' of split '{split}' is "
                        f"{arr.dtype}{list(arr.shape[1:])}, expected {spec}"
                    )
                arr.flags.writeable = False  # the cache is shared by every caller


def _val_hint(split: str, splits: tuple[str, ...]) -> str | None:
    if split == "val" and "val" not in splits:
        return "give three fractions, e.g. split = [0.7, 0.1, 0.2], for a 'val' split"
    return None


# ---------------------------------------------------------------- argument checks


def want_int(args: dict, name: str, minimum: int | None = None) -> int:
    """`args[name]` as an int (a bool is not accepted), at least `minimum`."""
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"'{name}' must be an integer, got {value!r}", arg=name)
    if minimum is not None and value < minimum:
        raise DataError(f"'{name}' must be at least {minimum}, got {value}", arg=name)
    return int(value)


def want_float(args: dict, name: str, positive: bool = False) -> float:
    """`args[name]` as a float (an int is accepted), > 0 when `positive`."""
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise DataError(f"'{name}' must be a number, got {value!r}", arg=name)
    if positive and not value > 0:
        raise DataError(f"'{name}' must be positive, got {value}", arg=name)
    return float(value)


def want_str(args: dict, name: str, choices: Sequence[str] | None = None) -> str:
    """`args[name]` as a string, one of `choices` when given."""
    value = args[name]
    if not isinstance(value, str):
        raise DataError(f"'{name}' must be a string, got {value!r}", arg=name)
    if choices is not None and value not in choices:
        raise DataError(
            f"'{name}' must be one of {', '.join(map(repr, choices))}, got {value!r}",
            hint=did_you_mean(value, choices),
            arg=name,
        )
    return value


def want_bool(args: dict, name: str) -> bool:
    value = args[name]
    if not isinstance(value, (bool, np.bool_)):
        raise DataError(f"'{name}' must be true or false, got {value!r}", arg=name)
    return bool(value)


def want_split(args: dict, name: str = "split") -> tuple[float, ...] | None:
    """The split fractions: None, or 2 or 3 positive numbers summing to 1."""
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 3):
        raise DataError(
            f"'{name}' must be a list of 2 or 3 fractions, got {value!r}",
            hint="e.g. split = [0.8, 0.2] (train, test) or [0.7, 0.1, 0.2] (train, val, test)",
            arg=name,
        )
    for frac in value:
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise DataError(
                f"each fraction in '{name}' must be a number between 0 and 1, got {frac!r}",
                arg=name,
            )
    total = float(sum(value))
    if abs(total - 1.0) > SPLIT_TOLERANCE:
        raise DataError(
            f"the fractions in '{name}' sum to {total:g}, not 1",
            hint=f"e.g. {name} = [0.8, 0.2] or [0.7, 0.1, 0.2]",
            arg=name,
        )
    return tuple(float(f) for f in value)


def resolve_path(args: dict, name: str, base_dir: Path, want_dir: bool | None = False) -> Path:
    """`args[name]` relative to the .gdl file's folder; it must exist and be a folder
    (want_dir True), a file (False) or either (None)."""
    path = Path(want_str(args, name)).expanduser()
    full = path if path.is_absolute() else Path(base_dir) / path
    kind = {True: "folder", False: "file", None: "file or folder"}[want_dir]
    if not full.exists():
        raise DataError(f"no such {kind}: {full}", arg=name)
    if want_dir is not None and want_dir != full.is_dir():
        raise DataError(f"{full} is not a {kind}", arg=name)
    if not full.is_dir() and not full.is_file():  # /dev/zero, a FIFO, /dev/stdin
        raise DataError(f"{full} is not a regular file (a device, pipe or socket)", arg=name)
    return full


def open_data_file(path: Path, arg: str = "path"):
    """A binary file object for a data file: regular files only (never blocks)."""
    try:
        return open_regular(path)
    except FileRefused as err:
        raise DataError(f"{path} {err.reason}", arg=arg) from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}", arg=arg) from None


# ---------------------------------------------------------------- arrays


def to_gdl(arr: np.ndarray, what: str, arg: str | None = None) -> np.ndarray:
    """Cast an array to the dtype GDL uses for its kind: float->f32, int->i32, bool."""
    dtype = gdl_dtype(arr.dtype, what, arg)
    if dtype == "i32":
        _check_int32_range(arr, what, arg)
    return arr.astype(numpy_name(dtype), copy=False)


def gdl_dtype(dtype: np.dtype, what: str, arg: str | None = None) -> str:
    """The GDL dtype an array of numpy `dtype` becomes; DataError for strings, objects..."""
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.integer):
        return "i32"
    if np.issubdtype(dtype, np.floating):
        return "f32"
    raise DataError(f"{what} has dtype {dtype}, which is not a number or bool", arg=arg)


def _check_int32_range(arr: np.ndarray, what: str, arg: str | None) -> None:
    # int64 -> int32 would silently wrap large values (ids, timestamps); refuse instead.
    if arr.size and arr.dtype.itemsize >= 4:
        lo, hi = int(arr.min()), int(arr.max())
        info = np.iinfo(np.int32)
        if lo < info.min or hi > info.max:
            raise DataError(f"{what} holds integers outside int32's range ({lo}..{hi})", arg=arg)


def field_of(arr: np.ndarray) -> Field:
    return Field(tuple(int(d) for d in arr.shape[1:]), gdl_dtype(arr.dtype, "array"))


def permutation(n: int, seed: int) -> np.ndarray:
    """The deterministic example order a split uses for `seed`."""
    return np.random.default_rng(seed).permutation(n)


def split_sizes(n: int, fractions: Sequence[float], describe: str) -> list[int]:
    """Example counts per split; cumulative rounding so they always add up to n."""
    bounds = [0] + [round(n * f) for f in np.cumsum(fractions)[:-1]] + [n]
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    if min(sizes) <= 0:
        raise DataError(
            f"split {list(fractions)} leaves a split of {describe} empty ({n} examples)",
            arg="split",
        )
    return sizes


def split_arrays(
    arrays: Arrays, fractions: Sequence[float], seed: int, names: Sequence[str], describe: str
) -> SplitArrays:
    """Shuffle the examples with `seed` and cut them into the named splits."""
    n = len(next(iter(arrays.values())))
    order = permutation(n, seed)
    out: SplitArrays = {}
    start = 0
    for name, size in zip(names, split_sizes(n, fractions, describe)):
        idx = order[start : start + size]
        out[name] = {k: v[idx] for k, v in arrays.items()}
        start += size
    return out


def own_split_names(fractions: tuple[float, ...] | None, describe: str) -> tuple[str, ...]:
    """Splits of a source that has its own train/test split: a `split` of two fractions
    carves a validation set out of train; three fractions would contradict its test set."""
    if fractions is None:
        return ("train", "test")
    if len(fractions) == 3:
        raise DataError(
            f"{describe} has its own test split, so 'split' takes two fractions "
            "that divide its training data into train and val",
            hint="e.g. split = [0.9, 0.1]",
            arg="split",
        )
    return ("train", "val", "test")


def carve_val(
    own: SplitArrays, fractions: tuple[float, ...] | None, seed: int, describe: str
) -> SplitArrays:
    """Apply `own_split_names`' rule: keep test, cut train into train/val with `seed`."""
    if fractions is None:
        return own
    parts = split_arrays(own["train"], fractions, seed, ("train", "val"), describe)
    return {**parts, "test": own["test"]}


def standardize(splits: SplitArrays, key: str = "x") -> SplitArrays:
    """Scale features with the training split's mean and std (no test-set leakage)."""
    mean = splits["train"][key].mean(axis=0)
    std = splits["train"][key].std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant column stays finite
    for arrays in splits.values():
        arrays[key] = ((arrays[key] - mean) / std).astype(np.float32)
    return splits
