"""What every command reads first: the .gdl file, the `--set` overrides, the checked program.

None of it imports JAX, so `graphdl check` starts fast.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

from graphdl.elaborate.check import check_program
from graphdl.elaborate.overrides import EXPRESSION_SETTINGS, override_errors, value_text
from graphdl.elaborate.program import literal, unknown_override
from graphdl.errors import CliError, GdlError
from graphdl.ops.training import TRAIN_SETTINGS
from graphdl.parse.parser import parse_source
from graphdl.reading import FileRefused, read_gdl_text
from graphdl.runtime.data import SOURCES

# where a run records its overrides: the checkpoint's metadata `meta/overrides` (JSON)
RECORDED_KEY = "meta/overrides"


def read_source(path: str) -> str:
    """The main .gdl file's text: a regular file (never a pipe, a device or /dev/stdin,
    which could block or never end) of at most MAX_GDL_BYTES, UTF-8 without NUL bytes."""
    with file_errors(path, ".gdl"):
        return read_gdl_text(path)


@contextmanager
def file_errors(where: str, kind: str, prefix: str = ""):
    """Reading a file the user named (`where`): each way it can fail as a one-line CliError
    (`kind`: what the file should be, e.g. ".gdl"; `prefix`: before the strerror)."""
    try:
        yield
    except FileNotFoundError:
        raise CliError(f"{where}: no such file") from None
    except FileRefused as err:
        more = f", not a {kind} file" if err.reason == "is a directory" else ""
        raise CliError(f"{where}: {err.reason}{more}") from None
    except OSError as err:
        raise CliError(f"{where}: {prefix}{err.strerror}{')' if prefix else ''}") from None


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
    """`--set mlp.H=256 --set train.epochs=5` -> {"mlp.H": 256, "train.epochs": 5}.

    A value is a GDL literal; an optimizer or schedule (`train.optimizer=sgd(lr = 0.1)`)
    is kept as its GDL text, which the front end parses and checks like the file's; a
    string setting takes a bare word (`train.precision=bf16`)."""
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--set {item}: expected NAME=VALUE, e.g. --set mlp.H=256")
        if key.rsplit(".", 1)[-1] in EXPRESSION_SETTINGS:
            if not raw.strip():
                raise CliError(f"--set {item}: give the {key.rsplit('.', 1)[-1]} as GDL, "
                               "e.g. --set train.optimizer=sgd(lr = 0.1)")
            out[key] = raw.strip()
            continue
        setting = TRAIN_SETTINGS.get(key.rsplit(".", 1)[-1])
        if setting is not None and setting.kind == "choice" and raw.strip().isidentifier():
            out[key] = raw.strip()  # a bare word is the string: --set train.precision=bf16
            continue
        try:
            module = parse_source(f"data _probe = _probe({raw})\n", "<--set>")
            value = literal(module.items[0].value.args[0])
        except Exception:
            value = None
        if value is None:
            raise CliError(f"--set {item}: the value must be a GDL literal "
                           "(a number, true/false, a \"string\" or a list)")
        out[key] = value
    return out


def override_problem(checked, overrides: dict) -> str | None:
    """The first problem with the overrides: a key that names nothing, or a value the
    setting's own check refuses (as `--set KEY=VALUE: message`)."""
    for key in overrides:
        problem = unknown_override(checked.program, key)
        if problem:
            return f"--set {key}: {problem}"
    problems, _ = override_errors(checked.diagnostics)
    for key, message in problems:
        if key in overrides:
            return f"--set {key}={value_text(key, overrides[key])}: {message}"
    return None


def validate_overrides(checked, overrides: dict) -> None:
    """Every --set key must name a graph constant or a train setting, with a value that
    setting takes."""
    problem = override_problem(checked, overrides)
    if problem:
        raise CliError(problem)


def load_checked(path: str, overrides: dict | None = None, data_root: Path | None = None):
    checked = check_program(path, read_source(path), overrides, SOURCES, data_root=data_root)
    validate_overrides(checked, overrides or {})
    if any(d.severity == "error" for d in checked.diagnostics):
        raise GdlError(checked.diagnostics, checked.program.sources)
    return checked


def recorded_overrides(out_dir: str | Path) -> dict | None:
    """The `--set` overrides a run recorded with its checkpoint in `out_dir` (None: no
    checkpoint there, or one that records none). A read-only peek at the metadata."""
    file = Path(out_dir) / "checkpoint" / "checkpoint.safetensors"
    if not file.is_file():
        return None
    try:
        import safetensors  # lazy: only --eval and --resume read a checkpoint
        with safetensors.safe_open(str(file), framework="np") as f:
            metadata = f.metadata() or {}
        text = metadata.get(RECORDED_KEY)
        value = json.loads(text) if text is not None else None
    except Exception:  # an unreadable checkpoint: the runtime says what is wrong with it
        return None
    return value if isinstance(value, dict) else None


def replayed_overrides(given: dict, out_dir: str | Path, flag: str) -> dict:
    """`--eval`/`--resume`: the overrides recorded with the checkpoint, unless `--set`
    gives them again (then they must agree)."""
    recorded = recorded_overrides(out_dir)
    if recorded is None:
        return given
    if not given:
        return recorded
    if given != recorded:
        def shown(overrides: dict) -> str:
            return " ".join(f"--set {k}={value_text(k, v)}" for k, v in overrides.items()) \
                or "no --set"
        raise CliError(f"{flag}: the checkpoint in {out_dir} was trained with {shown(recorded)}, "
                       f"but this run gives {shown(given)}; give the same overrides, or none "
                       "to replay the recorded ones")
    return given
