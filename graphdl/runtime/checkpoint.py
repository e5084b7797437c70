"""Self-describing, atomic checkpoints stored as one safetensors file.

A checkpoint directory holds exactly one file, ``checkpoint.safetensors``:

* tensors ``params/<name>`` and ``stats/<name>`` keyed by hierarchical names
  (``mlp.h.dense.w``), so anyone with only the ``safetensors`` library can read
  parameters by name, with no graphdl and no pickle;
* tensors ``opt/<i>`` for the i-th leaf of the optimizer pytree, in
  ``jax.tree_util`` flattening order (0-d arrays for scalar leaves);
* string metadata (``__metadata__``): see ``_META_*`` below.  User ``meta``
  entries are stored under ``meta/<key>`` so they can never shadow our keys.

Saving writes a temp file next to the final one, fsyncs it, renames it over the
final name and fsyncs the directory, so a process killed at any instant leaves
either the previous checkpoint or the new one -- never a torn file (spec §11: a
failed run never corrupts an existing checkpoint).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import operator
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import safetensors

from graphdl.runtime.writing import replace_atomically

FILE_NAME = "checkpoint.safetensors"
FORMAT = "graphdl.checkpoint"
FORMAT_VERSION = 1
_TMP_PREFIX = f".{FILE_NAME}.tmp-"

_PARAMS = "params/"
_STATS = "stats/"
_OPT = "opt/"
_META = "meta/"

_META_FORMAT = "format"
_META_VERSION = "format_version"
_META_STEP = "step"
_META_EPOCH = "epoch"
_META_SOURCE = "source"
_META_HASH = "source_hash"
_META_PARAM_NAMES = "param_names"  # JSON list
_META_STAT_NAMES = "stat_names"  # JSON list
_META_OPT_PATHS = "opt_paths"  # JSON list of keystr paths, or JSON null without opt state
_META_OPT_TREEDEF = "opt_treedef"  # str(treedef), for humans only
# sha256 over every tensor (name, dtype, shape, bytes, in sorted name order): flipped bytes
# in the data are found on load, not trained on. Checkpoints without it still load.
_META_TENSOR_HASH = "tensor_sha256"
# what marks a header as ours even when the file is too damaged to parse
_FORMAT_MARK = f'"{_META_FORMAT}":"{FORMAT}"'.encode()

# numpy dtype name -> safetensors dtype tag (little-endian storage).
_ST_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",  # ml_dtypes, as jax arrays convert to
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}

_MAX_LISTED = 8  # names shown per category in an error, so messages stay readable


class CheckpointError(Exception):
    """A user-facing checkpoint problem (missing, corrupt, or not matching the model)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    opt_state: Any | None
    step: int
    epoch: int
    source: str
    source_hash: str
    meta: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- paths


def checkpoint_path(directory: str | os.PathLike[str]) -> Path:
    """The single file that holds the checkpoint stored in ``directory``."""
    return Path(directory) / FILE_NAME


