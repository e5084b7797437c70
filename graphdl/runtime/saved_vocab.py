"""The vocabularies a run trained on, kept beside its checkpoint.

A token source builds its vocabulary from its data, so the same `data` line over an
edited file gives other ids to other words. A run therefore writes the vocabulary of
each source it reads tokens from (its batches, its evaluations, a `vectors(...)`
corpus) to `OUT/checkpoint/vocab/<source>.json`, and every later use of the checkpoint
reads it: `--resume` and `--eval` refuse data whose vocabulary differs (the trained ids
would mean other words), and `--decode` / `--prompt` / `graphdl vectors` take the saved
one without loading the data.

The file is the part of the source's `info` that `graphdl.runtime.data.vocabulary`
reads: `vocab` (or `src_vocab` and `tgt_vocab`), `level` and `lower`. Nothing here
imports JAX.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from graphdl.reading import FileRefused, read_regular
from graphdl.runtime.data import DataError, Source, Vocabulary, vocabulary
from graphdl.runtime.writing import OutputError, atomic_write, refuse_symlink

#: The keys of a source's info that are token lists, and those that say how text is split.
TOKEN_KEYS = ("vocab", "src_vocab", "tgt_vocab")
FORM_KEYS = ("level", "lower")
#: The largest saved vocabulary read back (a 3-million-word vocabulary is ~40 MB).
MAX_VOCAB_BYTES = 256 * 1024 * 1024


class SavedVocabError(Exception):
    """A saved vocabulary that cannot be read (damaged, or not graphdl's)."""


def vocab_folder(out: Path) -> Path:
    return Path(out) / "checkpoint" / "vocab"


def vocab_file(out: Path, source: str) -> Path:
    return vocab_folder(out) / f"{source}.json"


def vocab_info(info: Mapping) -> dict | None:
    """What of a source's `info` is saved: its token lists and how it tokenizes; None
    for a source without a vocabulary."""
    saved = {k: list(info[k]) for k in TOKEN_KEYS if info.get(k) is not None}
    if not saved:
        return None
    saved.update({k: info[k] for k in FORM_KEYS if k in info})
    return saved


def save_vocabularies(out: Path, sources: Mapping[str, Source], names: Iterable[str],
                      fresh: bool) -> list[str]:
    """Write the vocabulary of each source `names` holds that has one (atomically); with
    `fresh` (a new run, not a resumed one) remove the files of sources an earlier run in
    this folder had. Returns the names written. Raises OutputError."""
    folder = vocab_folder(out)
    written = []
    for name in dict.fromkeys(names):
        saved = vocab_info(sources[name].info)
        if saved is None:
            continue
        if not written:
            refuse_symlink(folder)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputError(f"cannot write into {folder}: {err.strerror or err}") from None
        data = json.dumps(saved, ensure_ascii=False).encode("utf-8")
        atomic_write(vocab_file(out, name), lambda f, data=data: f.write(data))
        written.append(name)
    if fresh and folder.is_dir():
        for old in folder.glob("*.json"):
            if old.stem not in written and old.is_file() and not old.is_symlink():
                old.unlink(missing_ok=True)
    return written


def saved_vocabulary(out: Path, source: str) -> dict | None:
    """The vocabulary of `source` saved in the run folder `out`, or None when the run
    saved none (a checkpoint from before vocabularies were saved, or a source without
    one). Raises SavedVocabError for a file that is not a saved vocabulary."""
    path = vocab_file(out, source)
    if not path.exists():
        return None
    try:
        saved = json.loads(read_regular(path, MAX_VOCAB_BYTES).decode("utf-8"))
    except FileRefused as err:
        raise SavedVocabError(f"{path} {err.reason}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) else "not a JSON file"
        raise SavedVocabError(f"cannot read the saved vocabulary {path}: {why}") from None
    if not isinstance(saved, dict) or not any(
            isinstance(saved.get(k), list) and all(isinstance(t, str) for t in saved[k])
            for k in TOKEN_KEYS):
        raise SavedVocabError(f"{path} is not a saved vocabulary (no token list)")
    return saved


def run_vocabulary(source: Source, name: str, side: str, out: Path | None) -> Vocabulary | None:
    """The vocabulary of the source `name` as a trained model uses it: the one saved in
    the run folder `out` when there is one, else the one the data give (loading them;
    None for a source without one). Raises SavedVocabError for a damaged saved file."""
    if out is not None:
        saved = saved_vocabulary(Path(out), name)
        if saved is not None:
            found = vocabulary(saved, side)
            if found is not None:
                return found
    if not source.info_needs_load:  # no vocabulary without loading: don't load for nothing
        return None
    return vocabulary(source.info, side)  # loads the data: errors are located at its line


def vocab_difference(now: Mapping, saved: Mapping) -> str | None:
    """How the vocabulary the data give now differs from the saved one, said without
    quoting any token; None when they are the same."""
    for key in TOKEN_KEYS:
        a, b = now.get(key), saved.get(key)
        if a == b:
            continue
        if a is None or b is None:
            return f"one has `{key}` and the other not"
        side = {"src_vocab": "source-language ", "tgt_vocab": "target-language "}.get(key, "")
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return (f"its {side}vocabulary has {len(a):,} tokens now and {len(b):,} in the saved "
                f"one; they first differ at id {first}")
    for key in FORM_KEYS:
        if now.get(key) != saved.get(key):
            return f"it is tokenized differently now ({key} = {now.get(key)!r}, saved " \
                   f"{saved.get(key)!r})"
    return None


def check_vocabularies(out: Path, sources: Mapping[str, Source], names: Iterable[str],
                       use: str) -> None:
    """The data of each source in `names` must give the vocabulary saved with the
    checkpoint in `out` (`use`: "--resume", "--eval"); a difference is an error at the
    source's `data` line (a GdlError there, or a DataError when it is not located)."""
    for name in dict.fromkeys(names):
        try:
            saved = saved_vocabulary(out, name)
        except SavedVocabError as err:
            raise sources[name].located(DataError(str(err))) from None
        if saved is None:
            continue
        now = vocab_info(sources[name].info) or {}
        problem = vocab_difference(now, saved)
        if problem:
            raise sources[name].located(DataError(
                f"{use}: the data no longer give the vocabulary the checkpoint was trained "
                f"with ({vocab_file(out, name)}): {problem}",
                hint="the trained ids would mean other words; restore the data the run was "
                     "trained on, or train afresh with --overwrite")) from None


__all__ = ["MAX_VOCAB_BYTES", "SavedVocabError", "check_vocabularies", "run_vocabulary",
           "save_vocabularies", "saved_vocabulary", "vocab_difference", "vocab_file", "vocab_folder", "vocab_info"]
