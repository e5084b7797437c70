"""Writing into a run's output folder: atomically, and never through a symlink.

Every file graphdl writes into `--out` is written to a temp file in the same folder and
renamed over its name (`os.replace`), so a kill leaves the old file or the new one, never
a torn one; and `os.replace` replaces a symlink at the name rather than writing through
it, so a pre-made link can never redirect a write onto another file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from graphdl.reading import replace_atomically  # the temp-fsync-rename, shared with the caches


class OutputError(Exception):
    """A file of the output folder cannot be written (permissions, full disk, a link)."""


def refuse_symlink(path: Path) -> None:
    """A link at a name graphdl writes is the user's or an attacker's, never ours."""
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link; graphdl does not write through links "
                          "(remove it, or choose another --out)")


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write(file)`: temp file in the same folder, fsync, rename."""
    refuse_symlink(path)
    try:
        replace_atomically(path, write)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def write_figure(fig, path: Path) -> None:
    """Render a matplotlib figure to PNG in memory, close it, then write it atomically
    (never through a link), so a kill mid-render leaves the old plot."""
    import io

    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def open_append(path: Path) -> BinaryIO:
    """Open an existing file of ours for appending, refusing a link at its name."""
    refuse_symlink(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return os.fdopen(fd, "ab")


def probe_writable(folder: Path) -> None:
    """Create `folder` and a probe file in it, then remove the probe: a read-only folder
    or a full disk is found before training, not at the first save."""
    probe = folder / f".graphdl-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.write(fd, b"\0" * 4096)  # a full disk fails here, not only at the next save
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as err:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass  # the probe was never made
        raise OutputError(f"cannot write into {folder}: {err.strerror or err}") from None
