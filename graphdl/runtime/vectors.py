"""Word vectors in files: reading and writing them, and filling an embedding table from
them by token (`param E: f32[V, D] = vectors("w2v.txt", corpus)`).

Two formats, told apart by the file name:

- `*.safetensors`: a float tensor `vectors` of shape [N, D], and the N tokens, row by
  row, as a JSON list of strings in the file's metadata under `tokens`.
- anything else: the word2vec text format, UTF-8: a header line `N D`, then N lines
  `token v1 ... vD` separated by spaces. A file whose first line is not two values, the
  first a whole number, is read as GloVe's headerless variant (D is the first row's
  count).

Errors are `VectorFileError`s that name the file (and the line) but never quote what is
in it; the caller locates them at the `param` line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from graphdl.errors import GdlError, Span, UserError
from graphdl.reading import FileRefused, open_regular
from graphdl.runtime.data import Source, vocabulary
from graphdl.runtime.data.files import is_number
from graphdl.runtime.writing import OutputError, atomic_write

#: The safetensors convention: the table's tensor name and the metadata key of its tokens.
TENSOR_KEY, TOKENS_KEY = "vectors", "tokens"
#: The largest vectors file read (GoogleNews' 3 million words in text are ~3.6 GB).
MAX_VECTOR_BYTES = 8 * 1024**3
_WITH_VOCABULARY = 'a text(...), parallel(...) or dataset("shakespeare") source'


class VectorFileError(Exception):
    """A vectors file that cannot be used: what is wrong, in a sentence, and how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class WordVectors:
    """`matrix[i]` (float32) is the vector of `tokens[i]`."""

    tokens: tuple[str, ...]
    matrix: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def read_vectors(path: Path) -> WordVectors:
    """The vectors in `path`, by its format (see the module's docstring)."""
    if not os.path.lexists(path):
        raise VectorFileError(
            f"cannot find the file {path.name} ({path})",
            hint="a vectors file is written by a trained model: `graphdl vectors FILE --param "
                 "NAME --data SRC --to PATH`; a path in a .gdl file is relative to that file")
    return _read_safetensors(path) if is_safetensors(path) else _read_text(path)


def _read_text(path: Path) -> WordVectors:
    name = path.name
    try:
        handle = open_regular(path, MAX_VECTOR_BYTES)
    except FileRefused as err:
        raise VectorFileError(f"{name} {err.reason}") from None
    except OSError as err:
        raise VectorFileError(f"cannot read {name}: {err.strerror or err}") from None
    tokens: list[str] = []
    rows: list[np.ndarray] = []
    declared: int | None = None
    dim: int | None = None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise VectorFileError(
                    f"{name}:{number}: not UTF-8 text",
                    hint="graphdl reads the word2vec text format; convert a binary word2vec "
                         "file to text first") from None
            parts = line.split(" ")
            if parts and parts[-1] == "":  # a trailing space, as some writers leave
                parts.pop()
            if number == 1 and len(parts) == 2 and parts[0].isdigit():  # a header `N D`
                if not parts[1].isdigit():
                    raise VectorFileError(f"{name}:1: the header `N D` must be two whole "
                                          "numbers (how many vectors, and their length)")
                declared, dim = int(parts[0]), int(parts[1])
                if declared == 0 or dim == 0:
                    raise VectorFileError(f"{name}:1: the header says {declared} vectors of "
                                          f"{dim} numbers; a vectors file holds at least one")
                continue
            if not line.strip():
                raise VectorFileError(f"{name}:{number}: an empty line",
                                      hint="each line is a token and its numbers")
            if dim is None:
                if len(parts) < 2:
                    raise VectorFileError(
                        f"{name}:1: expected a header `N D` or a token and its numbers",
                        hint="the word2vec text format starts with the line `N D`")
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise VectorFileError(f"{name}:{number}: expected a token and {dim} numbers, "
                                      f"found {len(parts) - 1} values after the token")
            rows.append(_numbers(parts[1:], name, number))
            tokens.append(parts[0])
    if dim is None:
        raise VectorFileError(f"{name} is empty", hint="a vectors file holds `N D`, then N "
                                                       "lines `token v1 ... vD`")
    if declared is not None and declared != len(rows):
        raise VectorFileError(f"{name} has {len(rows):,} vectors after its header, but the "
                              f"header says {declared:,}")
    if not rows:
        raise VectorFileError(f"{name} holds no vectors after its header")
    return WordVectors(tuple(tokens), np.stack(rows))


