"""What every command reads first: the .gdl file, the `--set` overrides, the checked program.

None of it imports JAX, so `graphdl check` starts fast.
"""

from __future__ import annotations

from pathlib import Path

from graphdl.elaborate.check import check_program
from graphdl.elaborate.program import literal, unknown_override
from graphdl.errors import CliError, GdlError
from graphdl.parse.parser import parse_source
from graphdl.runtime.data import SOURCES


def read_source(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a .gdl file") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: is not UTF-8 text") from None
    except OSError as err:
        raise CliError(f"{path}: {err.strerror}") from None


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


def load_checked(path: str, overrides: dict | None = None):
    checked = check_program(path, read_source(path), overrides, SOURCES)
    if any(d.severity == "error" for d in checked.diagnostics):
        raise GdlError(checked.diagnostics, checked.program.sources)
    validate_overrides(checked, overrides or {})
    return checked
