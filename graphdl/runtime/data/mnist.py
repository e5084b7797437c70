"""`dataset("mnist")`: IDX files read from a folder, or downloaded once into a cache.

The download path verifies each file's SHA-256 and writes it atomically (a temporary
file in the cache folder, then `os.replace`), so an interrupted or corrupted download
never leaves a file that a later run would trust. The network is touched only by
`load()` of a source opened without `path`, never by opening or checking.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from graphdl.reading import cache_root
from graphdl.runtime.data.base import (
    DataError,
    Field,
    Source,
    carve_val,
    own_split_names,
    resolve_path,
    want_int,
    want_split,
)

#: The mirror TensorFlow uses. Override with $GRAPHDL_MNIST_URL (tests point it at loopback).
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

#: SHA-256 of each downloadable file; a module-level dict so tests can substitute theirs.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: Seconds a stalled connection may wait before the download fails.
DOWNLOAD_TIMEOUT = 30.0

#: split -> (images file, labels file), without the optional '.gz'.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_DESCRIBE = 'dataset("mnist")'
_PATH_HINT = 'or download the four IDX files yourself and give dataset("mnist", path = "folder")'

Files = dict[str, tuple[Path, Path]]


def open_mnist(args: dict, base_dir: Path) -> Source:
    """MNIST keeps its own 60000/10000 split; `split = [a, b]` carves val out of train."""
    fractions, seed = want_split(args), want_int(args, "seed", 0)
    names = own_split_names(fractions, _DESCRIBE)
    files: Files | None = None
    shape = (28, 28)
    if args.get("path") is not None:
        files = _find_files(resolve_path(args, "path", base_dir, want_dir=True))
        shape = _check_headers(files)

    def load():
        found = files if files is not None else download_mnist()
        own = {split: _read_split(*found[split]) for split in MNIST_FILES}
        return carve_val(own, fractions, seed, _DESCRIBE), {}

    return Source(
        fields={"x": Field((*shape, 1), "f32"), "y": Field((), "i32")},
        splits=names,
        load=load,
        static_info={"classes": 10},
        describe=_DESCRIBE,
    )


# ---------------------------------------------------------------- IDX files


def _find_files(folder: Path) -> Files:
    found: Files = {}
    missing = []
    for split, pair in MNIST_FILES.items():
        paths = []
        for stem in pair:
            hits = [
                folder / (stem + ext) for ext in ("", ".gz") if (folder / (stem + ext)).is_file()
            ]
            paths.append(hits[0] if hits else None)
            if not hits:
                missing.append(stem)
        found[split] = tuple(paths)  # type: ignore[assignment]
    if missing:
        raise DataError(
            f"{folder} lacks the MNIST file(s) {', '.join(missing)} (optionally .gz)",
            arg="path",
        )
    return found


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_header(stream, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    head = stream.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or head[3] == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)", arg="path")
    raw = stream.read(4 * head[3])
    if len(raw) < 4 * head[3]:
        raise DataError(f"{path} is truncated (in its header)", arg="path")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4"))
    return np.dtype(_IDX_DTYPES[head[2]]), dims


def read_idx_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and dims an IDX file declares, reading only its first bytes."""
    try:
        with _open(path) as stream:
            return _read_header(stream, path)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {err}", arg="path") from err


def read_idx(path: Path) -> np.ndarray:
    """The whole array of an IDX file (optionally gzipped)."""
    try:
        with _open(path) as stream:
            dtype, dims = _read_header(stream, path)
            body = stream.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}", arg="path") from err
    count = math.prod(dims)  # Python ints: a hostile header cannot overflow
    if len(body) < count * dtype.itemsize:
        raise DataError(f"{path} is truncated: its header declares {list(dims)}", arg="path")
    return np.frombuffer(body, dtype, count).reshape(dims)


def _check_idx_size(path: Path) -> None:
    """An uncompressed IDX file must hold the bytes its header declares, checked before
    reading (a tiny file claiming 10^11 images must not allocate them)."""
    if path.suffix == ".gz":
        return  # read_idx reads the stream and compares what arrived with the header
    dtype, dims = read_idx_header(path)
    need = 4 + 4 * len(dims) + math.prod(dims) * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise DataError(
            f"{path} is truncated: its header declares {list(dims)} ({need} bytes), "
            f"but the file has {size} bytes",
            arg="path",
        )


def _check_headers(files: Files) -> tuple[int, int]:
    """Validate the four headers (kind, counts) and return the image size."""
    shapes = set()
    for images, labels in files.values():
        (_, img_dims), (_, lbl_dims) = read_idx_header(images), read_idx_header(labels)
        if len(img_dims) != 3 or len(lbl_dims) != 1:
            raise DataError(
                f"{images} must hold [N, H, W] images and {labels} [N] labels", arg="path"
            )
        if img_dims[0] != lbl_dims[0]:
            raise DataError(
                f"{images} has {img_dims[0]} images but {labels} has {lbl_dims[0]} labels",
                arg="path",
            )
        for path in (images, labels):
            _check_idx_size(path)
        shapes.add(img_dims[1:])
    if len(shapes) != 1:
        raise DataError(f"the MNIST files disagree on the image size: {sorted(shapes)}", arg="path")
    return shapes.pop()


def _read_split(images: Path, labels: Path) -> dict[str, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images} and {labels} do not hold matching images and labels")
    scale = 255.0 if x.dtype == np.uint8 else 1.0  # bytes -> [0, 1]; float IDX as is
    return {"x": (x[..., None] / scale).astype(np.float32), "y": y.astype(np.int32)}


# ---------------------------------------------------------------- download and cache


def cache_dir() -> Path:
    """Where downloads live: $GRAPHDL_CACHE/mnist, else ~/.cache/graphdl/mnist."""
    return cache_root() / "mnist"


def download_mnist() -> Files:
    """The four cached files, downloading (and verifying) any that are missing or bad."""
    folder = cache_dir()
    base = os.environ.get("GRAPHDL_MNIST_URL") or MNIST_URL
    base = base if base.endswith("/") else base + "/"
    return {
        split: tuple(_fetch(base, stem + ".gz", folder) for stem in pair)  # type: ignore[misc]
        for split, pair in MNIST_FILES.items()
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(base: str, name: str, folder: Path) -> Path:
    expected = MNIST_SHA256.get(name)
    if expected is None:
        raise DataError(f"no checksum is known for {name}; refusing to download it")
    target = folder / name
    if target.is_file():
        if _sha256(target) == expected:
            return target
        target.unlink()  # damaged outside our control (we never write a bad one): refetch
    _download(base + name, target, expected)
    return target


def _download(url: str, target: Path, expected: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # The temp file sits beside the target so os.replace is an atomic rename.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as err:
        raise DataError(
            f"cannot write the download cache {target.parent}: {err}",
            hint="set GRAPHDL_CACHE to a writable folder",
        ) from err
    try:
        digest = hashlib.sha256()
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp,
        ):
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise DataError(
                f"the download of {url} is corrupt: SHA-256 {digest.hexdigest()}, "
                f"expected {expected}",
                hint=f"try again later, {_PATH_HINT}",
            )
        os.replace(tmp, target)
    except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError
        reason = getattr(err, "reason", err)
        if isinstance(err, urllib.error.HTTPError):
            err.close()  # an HTTPError holds the open response
            reason = f"HTTP {err.code} {err.reason}"
        raise DataError(f"could not download {url}: {reason}", hint=_PATH_HINT) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