def _numbers(values: list[str], name: str, number: int) -> np.ndarray:
    try:
        row = np.array([float(v) for v in values], np.float32)
    except ValueError:
        bad = next(i for i, v in enumerate(values, 1) if not is_number(v))
        raise VectorFileError(f"{name}:{number}: value {bad} is not a number") from None
    if not np.all(np.isfinite(row)):
        bad = int(np.argmin(np.isfinite(row))) + 1
        raise VectorFileError(f"{name}:{number}: value {bad} is not a finite number (or too "
                              "large for f32)")
    return row


def _read_safetensors(path: Path) -> WordVectors:
    name = path.name
    convention = (f'a float tensor "{TENSOR_KEY}" [N, D] and its N tokens as a JSON list '
                  f'in the metadata key "{TOKENS_KEY}"')
    try:
        open_regular(path, MAX_VECTOR_BYTES).close()
        with safetensors.safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            if TENSOR_KEY not in keys:
                raise VectorFileError(f"{name} has no tensor {TENSOR_KEY!r}; it has "
                                      f"{', '.join(sorted(keys)) or 'none'}",
                                      hint=f"a vectors file in safetensors holds {convention}")
            matrix = f.get_tensor(TENSOR_KEY)
    except FileRefused as err:
        raise VectorFileError(f"{name} {err.reason}") from None
    except OSError as err:
        raise VectorFileError(f"cannot read {name}: {err.strerror or err}") from None
    except VectorFileError:
        raise
    except Exception as err:  # safetensors' own error: a file that is not one
        raise VectorFileError(f"{name} is not a safetensors file ({type(err).__name__})") \
            from None
    if matrix.ndim != 2 or matrix.dtype.kind != "f" or 0 in matrix.shape:
        raise VectorFileError(f"the tensor {TENSOR_KEY!r} of {name} is {matrix.dtype} of shape "
                              f"{matrix.shape}, not a non-empty float [N, D]")
    try:
        tokens = json.loads(meta[TOKENS_KEY])
    except (KeyError, ValueError):
        raise VectorFileError(f"{name} has no JSON list of tokens in its metadata key "
                              f"{TOKENS_KEY!r}", hint=f"a vectors file in safetensors holds "
                                                      f"{convention}") from None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise VectorFileError(f"the metadata {TOKENS_KEY!r} of {name} is not a list of strings")
    if len(tokens) != len(matrix):
        raise VectorFileError(f"{name} has {len(tokens):,} tokens but {len(matrix):,} vectors")
    matrix = np.asarray(matrix, np.float32)
    if not np.all(np.isfinite(matrix)):
        row = int(np.argmin(np.all(np.isfinite(matrix), axis=1)))
        raise VectorFileError(f"row {row} of {name} holds a value that is not a finite number")
    return WordVectors(tuple(tokens), matrix)


def write_vectors(path: Path, tokens: Sequence[str], matrix: np.ndarray) -> int:
    """Write `matrix[i]` as the vector of `tokens[i]`, in the format `path`'s name says
    (atomically); returns how many rows were written. The text format cannot hold a
    token with whitespace (a character vocabulary's space): those rows are left out."""
    matrix = np.asarray(matrix, np.float32)
    if is_safetensors(path):
        blob = safetensors.numpy.save({TENSOR_KEY: np.ascontiguousarray(matrix)},
                                      metadata={TOKENS_KEY: json.dumps(list(tokens))})
        atomic_write(path, lambda f: f.write(blob))
        return len(tokens)
    keep = [i for i, t in enumerate(tokens) if t and not any(c.isspace() for c in t)]
    lines = [f"{len(keep)} {matrix.shape[1]}\n"]
    # str of an f32 is its shortest round-trip decimal: the file loads back bit for bit
    lines += [tokens[i] + " " + " ".join(str(v) for v in matrix[i]) + "\n"
              for i in keep]
    data = "".join(lines).encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
    return len(keep)


