"""Sources read from the user's files: `npz(path, ...)` and `csv(path, ...)`."""

from __future__ import annotations

import csv as csvlib
import math
import zipfile
from pathlib import Path

import numpy as np

from graphdl.runtime.data.base import (
    DataError,
    Field,
    Source,
    carve_val,
    did_you_mean,
    gdl_dtype,
    own_split_names,
    resolve_path,
    split_arrays,
    split_names,
    to_gdl,
    want_int,
    want_split,
    want_str,
)

DEFAULT_SPLIT = (0.8, 0.2)

# Key suffixes that mark a file's own splits: x_train / x_val / x_test.
_SUFFIXES = {"_train": "train", "_val": "val", "_valid": "val", "_test": "test"}

# ---------------------------------------------------------------- npz


def open_npz(args: dict, base_dir: Path) -> Source:
    """Every array in the file becomes a field (per-example arrays only, one N per split).
    `x=` and `y=` name the file's arrays that become fields x and y. Keys ending in
    _train/_val/_test are the file's own splits (a bare `x` beside `x_test` is train)."""
    path = resolve_path(args, "path", base_dir)
    fractions, seed = want_split(args), want_int(args, "seed", 0)
    headers = _npz_headers(path)
    layout = _npz_layout(headers, path)  # split (or None) -> field -> key
    rename = _npz_rename(args, {b for keys in layout.values() for b in keys}, path)
    layout = {s: {rename.get(b, b): k for b, k in keys.items()} for s, keys in layout.items()}
    fields = _npz_fields(headers, layout, path)
    describe = f"npz({path.name!r})"
    own = None not in layout
    if own and "val" in layout and fractions is not None:
        raise DataError(f"{path} has its own train/val/test split; drop 'split'", arg="split")
    if own:
        names = (
            ("train", "val", "test") if "val" in layout else own_split_names(fractions, describe)
        )
    else:
        names = split_names(len(fractions or DEFAULT_SPLIT))

    def load():
        loaded = _npz_load(path, layout)
        if own:
            return carve_val(loaded, fractions, seed, describe), {}
        return split_arrays(loaded[None], fractions or DEFAULT_SPLIT, seed, names, describe), {}

    return Source(fields, names, load, describe=describe)


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array from the .npy headers, without reading the data."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"{path} is not an .npz archive (a zip of .npy arrays)", arg="path"
        ) from err
    out = {}
    with archive:
        for member in archive.infolist():
            key = member.filename.removesuffix(".npy")
            if key == member.filename:
                raise DataError(
                    f"{path} holds '{member.filename}', which is not an .npy array", arg="path"
                )
            try:
                with archive.open(member) as stream:
                    shape, dtype, offset = read_npy_header(stream)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
                raise DataError(
                    f"{path}: array '{key}' is not a valid .npy array ({err})", arg="path"
                ) from err
            _check_member_size(path, key, member, tuple(shape), dtype, offset)
            out[key] = (tuple(shape), dtype)
    if not out:
        raise DataError(f"{path} holds no arrays", arg="path")
    return out


