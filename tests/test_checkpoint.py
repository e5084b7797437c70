"""Checkpoints: round trip, plain-safetensors readability, errors, and SIGKILL safety."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
import safetensors
import safetensors.numpy

from graphdl.runtime.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    checkpoint_state,
    is_graphdl_checkpoint,
    load_checkpoint,
    restore_into,
    save_checkpoint,
)

SOURCE = "graph mlp(x: f32[B, 4]) {\n  h = dense(x, 3)\n  return h\n}\n"
WRITER = Path(__file__).with_name("_ckpt_writer.py")


def make_params() -> dict[str, jax.Array]:
    return {
        "mlp.h.dense.w": jnp.arange(12, dtype=jnp.float32).reshape(4, 3) / 7,
        "mlp.h.dense.b": jnp.array([0.5, -1.25, 3.0], dtype=jnp.float32),
        "mlp.scale": jnp.array(2.5, dtype=jnp.float32),  # 0-d must stay 0-d
    }


def make_stats() -> dict[str, np.ndarray]:
    return {"mlp.bn.mean": np.array([1, 2, 3], np.float32), "mlp.bn.count": np.array(7, np.int32)}


def trained_adam_state(params: dict) -> object:
    """Adam state after one update, so mu/nu/count are not just their initial zeros."""
    opt = optax.adam(1e-3)
    state = opt.init(params)
    grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.3, params)
    _, state = opt.update(grads, state, params)
    return state


def save_example(directory: Path, **overrides) -> dict:
    params = make_params()
    kwargs = dict(
        params=params,
        stats=make_stats(),
        opt_state=trained_adam_state(params),
        step=123,
        epoch=4,
        source=SOURCE,
        meta={"rng_key": "[0, 42]", "graphs": '["mlp"]'},
    )
    kwargs.update(overrides)
    save_checkpoint(directory, **kwargs)
    return kwargs


def assert_same_arrays(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        value = np.asarray(value)
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# ----------------------------------------------------------------------------- round trip


def test_round_trip_restores_everything_exactly(tmp_path: Path) -> None:
    saved = save_example(tmp_path / "ck")
    template = optax.adam(1e-3).init(make_params())
    ckpt = load_checkpoint(tmp_path / "ck", opt_state_template=template)

    assert isinstance(ckpt, Checkpoint)
    assert_same_arrays(ckpt.params, saved["params"])
    assert ckpt.params["mlp.scale"].ndim == 0
    assert_same_arrays(ckpt.stats, saved["stats"])
    assert (ckpt.step, ckpt.epoch) == (123, 4)
    assert ckpt.source == SOURCE
    assert ckpt.source_hash == hashlib.sha256(SOURCE.encode()).hexdigest()
    assert ckpt.meta == saved["meta"]

    want_opt = saved["opt_state"]
    assert jax.tree_util.tree_structure(ckpt.opt_state) == jax.tree_util.tree_structure(want_opt)
    assert int(ckpt.opt_state[0].count) == 1
    for got, want in zip(
        jax.tree_util.tree_leaves(ckpt.opt_state), jax.tree_util.tree_leaves(want_opt)
    ):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, np.asarray(want))


def test_restored_opt_state_keeps_training(tmp_path: Path) -> None:
    # The restored pytree must be usable by optax, not merely look alike.
    save_example(tmp_path)
    params = make_params()
    opt = optax.adam(1e-3)
    ckpt = load_checkpoint(tmp_path, opt_state_template=opt.init(params))
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    _, state = opt.update(grads, ckpt.opt_state, params)
    assert int(state[0].count) == 2


def test_without_template_opt_state_is_none(tmp_path: Path) -> None:
    save_example(tmp_path)
    assert load_checkpoint(tmp_path).opt_state is None


def test_bfloat16_and_int_dtypes_are_kept(tmp_path: Path) -> None:
    params = {
        "a.w": np.array([1.5, -2.0], ml_dtypes.bfloat16),
        "a.i": np.array([[1, 2]], np.int32),
        "a.h": np.array([0.25], np.float16),
    }
    save_checkpoint(tmp_path, params=params, stats={}, opt_state=None, step=0, epoch=0, source="")
    assert_same_arrays(load_checkpoint(tmp_path).params, params)


def test_user_meta_cannot_shadow_reserved_keys(tmp_path: Path) -> None:
    save_example(tmp_path, meta={"step": "999", "source": "evil"})
    ckpt = load_checkpoint(tmp_path)
    assert (ckpt.step, ckpt.source) == (123, SOURCE)
    assert ckpt.meta == {"step": "999", "source": "evil"}


def test_overwrite_replaces_and_leaves_one_file(tmp_path: Path) -> None:
    save_example(tmp_path, step=1)
    save_example(tmp_path, step=2)
    assert load_checkpoint(tmp_path).step == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


# ------------------------------------------------------------------- readable without graphdl


def test_plain_safetensors_reads_params_by_name(tmp_path: Path) -> None:
    saved = save_example(tmp_path)
    path = checkpoint_path(tmp_path)
    assert path == tmp_path / "checkpoint.safetensors"

    tensors = safetensors.numpy.load_file(str(path))
    for name, value in saved["params"].items():
        np.testing.assert_array_equal(tensors[f"params/{name}"], np.asarray(value))
    for name, value in saved["stats"].items():
        np.testing.assert_array_equal(tensors[f"stats/{name}"], value)
    assert tensors["params/mlp.scale"].shape == ()

    with safetensors.safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
    assert metadata["source"] == SOURCE
    assert metadata["source_hash"] == hashlib.sha256(SOURCE.encode("utf-8")).hexdigest()
    assert metadata["format"] == "graphdl.checkpoint"
    assert (metadata["step"], metadata["epoch"]) == ("123", "4")
    assert metadata["meta/rng_key"] == "[0, 42]"


def test_is_graphdl_checkpoint(tmp_path: Path) -> None:
    save_example(tmp_path / "ours")
    safetensors.numpy.save_file({"w": np.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    (tmp_path / "junk").write_bytes(b"not a checkpoint at all")

    assert is_graphdl_checkpoint(tmp_path / "ours")
    assert is_graphdl_checkpoint(checkpoint_path(tmp_path / "ours"))
    assert not is_graphdl_checkpoint(tmp_path / "foreign.safetensors")
    assert not is_graphdl_checkpoint(tmp_path / "junk")
    assert not is_graphdl_checkpoint(tmp_path / "nowhere")


# ------------------------------------------------------------------------------- errors


def test_missing_directory_and_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(tmp_path / "nowhere")
    assert info.value.hint

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint.safetensors' is missing"):
        load_checkpoint(tmp_path / "empty")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file(tmp_path: Path, damage: str) -> None:
    save_example(tmp_path)
    path = checkpoint_path(tmp_path)
    data = path.read_bytes()
    replacement = {"garbage": b"\x07" * 64, "truncated": data[: len(data) - 10], "empty": b""}
    path.write_bytes(replacement[damage])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)


def test_tampered_source_is_detected(tmp_path: Path) -> None:
    saved = save_example(tmp_path)
    path = checkpoint_path(tmp_path)
    with safetensors.safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
    tensors = safetensors.numpy.load_file(str(path))
    metadata["source"] = saved["source"] + "# edited\n"
    safetensors.numpy.save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path)


def test_foreign_safetensors_is_refused_and_never_overwritten(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path)
    safetensors.numpy.save_file({"w": np.ones(3, np.float32)}, str(path))
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="not a graphdl checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_example(tmp_path)
    assert path.read_bytes() == before


def test_save_into_a_file_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        save_example(tmp_path / "f")


def test_template_from_another_optimizer(tmp_path: Path) -> None:
    save_example(tmp_path)
    template = optax.sgd(0.1, momentum=0.9).init(make_params())
    with pytest.raises(
        CheckpointError, match=r"leaf 0 is \[0\]\.count in the checkpoint but \[0\]\.trace"
    ):
        load_checkpoint(tmp_path, opt_state_template=template)


def test_template_with_different_shape_names_the_leaf(tmp_path: Path) -> None:
    save_example(tmp_path)
    params = make_params()
    params["mlp.h.dense.w"] = jnp.zeros((5, 3), jnp.float32)
    template = optax.adam(1e-3).init(params)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path, opt_state_template=template)
    assert (
        "[0].mu['mlp.h.dense.w'] has shape [4, 3] in the checkpoint but [5, 3]"
        in info.value.message
    )


def test_template_with_extra_leaf(tmp_path: Path) -> None:
    save_example(tmp_path)
    params = {**make_params(), "zz.extra": jnp.zeros(2)}  # sorts last: only the count differs
    template = optax.adam(1e-3).init(params)
    with pytest.raises(CheckpointError, match="zz.extra"):
        load_checkpoint(tmp_path, opt_state_template=template)


def test_template_but_no_saved_opt_state(tmp_path: Path) -> None:
    save_example(tmp_path, opt_state=None)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path, opt_state_template=optax.adam(1e-3).init(make_params()))


def test_bad_arguments_are_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_example(tmp_path, step="12")
    with pytest.raises(TypeError):
        save_example(tmp_path, meta={"k": 3})
    assert not checkpoint_path(tmp_path).exists()


# --------------------------------------------------------------------------- restore_into


def test_restore_into_matching_returns_template_order(tmp_path: Path) -> None:
    template = make_params()
    ckpt = {name: np.asarray(v) for name, v in reversed(list(template.items()))}
    restored = restore_into(template, ckpt)
    assert list(restored) == list(template)
    assert_same_arrays(restored, {k: np.asarray(v) for k, v in template.items()})


def test_restore_into_reports_missing_unexpected_and_did_you_mean() -> None:
    template = make_params()
    ckpt = {name: np.asarray(v) for name, v in template.items()}
    ckpt["mlp.h.dens.w"] = ckpt.pop("mlp.h.dense.w")  # a renamed layer
    ckpt["other.bias"] = np.zeros(1, np.float32)
    with pytest.raises(CheckpointError) as info:
        restore_into(template, ckpt)
    message, hint = info.value.message, info.value.hint
    assert "missing from the checkpoint (1): mlp.h.dense.w" in message
    assert "unexpected in the checkpoint (2): mlp.h.dens.w, other.bias" in message
    assert "did you mean the checkpoint's 'mlp.h.dens.w'" in hint
    assert "hint:" in str(info.value)


def test_restore_into_reports_shape_and_dtype_mismatch() -> None:
    template = make_params()
    ckpt = {name: np.asarray(v) for name, v in template.items()}
    ckpt["mlp.h.dense.b"] = np.zeros(4, np.float32)
    ckpt["mlp.scale"] = np.array(1, np.int32)
    with pytest.raises(CheckpointError) as info:
        restore_into(template, ckpt)
    assert "mlp.h.dense.b: checkpoint float32[4], model float32[3]" in info.value.message
    assert "mlp.scale: checkpoint int32[], model float32[]" in info.value.message
    assert "missing" not in info.value.message


# ---------------------------------------------------------------------- stale temp files


def test_next_save_removes_temps_of_dead_writers_only(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_tmp = tmp_path / f".checkpoint.safetensors.tmp-{int(dead.stdout)}"
    live_tmp = tmp_path / f".checkpoint.safetensors.tmp-{os.getppid()}"  # a live process
    own_tmp = tmp_path / f".checkpoint.safetensors.tmp-{os.getpid()}"
    for tmp in (dead_tmp, live_tmp, own_tmp):
        tmp.write_bytes(b"half a checkpoint")
    save_example(tmp_path)
    assert not dead_tmp.exists()
    assert live_tmp.exists()  # its writer may still be about to rename it
    assert load_checkpoint(tmp_path).step == 123


# ------------------------------------------------------------------------ kill while saving


class Writer:
    """A _ckpt_writer.py subprocess whose output lines are collected by a thread."""

    def __init__(self, directory: Path, first_step: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(directory), str(first_step), "64"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.tmp = directory / f".checkpoint.safetensors.tmp-{self.proc.pid}"
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_for(self, predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"writer exited early: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"writer timed out; output so far: {self.lines}")
            time.sleep(0.0005)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def steps(self, tag: str) -> list[int]:
        return [int(line.split()[1]) for line in self.lines if line.startswith(tag + " ")]


def assert_consistent(ckpt: Checkpoint) -> None:
    """A whole checkpoint from the writer (or A): every value equals its step."""
    step = ckpt.step
    assert ckpt.epoch == step
    assert ckpt.meta["marker"] == str(step)
    for name, value in {**ckpt.params, **ckpt.stats}.items():
        assert np.all(value == step), f"{name} is not filled with step {step}"
    for leaf in jax.tree_util.tree_leaves(ckpt.opt_state):
        assert np.all(leaf == step)


def write_checkpoint_a(directory: Path) -> None:
    zeros = {f"layer{i}.dense.w": np.zeros(1000, np.float32) for i in range(8)}
    save_checkpoint(
        directory,
        params=zeros,
        stats={"bn.mean": np.zeros(16, np.float32)},
        opt_state=OPT_TEMPLATE,
        step=0,
        epoch=0,
        source="A",
        meta={"marker": "0"},
    )


# The writer's optimizer-state structure (see _ckpt_writer.make_arrays).
OPT_TEMPLATE = {"count": np.zeros((), np.int32), "mu": {"layer0.dense.w": np.zeros(16, np.float32)}}


def test_sigkill_while_saving_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "ck"
    write_checkpoint_a(directory)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # (how to aim the kill, its delay): "tmp" kills the moment the temp file appears,
    # i.e. certainly mid-write; "begin" right after a save announced itself;
    # "random" at a random moment after the writer is set up.
    plan = [
        ("tmp", 0.0),
        ("random", rng.uniform(0.05, 0.5)),
        ("begin", rng.uniform(0, 0.05)),
        ("tmp", 0.0),
        ("random", rng.uniform(0.05, 0.5)),
        ("random", rng.uniform(0.05, 0.5)),
    ]
    previous, killed_mid_write = 0, 0
    for round_no, (aim, delay) in enumerate(plan):
        writer = Writer(directory, first_step=1000 * (round_no + 1))
        context = f"seed={seed} round={round_no} aim={aim} delay={delay:.3f}"
        writer.wait_for(lambda w=writer: "READY" in w.lines)
        if aim == "tmp":
            writer.wait_for(writer.tmp.exists)
        elif aim == "begin":
            writer.wait_for(lambda w=writer: len(w.steps("BEGIN")) >= 2)
        time.sleep(delay)
        writer.kill()
        killed_mid_write += writer.tmp.exists()

        ckpt = load_checkpoint(directory, opt_state_template=OPT_TEMPLATE)
        assert_consistent(ckpt)
        begun, done = writer.steps("BEGIN"), writer.steps("DONE")
        assert ckpt.step in {previous, *begun}, f"{context}: loaded step {ckpt.step} from nowhere"
        if done:  # a save that returned must be the one on disk (or a later one)
            assert ckpt.step >= max(done), f"{context}: lost completed save {max(done)}"
        previous = ckpt.step

    assert killed_mid_write >= 1, f"seed={seed}: no kill landed while a temp file was being written"
    # The next save cleans up what the killed writers left behind.
    write_checkpoint_a(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint.safetensors"]
    assert load_checkpoint(directory).step == 0


# -- damage to the tensor data, and telling damaged from foreign ---------------------------
def test_flipped_tensor_bytes_are_found_on_load(tmp_path: Path) -> None:
    """The sha256 covers the tensor data, not only the source: one flipped byte in a
    parameter is an error on load, never silently trained on."""
    save_example(tmp_path / "ckpt")
    path = checkpoint_path(tmp_path / "ckpt")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # inside the last tensor's bytes; the header still parses
    path.write_bytes(bytes(data))
    assert checkpoint_state(path) == "ok"  # the cheap check sees a whole file...
    with pytest.raises(CheckpointError, match="damaged .*sha256"):
        load_checkpoint(tmp_path / "ckpt")  # ...the load sees the changed data


def test_checkpoint_state_tells_damaged_from_foreign(tmp_path: Path) -> None:
    save_example(tmp_path / "ours")
    data = checkpoint_path(tmp_path / "ours").read_bytes()
    assert checkpoint_state(tmp_path / "ours") == "ok"
    (tmp_path / "cut").mkdir()
    checkpoint_path(tmp_path / "cut").write_bytes(data[: len(data) - 10])
    assert checkpoint_state(tmp_path / "cut") == "damaged"
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "cut")
    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "foreign"))
    assert checkpoint_state(tmp_path / "foreign") == "foreign"
    (tmp_path / "junk").write_bytes(b"\x07" * 64)
    assert checkpoint_state(tmp_path / "junk") == "foreign"
    assert checkpoint_state(tmp_path / "nowhere") == "missing"


def test_a_link_at_the_checkpoint_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "ckpt").mkdir()
    checkpoint_path(tmp_path / "ckpt").symlink_to(victim)
    with pytest.raises(CheckpointError, match="symbolic link"):
        save_example(tmp_path / "ckpt")
    assert victim.read_text() == "keep me"
