"""Token sources: `text(path, ...)` (language-model windows) and `parallel(path, ...)`
(sentence pairs for translation). Both build their vocabularies from the data, so
`info` (vocab lists and sizes) loads the file on first access; fields come from the
arguments alone.
"""

from __future__ import annotations

import gettext
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphdl.runtime.data.base import (
    DataError,
    Field,
    Source,
    open_data_file,
    resolve_path,
    split_arrays,
    split_names,
    want_bool,
    want_int,
    want_split,
    want_str,
)

DEFAULT_SPLIT = (0.9, 0.1)
UNK = "<unk>"
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
LEVELS = ("word", "char")
#: Ids 0..3 of each side of a parallel source; 0 is padding so `y != 0` is the mask.
PARALLEL_SPECIALS = (PAD, UNK, BOS, EOS)

# Words, or single punctuation marks, so "end." gives "end" and ".".
_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, level: str, lower: bool) -> list[str]:
    text = text.lower() if lower else text
    return list(text) if level == "char" else _WORD.findall(text)


def build_vocab(counts: Counter, specials: tuple[str, ...], limit: int | None) -> list[str]:
    """specials first, then tokens by falling frequency (ties alphabetical, so the ids
    are the same on every run), `limit` entries in all."""
    ranked = sorted((t for t in counts if t not in specials), key=lambda t: (-counts[t], t))
    keep = None if limit is None else max(limit - len(specials), 0)
    return list(specials) + ranked[:keep]


@dataclass(frozen=True)
class Vocabulary:
    """A token source's ids as text, for the CLI's `--prompt` and `--decode`: `tokens[i]`
    is id i; `level` says how tokens join ('' for 'char', ' ' for 'word')."""

    tokens: tuple[str, ...]
    level: str
    lower: bool

    def encode(self, text: str) -> tuple[np.ndarray, int]:
        """The ids of `text`, tokenized as the source was, and how many of its tokens
        are not in the vocabulary (they become <unk>, as in the source's own data)."""
        tokens = tokenize(text, self.level, self.lower)
        known = set(self.tokens)
        return _encode(tokens, list(self.tokens)), sum(t not in known for t in tokens)

    def decode(self, ids) -> str:
        """Token ids as text: <pad> and <bos> are dropped, <eos> ends the text, <unk> is
        shown as written. Every id must be in range (the caller checks)."""
        words = []
        for i in ids:
            token = self.tokens[int(i)]
            if token == EOS:
                break
            if token not in (PAD, BOS):
                words.append(token)
        return ("" if self.level == "char" else " ").join(words)


def vocabulary(info: dict, side: str) -> Vocabulary | None:
    """The vocabulary of a loaded source's `info` that reads (side 'source': a prompt) or
    writes (side 'target': a graph's output) tokens; None for a source without one. A
    `text` source has one vocabulary; a `parallel` source reads source-language tokens and
    writes target-language ones."""
    key = {"source": "src_vocab", "target": "tgt_vocab"}[side]
    tokens = info.get(key, info.get("vocab"))
    if tokens is None:
        return None
    return Vocabulary(tuple(tokens), info.get("level", "word"), bool(info.get("lower", True)))


def _vocab_limit(args: dict, minimum: int) -> int | None:
    return None if args.get("vocab") is None else want_int(args, "vocab", minimum)


# ---------------------------------------------------------------- text


def open_text(args: dict, base_dir: Path) -> Source:
    """Non-overlapping windows of T + 1 tokens: x = the first T, y = the last T."""
    path = resolve_path(args, "path", base_dir, want_dir=None)
    return language_model_source(args, lambda: read_texts(path), f"text({path.name!r})",
                                 str(path))


