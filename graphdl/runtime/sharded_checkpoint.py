"""Sharded checkpoints with orbax-checkpoint, and the checkpoint folder that holds both formats.

A run's checkpoint folder (`OUT/checkpoint/`) holds:

* ``checkpoint.safetensors``: the portable single file (runtime/checkpoint.py), written by
  one process from the whole arrays. It is the export format, and it is the *commit
  record* of every save: a save is done when this file has been renamed into place.
* ``sharded/<NAME>/`` (a multi-process run only): the same train state written with
  orbax-checkpoint, each process writing the shards it holds. The safetensors metadata
  names it (``meta/sharded = NAME``); ``--resume`` and ``--eval`` then restore from it,
  straight onto the current run's shardings, so a run saved on N devices (or processes)
  resumes on M.

Why the safetensors file commits the save: orbax writes into a temp folder and renames
it when every process has written, so a killed save leaves no finished ``sharded/NAME``;
but a finished one is not yet the checkpoint until the safetensors file that names it
is in place. A save killed at any instant therefore leaves the previous checkpoint (both
files of it) as ``--resume`` reads it, and a leftover folder no safetensors file names
is never read, and is removed by the next save. Each save writes a new NAME (the step
and a token all processes agree on), so the earlier sharded checkpoint is never written
over, only removed once the new one is committed.

orbax is imported lazily: a one-process run never pays for it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from graphdl.runtime.checkpoint import (
    Checkpoint,
    CheckpointError,
    _first_leaf_mismatch,
    checkpoint_path,
    checkpoint_state,
    load_checkpoint,
    restore_into,
    save_checkpoint,
    source_hash,
)

SHARDED_DIR = "sharded"
FORMAT = "graphdl.sharded_checkpoint"
FORMAT_VERSION = 1
SHARDED_KEY = "sharded"  # the safetensors `meta/` key naming the sharded companion

# The orbax checkpoint's items: the arrays of the model, the optimizer's, and our JSON.
# The optimizer is its own item so `--eval` restores the model alone.
_MODEL, _OPT, _META = "model", "opt", "graphdl"


# --------------------------------------------------------------------------- the folder


def sharded_name(directory: str | os.PathLike[str]) -> str | None:
    """The sharded checkpoint that the safetensors file in `directory` names, or None
    (a one-process save, or no readable safetensors file). Never raises."""
    import safetensors

    try:
        with safetensors.safe_open(str(checkpoint_path(directory)), framework="np") as f:
            metadata = f.metadata() or {}
    except Exception:
        return None
    return metadata.get(f"meta/{SHARDED_KEY}")


def folder_state(directory: str | os.PathLike[str]) -> str:
    """As `checkpoint.checkpoint_state`, for a checkpoint folder: "missing", "ok",
    "damaged" (also when the sharded checkpoint its safetensors file names is gone or
    unfinished) or "foreign". Never raises."""
    state = checkpoint_state(checkpoint_path(directory))
    if state != "ok":
        return state
    name = sharded_name(directory)
    if name is not None and sharded_state(Path(directory) / SHARDED_DIR / name) != "ok":
        return "damaged"
    return state


def save_folder(
    directory: str | os.PathLike[str],
    *,
    params: dict[str, Any],
    stats: dict[str, Any],
    opt_state: Any | None,
    step: int,
    epoch: int,
    source: str,
    meta: dict[str, str] | None = None,
    sharded: bool | None = None,
) -> Path:
    """Save the train state into the checkpoint folder `directory`; every process of the
    run calls it. `sharded` (default: when `jax.process_count() > 1`) also writes the
    orbax checkpoint, all processes taking part; process 0 alone writes the safetensors
    file, from the whole arrays (gathered from the other processes where it holds only
    shards), which commits the save. Returns the safetensors path."""
    directory = Path(directory)
    sharded = jax.process_count() > 1 if sharded is None else sharded
    meta = dict(meta or {})
    meta.pop(SHARDED_KEY, None)
    if sharded:
        name = _agreed_name(step)
        save_sharded(directory / SHARDED_DIR / name, params=params, stats=stats,
                     opt_state=opt_state, step=step, epoch=epoch, source=source, meta=meta)
        meta[SHARDED_KEY] = name
    else:
        name = None
    params, stats, opt_state = host_values((params, stats, opt_state))  # a collective
    final = checkpoint_path(directory)
    if jax.process_index() == 0:
        final = save_checkpoint(directory, params=params, stats=stats, opt_state=opt_state,
                                step=step, epoch=epoch, source=source, meta=meta)
        _remove_sharded_except(directory, name)  # after the commit, never before
    return final


def load_folder(
    directory: str | os.PathLike[str],
    *,
    params: dict[str, Any],
    stats: dict[str, Any],
    opt_state: Any | None = None,
) -> Checkpoint:
    """Read the checkpoint in the folder `directory` into the layout of the templates
    (the arrays the current run built: their names, shapes, dtypes and shardings): from
    the sharded checkpoint the safetensors file names, else from the safetensors file.
    The returned params/stats/opt_state are jax arrays placed like the templates; without
    an `opt_state` template, no optimizer state is read (None). Raises CheckpointError
    for a missing, damaged or mismatched checkpoint."""
    directory = Path(directory)
    name = sharded_name(directory)
    if name is not None:
        ckpt = load_sharded(directory / SHARDED_DIR / name, params=params, stats=stats,
                            opt_state=opt_state)
        ckpt.meta[SHARDED_KEY] = name
        return ckpt
    ckpt = load_checkpoint(directory, opt_state_template=opt_state)
    ckpt.params = _placed(restore_into(params, ckpt.params), params)
    ckpt.stats = _placed(restore_into(stats, ckpt.stats), stats) if stats else {}
    if opt_state is not None:
        ckpt.opt_state = jax.tree_util.tree_map(_place, ckpt.opt_state, opt_state)
    return ckpt


def _agreed_name(step: int) -> str:
    """A fresh folder name, the same in every process (orbax needs one path)."""
    token = np.frombuffer(os.urandom(4), np.uint32)[0]
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        token = multihost_utils.broadcast_one_to_all(token)
    return f"step_{int(step):08d}-{int(token):08x}"


def _remove_sharded_except(directory: Path, keep: str | None) -> None:
    """Remove the sharded checkpoints the commit record no longer names (the previous
    one, and leftovers of killed saves); best effort, they are never read."""
    folder = directory / SHARDED_DIR
    if not folder.is_dir() or folder.is_symlink():
        return
    for entry in folder.iterdir():
        if entry.name == keep:
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            pass
    if keep is None:
        try:
            folder.rmdir()
        except OSError:
            pass


def host_values(tree: Any) -> Any:
    """The whole value of every array in `tree` as numpy, in every process. An array
    whose shards live in several processes is gathered, which is a collective: every
    process calls this with the same tree."""
    def value(leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array):
            return leaf
        if leaf.is_fully_addressable:
            return np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(value, tree)


def _place(value: Any, like: Any) -> Any:
    """`value` (a whole array on the host) as a jax array sharded like `like`; each
    process puts only its own shards on its devices."""
    value = np.asarray(value)
    sharding = getattr(like, "sharding", None)
    if sharding is None:
        return jax.numpy.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _placed(values: dict[str, Any], templates: dict[str, Any]) -> dict[str, Any]:
    return {name: _place(value, templates[name]) for name, value in values.items()}


# --------------------------------------------------------------------------- orbax


def save_sharded(
    path: str | os.PathLike[str],
    *,
    params: dict[str, Any],
    stats: dict[str, Any],
    opt_state: Any | None,
    step: int,
    epoch: int,
    source: str,
    meta: dict[str, str] | None = None,
) -> Path:
    """Write the train state to the new folder `path` with orbax; every process calls it
    with its (possibly sharded) arrays and the same `path`. orbax writes into a temp
    folder beside `path` and renames it when all processes are done, so `path` exists
    only once the checkpoint is whole. Raises CheckpointError if `path` exists."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if path.parent.is_symlink():
        raise CheckpointError(
            f"refusing to write into '{path.parent}': it is a symbolic link, and graphdl "
            "never writes through one", hint="remove the link, or choose another output "
            "directory")
    if path.exists() or path.is_symlink():
        raise CheckpointError(f"refusing to write the sharded checkpoint '{path}': it exists",
                              hint="each save writes a new folder; remove this one")
    opt_leaves, opt_paths = _opt_leaves(opt_state)
    model = {"params": _indexed(params.values()), "stats": _indexed(stats.values())}
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "epoch": int(epoch),
        "source": source,
        "source_hash": source_hash(source),
        "meta": dict(meta or {}),
        "params": _layout(params),
        "stats": _layout(stats),
        "opt": None if opt_leaves is None else
        [[p, list(np.shape(v)), _dtype_name(v)] for p, v in zip(opt_paths, opt_leaves)],
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
    }
    items = {_MODEL: ocp.args.StandardSave(_nonempty(model)),
             _META: ocp.args.JsonSave(info)}
    if opt_leaves:
        items[_OPT] = ocp.args.StandardSave(_indexed(opt_leaves))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            checkpointer.save(path, args=ocp.args.Composite(**items))
    except OSError:
        raise  # the caller names the folder and the reason (a full disk, a read-only one)
    except Exception as exc:  # orbax and tensorstore raise their own kinds
        raise CheckpointError(
            f"cannot write the sharded checkpoint '{path}' ({type(exc).__name__}: "
            f"{_first_line(exc)})", hint="free some space or make the folder writable",
        ) from exc
    return path


