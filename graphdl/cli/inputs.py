"""What every command reads first: the .gdl file, the `--set` overrides, the checked program.

None of it imports JAX, so `graphdl check` starts fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from graphdl.elaborate.check import check_program
from graphdl.elaborate.program import literal, unknown_override
from graphdl.errors import CliError, GdlError
from graphdl.parse.parser import parse_source
from graphdl.reading import FileRefused, read_gdl_text
from graphdl.runtime.data import SOURCES


def read_source(path: str) -> str:
    """The main .gdl file's text: a regular file (never a pipe, a device or /dev/stdin,
    which could block or never end) of at most MAX_GDL_BYTES, UTF-8 without NUL bytes."""
    try:
        return read_gdl_text(path)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except FileRefused as err:
        more = ", not a .gdl file" if err.reason == "is a directory" else ""
        raise CliError(f"{path}: {err.reason}{more}") from None
    except OSError as err:
        raise CliError(f"{path}: {err.strerror}") from None


def add_data_root(parser) -> None:
    parser.add_argument("--data-root", metavar="DIR", type=data_root_dir,
                        help="for running untrusted files: every path the file names (use, "
                             "data files, load(...)) must lie inside DIR")


def data_root_dir(value: str) -> Path:
    root = Path(value)
    if not root.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is not a folder")
    return root


def parse_overrides(items: list[str]) -> dict:
    """`--set mlp.H=256 --set train.epochs=5` -> {"mlp.H": 256, "train.epochs": 5}."""
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {item}: expected NAME=VALUE, e.g. --set mlp.H=256")
        try:
            module = parse_source(f"data _probe = _probe({raw})\n", "<--set>")
            value = literal(module.items[0].value.args[0])
        except Exception:
            value = None
        if value is None:
            raise CliError(f"--set {item}: the value must be a GDL literal "
                           "(a number, true/false, a \"string\" or a list)")
        out[key.strip()] = value
    return out


def validate_overrides(checked, overrides: dict) -> None:
    """Every --set key must name a graph constant or a train setting."""
    for key in overrides:
        problem = unknown_override(checked.program, key)
        if problem:
            raise CliError(f"--set {key}: {problem}")


def load_checked(path: str, overrides: dict | None = None, data_root: Path | None = None):
    checked = check_program(path, read_source(path), overrides, SOURCES, data_root=data_root)
    if any(d.severity == "error" for d in checked.diagnostics):
        raise GdlError(checked.diagnostics, checked.program.sources)
    validate_overrides(checked, overrides or {})
    return checked