def language_model_source(args: dict, read: Callable[[], str], describe: str,
                          corpus: str) -> Source:
    """The windows of `text` over what `read()` returns (called on the first load, so a
    source of a large corpus opens without reading it; `corpus` names it in errors).
    `args` holds T, level, vocab, lower, split and seed; `dataset("shakespeare")` builds
    its windows here too."""
    steps = want_int(args, "T", 1)
    level = want_str(args, "level", LEVELS)
    lower = want_bool(args, "lower")
    limit = _vocab_limit(args, 2)
    fractions, seed = want_split(args) or DEFAULT_SPLIT, want_int(args, "seed", 0)
    names = split_names(len(fractions))

    def load():
        tokens = tokenize(read(), level, lower)
        vocab = build_vocab(Counter(tokens), (UNK,), limit)
        ids = _encode(tokens, vocab)
        count = (len(ids) - 1) // steps
        if count < len(fractions):
            raise DataError(
                f"{corpus} has {len(ids)} tokens, too few for windows of T = {steps}", arg="T"
            )
        rows = np.arange(count)[:, None] * steps + np.arange(steps + 1)
        windows = ids[rows]
        arrays = {"x": windows[:, :-1], "y": windows[:, 1:]}
        info = {"vocab": vocab, "vocab_size": len(vocab), "tokens": len(ids),
                "level": level, "lower": lower}
        return split_arrays(arrays, fractions, seed, names, describe), info

    fields = {"x": Field((steps,), "i32"), "y": Field((steps,), "i32")}
    return Source(fields, names, load, describe=describe, info_needs_load=True)


def text_files(path: Path) -> list[Path]:
    """The files of `path`: itself, or the regular files under a folder, sorted."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{path} holds no files", arg="path")
    return files


def read_texts(path: Path) -> str:
    """The text of a file, or of every file of a folder joined by newlines."""
    # errors="replace": a stray non-UTF-8 byte in a large corpus should cost one token,
    # not the whole run.
    try:
        return "\n".join(read_text_file(p) for p in text_files(path))
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}", arg="path") from err


def read_text_file(path: Path, arg: str = "path") -> str:
    """A data file's text (a regular file only); errors are DataErrors at `arg`."""
    with open_data_file(path, arg) as f:
        return f.read().decode("utf-8", errors="replace")


def _encode(tokens: Iterable[str], vocab: list[str]) -> np.ndarray:
    index = {t: i for i, t in enumerate(vocab)}
    unk = index[UNK]
    return np.fromiter((index.get(t, unk) for t in tokens), np.int32)


# ---------------------------------------------------------------- parallel


def open_parallel(args: dict, base_dir: Path) -> Source:
    """Sentence pairs from a tab-separated file (source<TAB>target[<TAB>ignored...]),
    a gettext catalog (.mo: msgid -> msgstr), or a folder of .mo files. Pairs with more
    than L tokens on either side are dropped (their count is info['dropped'])."""
    # A missing path is reported when the data load, not when the file is checked: the
    # fields come from L alone, and a catalog folder is a system's (Debian's
    # /usr/share/locale/...), so a file with another train block must still check and run
    # where it is absent.
    given = Path(want_str(args, "path")).expanduser()
    full = given if given.is_absolute() else Path(base_dir) / given
    missing = None if full.exists() else DataError(f"no such file or folder: {full}", arg="path")
    path = full if missing else resolve_path(args, "path", base_dir, want_dir=None)
    length = want_int(args, "L", 1)
    lower = want_bool(args, "lower")
    limit = _vocab_limit(args, len(PARALLEL_SPECIALS) + 1)
    fractions, seed = want_split(args) or DEFAULT_SPLIT, want_int(args, "seed", 0)
    names = split_names(len(fractions))
    describe = f"parallel({path.name!r})"

    def load():
        if missing is not None:
            raise missing
        pairs = [
            (tokenize(s, "word", lower), tokenize(t, "word", lower)) for s, t in _read_pairs(path)
        ]
        kept = [(s, t) for s, t in pairs if 0 < len(s) <= length and 0 < len(t) <= length]
        kept, duplicates = _first_per_source(kept)
        if len(kept) < len(fractions):
            raise DataError(f"{path} has {len(kept)} pairs of at most L = {length} tokens", arg="L")
        src_vocab = build_vocab(Counter(w for s, _ in kept for w in s), PARALLEL_SPECIALS, limit)
        tgt_vocab = build_vocab(Counter(w for _, t in kept for w in t), PARALLEL_SPECIALS, limit)
        arrays = _pad_pairs(kept, src_vocab, tgt_vocab, length)
        # each split's sentences as tokenized, before rare words became <unk>: the
        # references `graphdl translate --split` scores against
        rows = split_arrays({"row": np.arange(len(kept))}, fractions, seed, names, describe)
        sentences = {name: [(" ".join(kept[i][0]), " ".join(kept[i][1]))
                            for i in part["row"]] for name, part in rows.items()}
        info = {
            "src_vocab": src_vocab,
            "tgt_vocab": tgt_vocab,
            "src_vocab_size": len(src_vocab),
            "tgt_vocab_size": len(tgt_vocab),
            "pad": 0,
            "bos": PARALLEL_SPECIALS.index(BOS),
            "eos": PARALLEL_SPECIALS.index(EOS),
            "dropped": len(pairs) - len(kept) - duplicates,
            "duplicates": duplicates,
            "level": "word",
            "lower": lower,
            "sentences": sentences,
        }
        return split_arrays(arrays, fractions, seed, names, describe), info

    fields = {
        "x": Field((length,), "i32"),
        "y_in": Field((length + 1,), "i32"),
        "y": Field((length + 1,), "i32"),
        "lengths": Field((), "i32"),
        "y_lengths": Field((), "i32"),
    }
    return Source(fields, names, load, describe=describe, info_needs_load=True)