def sharded_state(path: str | os.PathLike[str]) -> str:
    """"missing", "ok" (a finished sharded checkpoint of ours, by its metadata) or
    "damaged"; cheap (the metadata only). Never raises."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        _read_info(path)
    except CheckpointError:
        return "damaged"
    return "ok"


def load_sharded(
    path: str | os.PathLike[str],
    *,
    params: dict[str, Any],
    stats: dict[str, Any],
    opt_state: Any | None = None,
) -> Checkpoint:
    """Restore the sharded checkpoint at `path` onto the templates' shardings (a
    `jax.ShapeDtypeStruct` target per array, so each process reads only the shards it
    holds, however many devices and processes wrote them). The names, shapes and dtypes
    are checked against the templates first, with the same messages as the single
    file's; without an `opt_state` template the optimizer state is not read."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    info = _read_info(path)
    saved_params = _abstract(info["params"])
    saved_stats = _abstract(info["stats"])
    restore_into(params, saved_params)  # the checks, with their readable messages
    if stats:
        restore_into(stats, saved_stats)
    # saved under their positions in the saving run's order, which may not be this one's
    target = {"params": _by_position(params, saved_params),
              "stats": _by_position(stats, saved_stats)}
    items = {_MODEL: ocp.args.StandardRestore(_nonempty(target))}
    opt_template = None
    if opt_state is not None:
        opt_template = _check_opt(path, info, opt_state)
        if opt_template[0]:
            items[_OPT] = ocp.args.StandardRestore(
                _indexed(_target(v) for v in opt_template[0]))
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            restored = checkpointer.restore(path, args=ocp.args.Composite(**items))
    except Exception as exc:  # orbax and tensorstore raise many kinds for bad files
        raise CheckpointError(
            f"sharded checkpoint '{path}' is damaged: orbax cannot read it "
            f"({type(exc).__name__}: {_first_line(exc)})",
            hint="restore it from a backup, or train afresh",
        ) from exc
    model = restored[_MODEL] or {}
    opt = None
    if opt_template is not None:
        leaves, treedef = opt_template
        values = restored[_OPT] if leaves else {}
        opt = jax.tree_util.tree_unflatten(treedef, [values[str(i)] for i in range(len(leaves))])
    return Checkpoint(
        params=_by_name(params, saved_params, model.get("params", {})),
        stats=_by_name(stats, saved_stats, model.get("stats", {})),
        opt_state=opt,
        step=info["step"],
        epoch=info["epoch"],
        source=info["source"],
        source_hash=info["source_hash"],
        meta=dict(info["meta"]),
    )