def read_npy_header(stream) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, data offset) from an .npy header, without reading the data."""
    version = np.lib.format.read_magic(stream)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(stream)
    return tuple(shape), dtype, stream.tell()


#: The most a deflated zip member can expand (deflate's limit is about 1032:1).
_MAX_DEFLATE_RATIO = 1100


def _check_member_size(path: Path, key: str, member, shape, dtype, offset: int) -> None:
    """Refuse an array whose header claims more data than the archive holds, before
    anything is allocated (a 200-byte file must not make numpy allocate terabytes)."""
    need = math.prod(shape) * dtype.itemsize + offset  # Python ints: no overflow
    stored = member.file_size
    if member.compress_type == zipfile.ZIP_STORED:
        stored = min(stored, member.compress_size)
    else:
        stored = min(stored, member.compress_size * _MAX_DEFLATE_RATIO)
    if need > stored:
        raise DataError(
            f"{path}: array '{key}' claims shape {list(shape)} of {dtype} "
            f"({need - offset} bytes), but the archive holds only {max(stored - offset, 0)} "
            "bytes for it",
            hint="the file is truncated or corrupt; save it again with numpy.savez",
            arg="path",
        )


def npy_size_problem(path: Path) -> str | None:
    """Why a plain .npy file cannot hold what its header declares (None when it can, or
    when the header is unreadable: np.load reports that itself), read before np.load
    allocates: a 200-byte file claiming 10^11 rows must not allocate 1.46 TiB."""
    try:
        with open(path, "rb") as stream:
            shape, dtype, offset = read_npy_header(stream)
        size = Path(path).stat().st_size
    except (ValueError, OSError, EOFError):
        return None
    need = math.prod(shape) * dtype.itemsize
    if offset + need > size:
        return (f"its header claims shape {list(shape)} of {dtype} ({need} bytes), but the "
                f"file holds only {max(size - offset, 0)} bytes of data")
    return None


def _npz_layout(headers: dict, path: Path) -> dict[str | None, dict[str, str]]:
    """Group keys by split: {None: {base: key}} without own splits, else per split."""
    parsed = {}
    for key in headers:
        suffix = next((s for s in _SUFFIXES if key.endswith(s) and len(key) > len(s)), None)
        parsed[key] = (key[: -len(suffix)], _SUFFIXES[suffix]) if suffix else (key, None)
    if all(split is None for _, split in parsed.values()):
        return {None: {key: key for key in headers}}
    layout: dict[str | None, dict[str, str]] = {}
    for key, (base, split) in parsed.items():
        keys = layout.setdefault(split or "train", {})
        if base in keys:  # both `x` and `x_train`: which one is train is ambiguous
            raise DataError(f"{path} has both '{keys[base]}' and '{key}'", arg="path")
        keys[base] = key
    bases = {split: set(keys) for split, keys in layout.items()}
    if (
        "train" not in layout
        or "test" not in layout
        or len({frozenset(b) for b in bases.values()}) != 1
    ):
        listing = "; ".join(f"{s}: {', '.join(sorted(b))}" for s, b in sorted(bases.items()))
        raise DataError(
            f"{path} has split-suffixed arrays but not the same arrays for train and test ({listing})",
            hint="name them like x_train, y_train, x_test, y_test",
            arg="path",
        )
    return layout


def _npz_rename(args: dict, bases: set[str], path: Path) -> dict[str, str]:
    """File array name -> field name for the `x=` / `y=` mapping."""
    rename = {}
    for field_name in ("x", "y"):
        key = want_str(args, field_name)
        if key in bases:
            rename[key] = field_name
        elif key != field_name:  # an explicit mapping to a missing array is an error
            raise DataError(
                f"{path} has no array '{key}'; it has {', '.join(sorted(bases))}",
                hint=did_you_mean(key, sorted(bases)),
                arg=field_name,
            )
    targets = [rename.get(b, b) for b in bases]
    for name in ("x", "y"):
        if targets.count(name) > 1:  # e.g. x = "images" while the file also has an 'x'
            raise DataError(f"{path}: two arrays would both become field '{name}'", arg=name)
    return rename


def _npz_fields(headers: dict, layout: dict, path: Path) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for split, keys in layout.items():
        sizes = {}
        for name, key in keys.items():
            shape, dtype = headers[key]
            if not shape:
                raise DataError(
                    f"{path}: '{key}' is a scalar, not one entry per example", arg="path"
                )
            sizes[key] = shape[0]
            spec = Field(
                tuple(int(d) for d in shape[1:]), gdl_dtype(dtype, f"{path}: '{key}'", "path")
            )
            if fields.setdefault(name, spec) != spec:
                raise DataError(
                    f"{path}: '{key}' is {spec} per example but other splits have {fields[name]}",
                    arg="path",
                )
        if len(set(sizes.values())) != 1:
            listing = ", ".join(f"{k}: {n}" for k, n in sizes.items())
            where = f" in split '{split}'" if split else ""
            raise DataError(f"{path}: the arrays{where} differ in length ({listing})", arg="path")
    return fields


def _npz_load(path: Path, layout: dict) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            loaded = {
                split: {
                    name: to_gdl(archive[key], f"{path}: '{key}'", "path")
                    for name, key in keys.items()
                }
                for split, keys in layout.items()
            }
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}", arg="path") from err
    for split, keys in layout.items():
        y = loaded[split].get("y")
        if y is not None and y.dtype == np.int32:
            check_labels(y, f"{path}: '{keys['y']}'", "path")
    return loaded


def check_labels(y: np.ndarray, what: str, arg: str | None, classes: int | None = None) -> None:
    """Integer class labels must be 0..classes-1: a negative one (or one past the class
    count) silently gives NaN losses, so it is refused, naming the first bad example."""
    flat = y.reshape(len(y), -1)
    bad = flat < 0 if classes is None else (flat < 0) | (flat >= classes)
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size:
        i = int(rows[0])
        value = int(flat[i][bad[i]][0])
        allowed = f"0..{classes - 1}" if classes is not None else "0 or more"
        raise DataError(
            f"{what} holds the label {value} at index {i}; integer labels must be {allowed}",
            hint="class labels count from 0; store a regression target as floats",
            arg=arg,
        )


# ---------------------------------------------------------------- csv


def open_csv(args: dict, base_dir: Path) -> Source:
    """A numeric CSV: the `target` column (name, index, or by default the last) is y,
    the others are x (D,) f32. y is i32 () class labels when every target is an integer
    (task = "auto") or task = "classify"; else f32 (1,) regression targets. The file is
    parsed when opened (it is small text) so bad rows are reported at once."""
    path = resolve_path(args, "path", base_dir)
    fractions = want_split(args) or DEFAULT_SPLIT
    seed = want_int(args, "seed", 0)
    task = want_str(args, "task", ("auto", "classify", "regress"))
    delimiter = want_str(args, "delimiter")
    if len(delimiter) != 1:
        raise DataError("'delimiter' must be one character", arg="delimiter")
    header = args.get("header")
    if header is not None and not isinstance(header, bool):
        raise DataError(f"'header' must be true or false, got {header!r}", arg="header")
    names, table = _read_csv(path, header, delimiter)
    col = _target_column(args.get("target"), names, path)
    x = np.delete(table, col, axis=1).astype(np.float32)
    y, info = _csv_target(table[:, col], task, path, names[col])
    describe = f"csv({path.name!r})"
    splits = split_names(len(fractions))

    def load():
        return split_arrays({"x": x, "y": y}, fractions, seed, splits, describe), {}

    fields = {"x": Field((x.shape[1],), "f32"), "y": Field(y.shape[1:], gdl_dtype(y.dtype, "y"))}
    return Source(fields, splits, load, static_info={**info, "columns": names}, describe=describe)


def _read_csv(path: Path, header: bool | None, delimiter: str) -> tuple[list[str], np.ndarray]:
    """Column names and the numeric table; header=None detects a non-numeric first row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(_rows(csvlib.reader(f, delimiter=delimiter)))
    except (UnicodeDecodeError, csvlib.Error) as err:
        raise DataError(f"cannot read {path} as CSV text: {err}", arg="path") from err
    if not rows:
        raise DataError(f"{path} is empty", arg="path")
    if header is None:
        header = not all(is_number(cell) for cell in rows[0][1])
    names = (
        [c.strip() for c in rows[0][1]]
        if header
        else [f"column {i + 1}" for i in range(len(rows[0][1]))]
    )
    body = rows[1:] if header else rows
    if len(names) < 2 or len(body) < 2:
        raise DataError(f"{path} needs at least 2 columns and 2 data rows", arg="path")
    first_line = body[0][0]
    table = np.empty((len(body), len(names)), np.float64)
    for i, (line, row) in enumerate(body):
        if len(row) != len(names):
            raise DataError(
                f"{path}:{line}: {len(row)} cells, expected {len(names)} (as in line {first_line})",
                arg="path",
            )
        table[i] = [_cell(cell, path, line, j + 1) for j, cell in enumerate(row)]
    return names, table


