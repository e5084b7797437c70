"""`skipgram(path | corpus, ...)`: (center, context, negatives) examples for word2vec's
skip-gram with negative sampling (Mikolov et al. 2013), drawn from a text.

The corpus is tokenized as `text` does at `level = "word"` (punctuation marks are left
out: word2vec's contexts are words), and its vocabulary is `text`'s: id 0 is `<unk>`,
then the words by falling frequency, ties alphabetical. Words outside the vocabulary
(past `vocab`, or seen fewer than `min_count` times) are dropped from the stream before
the windows are cut, as word2vec drops them, so `<unk>` is never a center, context or
negative. Then, per pass over the corpus, with a generator seeded by (seed, pass):

1. subsampling: each occurrence of a word of frequency f (its share of the kept tokens)
   is kept with probability min(1, (sqrt(f / t) + 1) * t / f), t = `subsample` (the
   formula of word2vec.c, which gensim uses too); `subsample = 0` keeps every word;
2. a dynamic window: each center draws a reach b uniformly from 1..`window` and pairs
   with the words up to b places before and after it in the subsampled stream (so a
   word d places away is a context with probability (window - d + 1) / window);
3. `negatives` words per pair, drawn from the unigram distribution raised to 3/4
   (the raw counts of the vocabulary's words, `<unk>` excluded).

`passes = N` stacks N such passes, each with its own subsampling, windows and
negatives, so that one epoch over the examples sees fresh negatives every pass; the
examples of a pass are fixed once the data are loaded (an epoch of a run with
`epochs > 1` sees the same negatives again). The pairs are shuffled into the splits
with `seed`, so the test split is a held-out sample of pairs, not held-out text.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from graphdl.runtime.data.base import (
    DataError,
    Field,
    Source,
    split_arrays,
    split_names,
    want_bool,
    want_float,
    want_int,
    want_split,
)
from graphdl.runtime.data.corpora import corpus_text
from graphdl.runtime.data.text import UNK, build_vocab, tokenize

DEFAULT_SPLIT = (0.95, 0.05)
#: Limits that keep a mistyped argument from asking for a huge array.
MAX_WINDOW = 100
MAX_NEGATIVES = 100
MAX_PASSES = 100
#: The most examples (pairs) one source holds, over all its passes.
MAX_PAIRS = 100_000_000
#: word2vec's exponent of the unigram counts for negative sampling.
UNIGRAM_POWER = 0.75


def open_skipgram(args: dict, base_dir: Path) -> Source:
    """Examples `center: i32`, `context: i32`, `negatives: i32[negatives]`."""
    read, corpus = corpus_text(args, base_dir)
    window = _bounded_int(args, "window", 1, MAX_WINDOW)
    negatives = _bounded_int(args, "negatives", 1, MAX_NEGATIVES)
    passes = _bounded_int(args, "passes", 1, MAX_PASSES)
    min_count = want_int(args, "min_count", 1)
    limit = None if args.get("vocab") is None else want_int(args, "vocab", 2)
    threshold = want_float(args, "subsample")
    if threshold < 0:
        raise DataError(f"'subsample' must be 0 (off) or positive, got {threshold}",
                        arg="subsample")
    lower = want_bool(args, "lower")
    fractions, seed = want_split(args) or DEFAULT_SPLIT, want_int(args, "seed", 0)
    names = split_names(len(fractions))
    describe = f"skipgram({corpus})" if args.get("corpus") else f"skipgram({Path(corpus).name!r})"

    def load():
        words = [t for t in tokenize(read(), "word", lower) if _is_word(t)]
        vocab, counts = word_vocab(Counter(words), limit, min_count)
        index = {t: i for i, t in enumerate(vocab)}
        ids = np.fromiter((index.get(t, 0) for t in words), np.int32, len(words))
        ids = ids[ids != 0]  # out-of-vocabulary words leave the stream
        if len(ids) < 2:
            raise DataError(f"{corpus} has {len(ids)} words in the vocabulary; skip-gram "
                            "pairs need at least 2", hint="lower min_count", arg="min_count")
        parts = [
            skipgram_examples(ids, counts, window, negatives, threshold,
                              np.random.default_rng([seed, p]))
            for p in range(passes)
        ]
        arrays = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        if len(arrays["center"]) > MAX_PAIRS:
            raise DataError(f"{corpus} gives {len(arrays['center'])} pairs, more than the "
                            f"limit of {MAX_PAIRS}", hint="lower passes or window",
                            arg="passes")
        if len(arrays["center"]) < len(fractions):
            raise DataError(f"{corpus} gives {len(arrays['center'])} pairs, too few to split",
                            hint="lower subsample or min_count", arg="subsample")
        info = {"vocab": vocab, "vocab_size": len(vocab), "counts": counts.tolist(),
                "tokens": int(len(ids)), "pairs": int(len(arrays["center"])),
                "level": "word", "lower": lower}
        return split_arrays(arrays, fractions, seed, names, describe), info

    fields = {"center": Field((), "i32"), "context": Field((), "i32"),
              "negatives": Field((negatives,), "i32")}
    return Source(fields, names, load, describe=describe, info_needs_load=True)


def _bounded_int(args: dict, name: str, low: int, high: int) -> int:
    value = want_int(args, name, low)
    if value > high:
        raise DataError(f"'{name}' must be at most {high}, got {value}", arg=name)
    return value


def _is_word(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"


def word_vocab(counts: Counter, limit: int | None, min_count: int) -> tuple[list[str], np.ndarray]:
    """`text`'s vocabulary (`<unk>` first, then by falling count, ties alphabetical) of
    the words seen at least `min_count` times, `limit` entries in all; and each entry's
    count (0 for `<unk>`)."""
    vocab = build_vocab(Counter({t: c for t, c in counts.items() if c >= min_count}),
                        (UNK,), limit)
    return vocab, np.array([0] + [counts[t] for t in vocab[1:]], np.int64)


def keep_probability(counts: np.ndarray, threshold: float) -> np.ndarray:
    """word2vec's chance of keeping an occurrence of each word: min(1, (sqrt(f / t) + 1)
    * t / f) with f the word's share of all counted tokens; 1 everywhere when t is 0."""
    if threshold <= 0:
        return np.ones(len(counts))
    freq = counts / max(counts.sum(), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (np.sqrt(freq / threshold) + 1) * threshold / freq
    return np.where(freq > 0, np.minimum(keep, 1.0), 1.0)


def negative_distribution(counts: np.ndarray) -> np.ndarray:
    """The probabilities of drawing each id as a negative: count^0.75, normalized."""
    weights = counts.astype(np.float64) ** UNIGRAM_POWER
    return weights / weights.sum()


def skipgram_examples(ids: np.ndarray, counts: np.ndarray, window: int, negatives: int,
                      threshold: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One pass: subsample `ids`, pair each center with its dynamic window, draw the
    negatives. `counts[i]` is id i's count in the corpus."""
    kept = ids[rng.random(len(ids)) < keep_probability(counts, threshold)[ids]]
    n = len(kept)
    reach = rng.integers(1, window + 1, size=n)
    centers, contexts = [], []
    for d in range(1, min(window, n - 1) + 1):
        ahead = np.nonzero(reach[: n - d] >= d)[0]  # center i pairs with i + d
        behind = np.nonzero(reach[d:] >= d)[0] + d  # center i pairs with i - d
        centers += [kept[ahead], kept[behind]]
        contexts += [kept[ahead + d], kept[behind - d]]
    center = np.concatenate(centers) if centers else np.zeros(0, np.int32)
    context = np.concatenate(contexts) if contexts else np.zeros(0, np.int32)
    cumulative = np.cumsum(negative_distribution(counts))
    draws = np.searchsorted(cumulative, rng.random((len(center), negatives)) * cumulative[-1],
                            side="right")
    negative = np.minimum(draws, len(counts) - 1)  # rounding at the top end
    return {"center": center.astype(np.int32), "context": context.astype(np.int32),
            "negatives": negative.astype(np.int32)}