def match_rows(tokens: Sequence[str], vectors: WordVectors, lower: bool) -> np.ndarray:
    """For each token, the row of the file that holds its vector, or -1. When the source
    lowercases its text, a token the file lacks as written takes the file's first
    (most frequent, in a word2vec file) spelling that lowercases to it ("King")."""
    index: dict[str, int] = {}
    for i, t in enumerate(vectors.tokens):
        index.setdefault(t, i)
    folded: dict[str, int] = {}
    if lower:
        for i, t in enumerate(vectors.tokens):
            folded.setdefault(t.lower(), i)
    return np.array([index.get(t, folded.get(t, -1)) for t in tokens], np.int64)


def fill_vectors(params: dict, specs: Mapping[str, dict], sources: Mapping[str, Source],
                 main_file: tuple[str, str] | None = None) -> list[str]:
    """Put the file's vectors into each `vectors(...)` parameter of `params` (which holds
    unit-normal draws there, see graphdl.lower.init): row i gets the vector of the
    corpus's token i; a token the file lacks keeps its draw, scaled by the std of the
    file's vectors. Returns one line per parameter saying how many were found.
    `main_file`: (path, text) of the .gdl file, to show the `param` line of an error."""
    notes = []
    for name, spec in specs.items():
        init = spec["init"]
        if spec["kind"] != "param" or init[0] != "vectors":
            continue
        _, path, corpus, side = init
        span = spec["span"]
        try:
            value, found = _filled(np.asarray(params[name]), spec, Path(path),
                                   sources, corpus, side, name)
        except VectorFileError as err:
            raise _located(f"cannot initialise `{name}`: {err.message}", span, err.hint,
                           main_file) from None
        params[name] = value.astype(params[name].dtype)
        rows, file = len(value), Path(path).name
        notes.append(f"{name}: {found:,} of {rows:,} tokens found in {file} "
                     f"({rows - found:,} start random)")
    return notes


def _filled(draws: np.ndarray, spec: dict, path: Path, sources: Mapping[str, Source],
            corpus: str, side: str, name: str) -> tuple[np.ndarray, int]:
    rows, dim = draws.shape
    source = sources.get(corpus)
    if source is None:
        raise VectorFileError(f"the data source `{corpus}` is not open")
    vocab = vocabulary(source.info, side)  # loads the data; its errors are located
    if vocab is None:
        raise VectorFileError(f"`{corpus}` ({source.describe}) has no vocabulary to match "
                              "the rows by token", hint=f"vectors() takes {_WITH_VOCABULARY}")
    vectors = read_vectors(path)
    if vectors.dim != dim:
        raise VectorFileError(f"{path.name} has {vectors.dim}-dim vectors, but {name} is "
                              f"{spec['type']}", hint=f"declare {name} with {vectors.dim} "
                                                      "columns, or use a file of "
                                                      f"{dim}-dim vectors")
    if len(vocab.tokens) != rows:
        raise VectorFileError(f"the vocabulary of {corpus} has {len(vocab.tokens):,} tokens, "
                              f"but {name} has {rows:,} rows",
                              hint=f"make the table's first dim {len(vocab.tokens)}, or give "
                                   f"the source vocab = {rows}")
    at = match_rows(vocab.tokens, vectors, vocab.lower)
    found = at >= 0
    std = float(vectors.matrix.std())
    value = draws.astype(np.float32) * (std if math.isfinite(std) else 1.0)
    value[found] = vectors.matrix[at[found]]
    return value, int(found.sum())


def _located(message: str, span: Span, hint: str | None,
             main_file: tuple[str, str] | None) -> GdlError:
    diag = UserError(message, span, hint).diagnostic
    text = {main_file[0]: main_file[1]} if main_file and span and span.file == main_file[0] \
        else {}
    return GdlError([diag], text)


__all__ = ["MAX_VECTOR_BYTES", "TENSOR_KEY", "TOKENS_KEY", "OutputError", "VectorFileError",
           "WordVectors", "fill_vectors", "is_safetensors", "match_rows", "read_vectors",
           "write_vectors"]