def _read_info(path: Path) -> dict:
    """Our JSON item, checked: format, version, types, and the source against its hash."""
    file = path / _META / "metadata"
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"sharded checkpoint '{path}' is damaged: its metadata ({file.name}) is missing "
            f"or unreadable ({exc})",
            hint="restore it from a backup, or train afresh",
        ) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a graphdl sharded checkpoint")
    version = info.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"sharded checkpoint '{path}' has format version {version!r}; this graphdl "
            f"reads version {FORMAT_VERSION} and older", hint="upgrade graphdl")
    kinds = {"step": int, "epoch": int, "source": str, "source_hash": str, "meta": dict,
             "params": list, "stats": list}
    for key, kind in kinds.items():
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise CheckpointError(
                f"sharded checkpoint '{path}' is corrupt: metadata '{key}' is missing or "
                "invalid")
    if source_hash(info["source"]) != info["source_hash"]:
        raise CheckpointError(
            f"sharded checkpoint '{path}' is corrupt: its source does not match its sha256")
    return info


def _check_opt(path: Path, info: dict, template: Any) -> tuple[list, Any]:
    """The template's optimizer leaves and treedef, checked against the saved layout."""
    saved = info.get("opt")
    if saved is None:
        raise CheckpointError(
            f"checkpoint '{path}' has no optimizer state",
            hint="it was saved without one; resume with a fresh optimizer instead")
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = [(jax.tree_util.keystr(p), np.shape(leaf)) for p, leaf in flat]
    got = [(p, tuple(shape)) for p, shape, _ in saved]
    mismatch = _first_leaf_mismatch(expected, got)
    if mismatch is not None:
        raise CheckpointError(
            f"the optimizer state in '{path}' does not match this model's optimizer: "
            f"{mismatch}",
            hint="the optimizer or the model changed since the checkpoint was written; "
            "train from scratch, or restore the original settings")
    return [leaf for _, leaf in flat], treedef


