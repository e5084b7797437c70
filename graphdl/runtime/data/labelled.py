"""`labelled_text(path | corpus, ...)`: windows of T words, each labelled with the class of
the document it comes from — which genre a passage of a play belongs to.

A `path` is a folder whose subfolders are the classes (Keras' `text_dataset_from_directory`
layout), each file a document; `corpus = "shakespeare"` is the plays by the First
Folio's genres (comedy, history, tragedy; graphdl/runtime/data/shakespeare.py).

The split is by document, within each class: a class's documents are shuffled with
`seed` and cut by the `split` fractions, so every split has documents of every class and
a test window comes from a document no training window came from. The vocabulary is
built from the training documents alone (`text`'s rules: `<unk>` is id 0, then by falling
frequency, ties alphabetical; `vocab = N` keeps N entries), so a held-out document shapes
nothing the model sees. Each document is cut into non-overlapping windows of T tokens
(`text`'s word tokens, punctuation included; the remainder is dropped); `n_train` keeps a
random subset of that many training windows (drawn with `seed`), for a small labelled set.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from graphdl.runtime.data.base import (
    DataError,
    Field,
    Source,
    split_names,
    want_bool,
    want_int,
    want_split,
)
from graphdl.runtime.data.corpora import corpus_documents
from graphdl.runtime.data.text import UNK, build_vocab, tokenize

DEFAULT_SPLIT = (0.75, 0.25)


def open_labelled_text(args: dict, base_dir: Path) -> Source:
    """Examples `x: i32[T]` (token ids) and `y: i32` (the class's index, classes sorted
    by name)."""
    read, corpus = corpus_documents(args, base_dir)
    steps = want_int(args, "T", 1)
    lower = want_bool(args, "lower")
    limit = None if args.get("vocab") is None else want_int(args, "vocab", 2)
    n_train = None if args.get("n_train") is None else want_int(args, "n_train", 1)
    fractions, seed = want_split(args) or DEFAULT_SPLIT, want_int(args, "seed", 0)
    names = split_names(len(fractions))
    describe = f"labelled_text({corpus})"

    def load():
        docs = [(name, label, tokenize(text, "word", lower)) for name, label, text in read()]
        classes = sorted({label for _, label, _ in docs})
        parts = split_documents(docs, classes, fractions, seed, corpus)
        vocab = build_vocab(Counter(t for _, _, tokens in parts[0] for t in tokens), (UNK,),
                            limit)
        index = {t: i for i, t in enumerate(vocab)}
        splits = {}
        for split, part in zip(names, parts):
            x, y = _windows(part, classes, index, steps)
            if len(x) == 0:
                raise DataError(f"the {split} documents of {corpus} have no window of "
                                f"T = {steps} tokens", arg="T")
            if split == "train" and n_train is not None and n_train < len(x):
                keep = np.sort(np.random.default_rng([seed, 1]).choice(len(x), n_train,
                                                                      replace=False))
                x, y = x[keep], y[keep]
            splits[split] = {"x": x, "y": y}
        info = {"vocab": vocab, "vocab_size": len(vocab), "classes": len(classes),
                "class_names": classes, "level": "word", "lower": lower,
                "documents": {s: [name for name, _, _ in p] for s, p in zip(names, parts)}}
        return splits, info

    fields = {"x": Field((steps,), "i32"), "y": Field((), "i32")}
    return Source(fields, names, load, describe=describe, info_needs_load=True)


def split_documents(docs: list, classes: list[str], fractions: tuple[float, ...], seed: int,
                    corpus: str) -> list[list]:
    """Each class's documents shuffled with `seed` and cut by `fractions` (cumulative
    rounding), every split getting at least one document of every class."""
    parts: list[list] = [[] for _ in fractions]
    for label in classes:
        mine = [d for d in docs if d[1] == label]
        if len(mine) < len(fractions):
            raise DataError(
                f"class '{label}' of {corpus} has {len(mine)} document(s), too few for "
                f"{len(fractions)} splits by document", hint="give each class more files",
                arg="split")
        order = np.random.default_rng([seed, classes.index(label)]).permutation(len(mine))
        bounds = np.round(np.cumsum((0.0, *fractions)) * len(mine)).astype(int)
        # at least one document in each split: move bounds apart where rounding met
        for i in range(1, len(bounds) - 1):
            bounds[i] = max(bounds[i], bounds[i - 1] + 1)
        for i in range(len(bounds) - 2, 0, -1):
            bounds[i] = min(bounds[i], bounds[i + 1] - 1)
        for i, part in enumerate(parts):
            part += [mine[j] for j in order[bounds[i]: bounds[i + 1]]]
    return parts


def _windows(docs: list, classes: list[str], index: dict[str, int],
             steps: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for _, label, tokens in docs:
        ids = np.fromiter((index.get(t, 0) for t in tokens), np.int32, len(tokens))
        count = len(ids) // steps
        xs.append(ids[: count * steps].reshape(count, steps))
        ys.append(np.full(count, classes.index(label), np.int32))
    return np.concatenate(xs), np.concatenate(ys)