def _first_per_source(pairs: list) -> tuple[list, int]:
    """The first pair of each source sentence (as tokenized), and how many were left
    out. Done before the split: a sentence that appears twice (the same English string
    in several catalogs, often with different translations) would otherwise land in
    both train and test, and the test split would score memorised sentences."""
    seen: set[tuple[str, ...]] = set()
    first = []
    for src, tgt in pairs:
        key = tuple(src)
        if key not in seen:
            seen.add(key)
            first.append((src, tgt))
    return first, len(pairs) - len(first)


def _pad_pairs(pairs: list, src_vocab: list[str], tgt_vocab: list[str], length: int) -> dict:
    src_index = {t: i for i, t in enumerate(src_vocab)}
    tgt_index = {t: i for i, t in enumerate(tgt_vocab)}
    unk, bos, eos = (PARALLEL_SPECIALS.index(s) for s in (UNK, BOS, EOS))
    x = np.zeros((len(pairs), length), np.int32)
    y_in = np.zeros((len(pairs), length + 1), np.int32)
    y = np.zeros((len(pairs), length + 1), np.int32)
    # the real tokens before the padding: `scan(..., lengths = data.lengths)`
    lengths = np.array([len(src) for src, _ in pairs], np.int32)
    y_lengths = np.array([len(tgt) + 1 for _, tgt in pairs], np.int32)
    for i, (src, tgt) in enumerate(pairs):
        x[i, : len(src)] = [src_index.get(w, unk) for w in src]
        ids = [tgt_index.get(w, unk) for w in tgt]
        y_in[i, : len(ids) + 1] = [bos, *ids]
        y[i, : len(ids) + 1] = [*ids, eos]
    return {"x": x, "y_in": y_in, "y": y, "lengths": lengths, "y_lengths": y_lengths}


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    if path.is_dir():
        catalogs = sorted(p for p in path.glob("*.mo") if p.is_file())
        if not catalogs:
            raise DataError(f"{path} holds no .mo catalogs", arg="path")
        return [pair for mo in catalogs for pair in _mo_pairs(mo, skip_bad=True)]
    if path.suffix == ".mo":
        return _mo_pairs(path, skip_bad=False)
    return _tsv_pairs(path)


def _mo_pairs(path: Path, skip_bad: bool) -> list[tuple[str, str]]:
    # Some system catalogs are not valid UTF-8; in a folder of them one bad file is
    # skipped rather than failing the whole source.
    try:
        with open_data_file(path) as f:
            catalog = gettext.GNUTranslations(f)._catalog  # msgid -> msgstr
    except DataError:
        if skip_bad:
            return []
        raise
    except (OSError, UnicodeDecodeError, ValueError, IndexError, struct.error) as err:
        # a truncated catalog fails inside gettext with struct.error or IndexError
        if skip_bad:
            return []
        why = "not UTF-8" if isinstance(err, UnicodeDecodeError) else "truncated or corrupt"
        raise DataError(f"cannot read the gettext catalog {path}: it is {why}",
                        arg="path") from err
    # plural forms are keyed (msgid, n): skipped; "" is the header; a msgctxt is
    # written "context\x04msgid" and is not part of the sentence
    return [(k.rpartition("\x04")[2], v) for k, v in catalog.items()
            if isinstance(k, str) and k.rpartition("\x04")[2] and v]


def _tsv_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    with open_data_file(path) as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise DataError(f"{path}:{number}: not UTF-8 text", arg="path") from None
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) < 2:
                raise DataError(
                    f"{path}:{number}: expected source<TAB>target, found no tab", arg="path"
                )
            pairs.append((cells[0], cells[1]))
    if not pairs:
        raise DataError(f"{path} holds no source<TAB>target lines", arg="path")
    return pairs