def is_graphdl_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` (a checkpoint file or its directory) is a graphdl checkpoint.

    Never raises: callers use it to decide whether overwriting is safe.
    """
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
    except Exception:  # any unreadable file is simply "not ours"
        return False
    return metadata.get(_META_FORMAT) == FORMAT


def checkpoint_state(path: str | os.PathLike[str]) -> str:
    """What is at ``path`` (a checkpoint file or its directory): "missing", "ok" (a
    readable graphdl checkpoint), "damaged" (ours by its header, but truncated or
    unreadable) or "foreign" (anything else: never ours to overwrite). Never raises.

    Cheap: the header and the file size only; the tensor checksum is checked on load.
    """
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.exists() and not path.is_symlink():
        return "missing"
    if path.is_symlink() or not path.is_file():
        return "foreign"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            header = f.read(min(length, 64 << 20))
    except OSError:
        return "foreign"
    if _FORMAT_MARK not in header:
        return "foreign"
    try:
        parsed = json.loads(header)
        end = max([v["data_offsets"][1] for k, v in parsed.items() if k != "__metadata__"],
                  default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        return "damaged"
    return "ok" if size == 8 + length + end and len(header) == length else "damaged"


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- saving


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    params: dict[str, Any],
    stats: dict[str, Any],
    opt_state: Any | None,
    step: int,
    epoch: int,
    source: str,
    meta: dict[str, str] | None = None,
) -> Path:
    """Atomically write a checkpoint into ``directory``; returns the file path."""
    directory = Path(directory)
    tensors: dict[str, np.ndarray] = {}
    tensors.update(_prefixed(_PARAMS, params, "params"))
    tensors.update(_prefixed(_STATS, stats, "stats"))
    opt_paths, opt_treedef = _flatten_opt_state(opt_state, tensors)
    metadata = _build_metadata(params, stats, opt_paths, opt_treedef, step, epoch, source, meta)
    metadata[_META_TENSOR_HASH] = tensor_hash(tensors)

    _prepare_directory(directory)
    final = checkpoint_path(directory)
    if final.is_symlink():
        raise CheckpointError(
            f"refusing to write '{final}': it is a symbolic link, and graphdl never writes "
            "through one",
            hint="remove the link, or choose another output directory",
        )
    if checkpoint_state(final) == "foreign":
        raise CheckpointError(
            f"refusing to overwrite '{final}': it is not a graphdl checkpoint",
            hint="choose another output directory or move the file away",
        )
    _clean_stale_temps(directory)
    _atomic_write(directory, final, tensors, metadata)
    return final


def tensor_hash(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and little-endian bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = tensors[name]
        digest.update(f"{name}|{_st_dtype(array)}|{list(array.shape)}|".encode())
        little = np.require(array.astype(array.dtype.newbyteorder("<"), copy=False),
                            requirements="C")
        digest.update(little.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def _prefixed(prefix: str, arrays: dict[str, Any], what: str) -> dict[str, np.ndarray]:
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{what} names must be non-empty strings, got {name!r}")
        out[prefix + name] = _to_numpy(value, f"{what} '{name}'")
    return out


def _to_numpy(value: Any, what: str) -> np.ndarray:
    # np.require rather than ascontiguousarray: the latter turns 0-d arrays into 1-d.
    array = np.require(np.asarray(value), requirements="C")
    if array.dtype.name not in _ST_DTYPES:
        raise TypeError(f"{what} has dtype {array.dtype}, which a checkpoint cannot store")
    return array


def _flatten_opt_state(
    opt_state: Any | None, tensors: dict[str, np.ndarray]
) -> tuple[list[str] | None, str | None]:
    """Add the optimizer leaves to ``tensors``; return their keystr paths and treedef."""
    if opt_state is None:
        return None, None
    import jax  # lazy: loading params alone should not pay for importing jax

    leaves, treedef = jax.tree_util.tree_flatten_with_path(opt_state)
    paths = []
    for index, (path, leaf) in enumerate(leaves):
        keystr = jax.tree_util.keystr(path)
        tensors[f"{_OPT}{index}"] = _to_numpy(leaf, f"optimizer leaf {keystr}")
        paths.append(keystr)
    return paths, str(treedef)


def _build_metadata(
    params: dict[str, Any],
    stats: dict[str, Any],
    opt_paths: list[str] | None,
    opt_treedef: str | None,
    step: int,
    epoch: int,
    source: str,
    meta: dict[str, str] | None,
) -> dict[str, str]:
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    metadata = {
        _META_FORMAT: FORMAT,
        _META_VERSION: str(FORMAT_VERSION),
        _META_STEP: str(_as_int(step, "step")),
        _META_EPOCH: str(_as_int(epoch, "epoch")),
        _META_SOURCE: source,
        _META_HASH: source_hash(source),
        _META_PARAM_NAMES: json.dumps(list(params)),
        _META_STAT_NAMES: json.dumps(list(stats)),
        _META_OPT_PATHS: json.dumps(opt_paths),
    }
    if opt_treedef is not None:
        metadata[_META_OPT_TREEDEF] = opt_treedef
    for key, value in (meta or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"meta must map str to str, got {key!r}: {type(value).__name__}")
        metadata[_META + key] = value
    return metadata


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):  # bool is an int subclass but never a valid step
        raise TypeError(f"{what} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}") from None


def _prepare_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(
            f"cannot write a checkpoint into '{directory}': it is a file, not a directory",
            hint="pass a directory for the checkpoint",
        )
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        # Make the new directory entry itself durable, not just the file inside it.
        _fsync_directory(directory.parent)


def _clean_stale_temps(directory: Path) -> None:
    """Remove temp files left by saves that were killed (their writer is gone)."""
    for tmp in directory.glob(_TMP_PREFIX + "*"):
        pid_text = tmp.name[len(_TMP_PREFIX) :]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        # A live writer's temp must stay, or its rename would fail mid-save.
        if pid != os.getpid() and _pid_alive(pid):
            continue
        try:
            tmp.unlink()
        except OSError:
            pass  # best effort: a leftover temp is harmless, it is never loaded


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        # os.kill(pid, 0) would terminate the process on Windows; there, an open
        # temp cannot be deleted anyway, so treating it as stale is safe.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def _atomic_write(
    directory: Path, final: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]
) -> None:
    # Our own pid-named temp (`_TMP_PREFIX` + pid, see writing.replace_atomically), not
    # safetensors.save_file, which makes an anonymous temp of its own that a killed
    # process would leave behind unidentifiable.
    replace_atomically(final, lambda file: _write_safetensors(file, tensors, metadata))
    _fsync_directory(directory)  # make the rename itself durable


def _write_safetensors(
    file: BinaryIO, tensors: dict[str, np.ndarray], metadata: dict[str, str]
) -> None:
    """Stream the safetensors format: u64 header size, JSON header, raw little-endian data.

    Written by hand so tensors go straight from their buffers to the file, without
    the whole-file copy that safetensors.numpy.save would make.
    """
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, array in tensors.items():
        end = offset + array.nbytes
        header[name] = {
            "dtype": _st_dtype(array),
            "shape": list(array.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment
    file.write(struct.pack("<Q", len(blob)))
    file.write(blob)
    for array in tensors.values():
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        file.write(little.reshape(-1).view(np.uint8).data)


def _st_dtype(array: np.ndarray) -> str:
    try:
        return _ST_DTYPES[array.dtype.name]
    except KeyError:
        raise TypeError(f"cannot store dtype {array.dtype} in a checkpoint") from None


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open directories; rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- loading


def load_checkpoint(
    directory: str | os.PathLike[str], *, opt_state_template: Any | None = None
) -> Checkpoint:
    """Read the checkpoint in ``directory`` (or the checkpoint file itself).

    The optimizer state is rebuilt into the structure of ``opt_state_template``;
    without a template it is returned as None.
    """
    path = _resolve_file(Path(directory))
    metadata, tensors = _read_file(path)
    _check_format(path, metadata)
    params = _section(path, metadata, tensors, _META_PARAM_NAMES, _PARAMS)
    stats = _section(path, metadata, tensors, _META_STAT_NAMES, _STATS)
    opt_leaves = _opt_leaves(path, metadata, tensors)
    _check_no_extra_tensors(path, tensors, params, stats, opt_leaves)
    _check_tensor_hash(path, metadata, tensors)
    source = metadata.get(_META_SOURCE, "")
    digest = metadata.get(_META_HASH, "")
    if source_hash(source) != digest:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt: its source does not match its sha256",
        )
    opt_state = None
    if opt_state_template is not None:
        opt_state = _restore_opt_state(path, metadata, opt_leaves, opt_state_template)
    return Checkpoint(
        params=params,
        stats=stats,
        opt_state=opt_state,
        step=_int_meta(path, metadata, _META_STEP),
        epoch=_int_meta(path, metadata, _META_EPOCH),
        source=source,
        source_hash=digest,
        meta={k[len(_META) :]: v for k, v in metadata.items() if k.startswith(_META)},
    )


def _check_tensor_hash(path: Path, metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> None:
    want = metadata.get(_META_TENSOR_HASH)
    if want is not None and tensor_hash(tensors) != want:
        raise CheckpointError(
            f"checkpoint '{path}' is damaged (corrupt): its tensor data does not match "
            "its sha256",
            hint="the file was changed on disk; restore it from a backup, or train afresh",
        )


def _resolve_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at '{path}': the directory does not exist",
            hint="train first, or pass the directory a previous run wrote to",
        )
    file = checkpoint_path(path)
    if not file.is_file():
        raise CheckpointError(
            f"no checkpoint in '{path}': '{FILE_NAME}' is missing",
            hint="train first, or pass the directory a previous run wrote to",
        )
    return file


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad files
        if checkpoint_state(path) == "damaged":
            raise CheckpointError(
                f"checkpoint '{path}' is damaged: the file is truncated or corrupt ({exc})",
                hint="restore it from a backup, or train afresh",
            ) from exc
        raise CheckpointError(
            f"cannot read checkpoint '{path}': the file is corrupt or not a safetensors file ({exc})",
            hint="the file may be truncated; restore it from a backup or train from scratch",
        ) from exc
    return metadata, tensors


def _check_format(path: Path, metadata: dict[str, str]) -> None:
    if metadata.get(_META_FORMAT) != FORMAT:
        raise CheckpointError(
            f"'{path}' is a safetensors file but not a graphdl checkpoint",
            hint="graphdl checkpoints carry format=graphdl.checkpoint in their metadata",
        )
    version = metadata.get(_META_VERSION, "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {version!r}; "
            f"this graphdl reads version {FORMAT_VERSION} and older",
            hint="upgrade graphdl",
        )


def _json_meta(path: Path, metadata: dict[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt: metadata '{key}' is missing or invalid"
        ) from exc


def _int_meta(path: Path, metadata: dict[str, str], key: str) -> int:
    try:
        return int(metadata[key])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt: metadata '{key}' is missing or not an integer"
        ) from exc


def _section(
    path: Path, metadata: dict[str, str], tensors: dict[str, np.ndarray], key: str, prefix: str
) -> dict[str, np.ndarray]:
    """The arrays listed under metadata ``key``, in their saved order."""
    names = _json_meta(path, metadata, key)
    out = {}
    for name in names:
        if prefix + name not in tensors:
            raise CheckpointError(
                f"checkpoint '{path}' is corrupt: tensor '{prefix}{name}' is missing"
            )
        out[name] = tensors[prefix + name]
    return out


def _opt_leaves(
    path: Path, metadata: dict[str, str], tensors: dict[str, np.ndarray]
) -> list[np.ndarray] | None:
    paths = _json_meta(path, metadata, _META_OPT_PATHS)
    if paths is None:
        return None
    try:
        return [tensors[f"{_OPT}{index}"] for index in range(len(paths))]
    except KeyError as exc:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt: optimizer tensor {exc} is missing"
        ) from None


def _check_no_extra_tensors(
    path: Path,
    tensors: dict[str, np.ndarray],
    params: dict[str, np.ndarray],
    stats: dict[str, np.ndarray],
    opt_leaves: list[np.ndarray] | None,
) -> None:
    # The name lists and the tensors must agree; a disagreement means tampering or a bug.
    expected = len(params) + len(stats) + len(opt_leaves or [])
    if len(tensors) != expected:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt: it holds {len(tensors)} tensors "
            f"but its metadata lists {expected}"
        )


def _restore_opt_state(
    path: Path, metadata: dict[str, str], leaves: list[np.ndarray] | None, template: Any
) -> Any:
    import jax

    if leaves is None:
        raise CheckpointError(
            f"checkpoint '{path}' has no optimizer state",
            hint="it was saved without one; resume with a fresh optimizer instead",
        )
    saved_paths = _json_meta(path, metadata, _META_OPT_PATHS)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = [(jax.tree_util.keystr(p), np.shape(leaf)) for p, leaf in flat]
    got = [(p, leaf.shape) for p, leaf in zip(saved_paths, leaves)]
    mismatch = _first_leaf_mismatch(expected, got)
    if mismatch is not None:
        raise CheckpointError(
            f"the optimizer state in '{path}' does not match this model's optimizer: {mismatch}",
            hint="the optimizer or the model changed since the checkpoint was written; "
            "train from scratch, or restore the original settings",
        )
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _first_leaf_mismatch(
    expected: list[tuple[str, tuple[int, ...]]], got: list[tuple[str, tuple[int, ...]]]
) -> str | None:
    """Describe the first leaf where template and checkpoint differ, or None."""
    for index, ((want_path, want_shape), (have_path, have_shape)) in enumerate(zip(expected, got)):
        if want_path != have_path:
            return f"leaf {index} is {have_path} in the checkpoint but {want_path} in the template"
        if tuple(want_shape) != tuple(have_shape):
            return (
                f"leaf {want_path} has shape {_fmt_shape(have_shape)} in the checkpoint "
                f"but {_fmt_shape(want_shape)} in the template"
            )
    if len(expected) != len(got):
        index = min(len(expected), len(got))
        if len(got) > len(expected):
            return f"the checkpoint has {len(got)} leaves, the template {len(expected)}; first extra leaf: {got[index][0]}"
        return f"the checkpoint has {len(got)} leaves, the template {len(expected)}; first missing leaf: {expected[index][0]}"
    return None


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# --------------------------------------------------------------------------- restoring


def restore_into(params_template: dict[str, Any], ckpt_params: dict[str, Any],
                 subset: bool = False) -> dict[str, Any]:
    """Checkpoint values for exactly the template's names, in the template's order.

    Raises CheckpointError listing missing, unexpected and mismatched names
    (shape or dtype), with a did-you-mean for names that were probably renamed. With
    `subset`, the checkpoint may hold more than the template (one graph of a trained
    model, e.g. a GAN's generator, takes only the parameters it uses).
    """
    missing = [n for n in params_template if n not in ckpt_params]
    unexpected = [] if subset else [n for n in ckpt_params if n not in params_template]
    mismatched = [
        _describe_mismatch(n, params_template[n], ckpt_params[n])
        for n in params_template
        if n in ckpt_params and not _same_layout(params_template[n], ckpt_params[n])
    ]
    if missing or unexpected or mismatched:
        untrained = subset and not mismatched  # one graph whose parameters the run never had
        raise CheckpointError(
            _restore_message(missing, unexpected, mismatched),
            hint=_did_you_mean(missing, unexpected)
            or ("the run that wrote this checkpoint did not train these parameters: point "
                "--out at the run of a train block that uses this graph, or train one "
                "that does" if untrained else
                "the model changed since the checkpoint was written; train from scratch "
                "or restore the original model"),
        )
    return {name: ckpt_params[name] for name in params_template}


def _same_layout(want: Any, have: Any) -> bool:
    return tuple(np.shape(want)) == tuple(np.shape(have)) and _dtype(want) == _dtype(have)


def _dtype(value: Any) -> np.dtype:
    # .dtype covers jax arrays and ShapeDtypeStruct without materialising them.
    # (No `or` here: a plain np.dtype is falsy, since len(dtype) counts its fields.)
    dtype = getattr(value, "dtype", None)
    return np.dtype(dtype if dtype is not None else np.asarray(value).dtype)


def _describe_mismatch(name: str, want: Any, have: Any) -> str:
    return (
        f"{name}: checkpoint {_dtype(have)}{_fmt_shape(np.shape(have))}, "
        f"model {_dtype(want)}{_fmt_shape(np.shape(want))}"
    )


def _restore_message(missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    parts = ["the checkpoint's parameters do not match the model"]
    for label, items in (
        ("missing from the checkpoint", missing),
        ("unexpected in the checkpoint", unexpected),
        ("shape or dtype differs", mismatched),
    ):
        if items:
            shown = ", ".join(items[:_MAX_LISTED])
            more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            parts.append(f"{label} ({len(items)}): {shown}{more}")
    return "\n  ".join(parts)


def _did_you_mean(missing: list[str], unexpected: list[str]) -> str | None:
    """Pair each missing name with a close unexpected one: likely a renamed layer."""
    guesses = []
    for name in missing:
        close = difflib.get_close_matches(name, unexpected, n=1, cutoff=0.6)
        if close:
            guesses.append(f"for '{name}', did you mean the checkpoint's '{close[0]}'?")
    return " ".join(guesses[:_MAX_LISTED]) or None