def _opt_leaves(opt_state: Any | None) -> tuple[list | None, list[str]]:
    if opt_state is None:
        return None, []
    flat = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return [leaf for _, leaf in flat], [jax.tree_util.keystr(p) for p, _ in flat]


def _layout(arrays: dict[str, Any]) -> list:
    return [[name, list(np.shape(v)), _dtype_name(v)] for name, v in arrays.items()]


def _dtype_name(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    return np.dtype(dtype if dtype is not None else np.asarray(value).dtype).name


def _abstract(layout: list) -> dict[str, jax.ShapeDtypeStruct]:
    """The saved arrays' names, shapes and dtypes, for `restore_into`'s checks."""
    out = {}
    for name, shape, dtype in layout:
        out[name] = jax.ShapeDtypeStruct(tuple(shape), jax.numpy.dtype(dtype))
    return out


def _target(like: Any) -> jax.ShapeDtypeStruct:
    """Where a restored array goes: the template's shape, dtype and sharding (one local
    device for a template that is not a jax array)."""
    sharding = getattr(like, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(np.shape(like), jax.numpy.dtype(_dtype_name(like)),
                                sharding=sharding)


def _indexed(values) -> dict[str, Any]:
    # Keys by position, names in our JSON: parameter names hold dots, which orbax's own
    # key paths would read as nesting.
    return {str(i): v for i, v in enumerate(values)}


def _by_position(templates: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """The restore target of each template array, keyed by its position when saved."""
    position = {name: str(i) for i, name in enumerate(saved)}
    return {position[name]: _target(like) for name, like in templates.items()}


def _by_name(templates: dict[str, Any], saved: dict[str, Any], values: dict[str, Any]
             ) -> dict[str, Any]:
    position = {name: str(i) for i, name in enumerate(saved)}
    return {name: values[position[name]] for name in templates}


def _nonempty(tree: dict) -> dict:
    return {k: v for k, v in tree.items() if v}  # orbax stores no empty subtrees


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