def _rows(reader):
    # reader.line_num counts physical lines, so a quoted newline keeps numbers right.
    for row in reader:
        if any(cell.strip() for cell in row):
            yield reader.line_num, row


def is_number(cell: str) -> bool:
    """Whether a text field reads as a float (a CSV header test; a vector file's values)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _cell(cell: str, path: Path, line: int, column: int) -> float:
    # Never quote the cell: a data error names the file, line and column, not the content
    # of a file other than .gdl source (csv("/etc/passwd", delimiter = ":") must not leak).
    try:
        value = float(cell)
    except ValueError:
        what = "is empty" if not cell.strip() else "is not a number"
        raise DataError(f"{path}:{line}: column {column} {what}", arg="path") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line}: column {column} is not a finite number", arg="path")
    return value


def _target_column(target: object, names: list[str], path: Path) -> int:
    if target is None:
        return len(names) - 1
    if isinstance(target, int) and not isinstance(target, bool):
        if not -len(names) <= target < len(names):
            raise DataError(
                f"{path} has {len(names)} columns; 'target' {target} is out of range", arg="target"
            )
        return target % len(names)
    if isinstance(target, str):
        if target not in names:
            # the header's names are the file's content: not listed (see _cell)
            raise DataError(
                f"{path} has no column '{target}' in its header ({len(names)} columns)",
                hint="'target' may also be a column index, e.g. target = 0",
                arg="target",
            )
        return names.index(target)
    raise DataError(f"'target' must be a column name or index, got {target!r}", arg="target")


def _csv_target(column: np.ndarray, task: str, path: Path, name: str) -> tuple[np.ndarray, dict]:
    integral = bool(np.all(column == np.round(column)))
    if task == "classify" and not integral:
        raise DataError(
            f"{path}: the target column holds non-integers, so it cannot be class labels",
            arg="task",
        )
    if task == "regress" or not integral:
        return column.astype(np.float32)[:, None], {}
    labels = to_gdl(column.astype(np.int64), f"{path}: the target column")
    if task == "classify":
        check_labels(labels, f"{path}: the target column", "task")
    info = {"classes": int(labels.max()) + 1} if labels.min() >= 0 else {}
    return labels, info
