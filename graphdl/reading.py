"""Reading the files a `.gdl` file names, safely: regular files only, size-capped, never
blocking on a FIFO or a terminal, and (with a data root) only inside that root; and
`cache_root()`, the one folder graphdl keeps what it caches in, and
`replace_atomically`, how every file there (and in a run's output folder) is written.

Used by the front end (`use` imports, `load(...)` paths), the CLI (the main file) and the
data sources. A refusal is a `FileRefused` whose `reason` completes a sentence that
starts with the file's name ("/dev/zero is not a regular file (a device)").
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: The largest .gdl file (main or imported) that is read: 10 MB.
MAX_GDL_BYTES = 10 * 1024 * 1024


def cache_root() -> Path:
    """Where graphdl caches downloads, generated data sets, the parser tables and compiled
    programs (each in a subfolder): $GRAPHDL_CACHE, else ~/.cache/graphdl."""
    return Path(os.environ.get("GRAPHDL_CACHE") or Path.home() / ".cache" / "graphdl")


def switched_off(variable: str) -> bool:
    """Whether the environment variable `variable` turns a feature off ("off", "0",
    "false" or "no", in any case): $GRAPHDL_COMPILE_CACHE, $GRAPHDL_REWRITES,
    $GRAPHDL_AUTOTUNE."""
    return os.environ.get(variable, "").strip().lower() in ("off", "0", "false", "no")


def replace_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write(file)`: a temp file in the same folder, fsync, rename,
    so a reader sees the old file or the new one, never a torn one. OSError as it comes
    (the output folder, the checkpoint writer and the caches each report it their way).
    The temp is `.NAME.tmp-PID`: a killed writer's leftover is recognisable by name."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # our own leftover from a failed write
    try:
        # O_EXCL | O_NOFOLLOW: a link planted at the temp name is not followed either
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o644)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FileRefused(Exception):
    """A file that is not read: `reason` says why ("is a directory", "is not a regular
    file (a pipe)", "is N bytes, more than the limit of M"), without quoting its content."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def open_regular(path: str | os.PathLike, max_bytes: int | None = None):
    """A binary file object for `path`, which must be a regular file (after symlinks) of at
    most `max_bytes` bytes. O_NONBLOCK: opening a FIFO returns at once (then refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise FileRefused("is a directory") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileRefused("is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"is not a regular file ({_kind(st.st_mode)})")
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileRefused(f"is {st.st_size} bytes, more than the limit of {max_bytes}")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_regular(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (see `open_regular`); a file that grows past
    `max_bytes` while read (or a /proc file, which reports size 0) is refused."""
    with open_regular(path, max_bytes) as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileRefused(f"is more than the limit of {max_bytes} bytes")
    return data


def read_gdl_text(path: str | os.PathLike, max_bytes: int = MAX_GDL_BYTES) -> str:
    """The text of a .gdl file: a regular file of at most `max_bytes`, UTF-8 (a NUL byte
    is left to the parser, which reports it at its line and column)."""
    data = read_regular(path, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused("is not UTF-8 text") from None


def is_gdl_name(name: str) -> bool:
    """Whether diagnostics may quote lines of `name`: a `.gdl` file or a built-in
    source (`<std.nn>`, `<string>`)."""
    return name.endswith(".gdl") or (name.startswith("<") and name.endswith(">"))


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path`, with every symlink resolved, lies inside the folder `root`."""
    try:
        real, top = Path(path).resolve(), Path(root).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return real == top or top in real.parents
