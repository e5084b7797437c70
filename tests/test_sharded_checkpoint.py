"""Sharded checkpoints (orbax): N devices or processes save, M restore; a killed save is
never taken for a checkpoint; a damaged one is a clear error; `graphdl run` reads either
format of OUT/checkpoint."""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_runtime import assert_user_error, make_project, run_in_process, same_params

import graphdl.runtime.sharded_checkpoint as sc
import graphdl.runtime.train as train_module
from graphdl.runtime.checkpoint import CheckpointError, load_checkpoint
from graphdl.runtime.sharded_checkpoint import (
    SHARDED_DIR,
    folder_state,
    load_folder,
    save_folder,
    sharded_name,
)

# orbax reads with asyncio: after a read that fails on a damaged file, a callback of its
# event loop may meet the loop closed when it is collected, an "exception ignored" that
# pytest reports at whichever test runs then. Collected here, at each test's end, and
# not counted: the checkpoint's own error is what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_orbax_leftovers():
    yield
    gc.collect()


REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_sharded_worker.py")
SOURCE = "graph g(x: f32[B, 4]) { return dense(x, 8) }\n"


def worker(*args, stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)  # the worker sets the device count it is given
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def finish(proc: subprocess.Popen, timeout: int = 180) -> list[dict]:
    """The JSON lines the worker printed."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- (a) one process, 4 simulated devices: save sharded over 4, restore onto 1 and onto 2 ----
def test_saved_over_4_devices_restores_onto_1_and_onto_2(tmp_path):
    folder = tmp_path / "checkpoint"
    [saved] = finish(worker("save", folder, 4))
    assert saved["saved"] and sharded_name(folder) is not None
    # a fresh process with 4 devices restores onto the first one, then onto the first two
    for devices, got in zip((1, 2), finish(worker("restore", folder, 4, "--onto", "1,2"))):
        assert got["equal"] and got["mu_equal"], got
        assert got["shardings"] == [str(devices)], got  # placed as the template asked
        assert (got["step"], got["epoch"], got["count"]) == (7, 2, 1), got


# -- (b) 2 processes x 2 devices save, 1 process restores ---------------------------------------
@pytest.mark.slow
def test_two_processes_save_and_one_process_restores(tmp_path):
    folder = tmp_path / "checkpoint"
    port = free_port()
    procs = [worker("save", folder, 2, port, 2, index) for index in (0, 1)]
    outs = [finish(p)[0] for p in procs]
    assert [o["process"] for o in outs] == [0, 1]
    name = sharded_name(folder)
    info = json.loads((folder / SHARDED_DIR / name / "graphdl" / "metadata").read_text())
    assert (info["process_count"], info["device_count"]) == (2, 4)
    # the portable file, written by process 0 from the gathered shards, holds the whole arrays
    ckpt = load_checkpoint(folder)
    np.testing.assert_array_equal(ckpt.params["g.dense.w"],
                                  np.arange(32, dtype=np.float32).reshape(8, 4) / 7)
    for devices in (1, 2):
        [got] = finish(worker("restore", folder, devices))
        assert got["equal"] and got["mu_equal"] and got["sharded"] == name, got
        assert got["shardings"] == [str(devices)], got


@pytest.mark.slow
@pytest.mark.parametrize("portable", [False, True])
def test_two_processes_restore_onto_their_shardings(tmp_path, portable):
    """A checkpoint of 1 process x 4 devices (sharded, or the portable file alone: a
    one-process run) resumes in 2 processes x 1 device, each reading its own rows."""
    folder = tmp_path / "checkpoint"
    finish(worker("save", folder, 4, *(["--portable"] if portable else [])))
    assert (sharded_name(folder) is None) == portable
    port = free_port()
    procs = [worker("restore", folder, 1, port, 2, index) for index in (0, 1)]
    for proc in procs:
        [got] = finish(proc)
        assert got["equal"] and got["mu_equal"] and got["shardings"] == ["2"], got


# -- (c) interrupted saves, damaged checkpoints, mismatches (in this process, one device) ------
def state(scale: float):
    params = {"g.dense.w": jnp.arange(32, dtype=jnp.float32).reshape(8, 4) * scale,
              "g.dense.b": jnp.arange(8, dtype=jnp.float32) * scale}
    stats = {"g.bn.mean": jnp.full((8,), scale)}
    return params, stats, optax.adam(1e-2).init(params)


def save(folder: Path, scale: float, step: int, sharded: bool = True) -> None:
    params, stats, opt = state(scale)
    save_folder(folder, params=params, stats=stats, opt_state=opt, step=step, epoch=0,
                source=SOURCE, meta={"train": "t"}, sharded=sharded)


def load(folder: Path):
    params, stats, opt = state(0.0)
    return load_folder(folder, params=params, stats=stats, opt_state=opt)


def test_a_save_killed_before_its_commit_leaves_the_earlier_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint"
    save(folder, 1.0, step=3)
    first = sharded_name(folder)

    def killed(*args, **kwargs):  # the orbax part is written and finished, then the end
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(sc, "save_checkpoint", killed)
        with pytest.raises(KeyboardInterrupt):
            save(folder, 2.0, step=4)
    leftovers = sorted(p.name for p in (folder / SHARDED_DIR).iterdir())
    assert len(leftovers) == 2 and first in leftovers  # the new one, finished, is not named
    # an orbax temp folder of a save killed while writing, too
    (folder / SHARDED_DIR / "step_00000005-0000beef.orbax-checkpoint-tmp-1").mkdir()
    assert folder_state(folder) == "ok"
    ckpt = load(folder)
    assert ckpt.step == 3 and ckpt.meta["sharded"] == first
    np.testing.assert_array_equal(ckpt.params["g.dense.b"], np.arange(8))
    # the next save commits a new one and removes every other folder
    save(folder, 3.0, step=5)
    assert [p.name for p in (folder / SHARDED_DIR).iterdir()] == [sharded_name(folder)]
    assert load(folder).step == 5


def test_a_folder_with_no_committed_save_holds_no_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint"
    monkeypatch.setattr(sc, "save_checkpoint", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save(folder, 1.0, step=1)
    assert any((folder / SHARDED_DIR).iterdir())  # a whole orbax checkpoint, never committed
    assert folder_state(folder) == "missing"
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load(folder)


def test_a_killed_save_loop_always_leaves_a_whole_checkpoint(tmp_path):
    """SIGKILL at random instants of a loop of saves: what is left is a checkpoint whose
    values are those of its own step."""
    folder = tmp_path / "checkpoint"
    rng = random.Random(0)
    log = tmp_path / "stderr"
    with open(log, "w") as err:
        proc = worker("loop", folder, 2, stderr=err)
    try:
        line = proc.stdout.readline()  # the first save is committed
        assert line.startswith("saved"), log.read_text()[-3000:]
        for _ in range(3):
            time.sleep(rng.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGSTOP)  # a frozen instant, checked, then killed there
            snapshot = tmp_path / f"at-{_}"
            shutil.copytree(folder, snapshot, symlinks=True)
            proc.send_signal(signal.SIGCONT)
            _check_whole(snapshot)
        while not line.startswith("saved 3"):  # the loop has replaced checkpoints
            line = proc.stdout.readline()
            assert line, log.read_text()[-3000:]
        time.sleep(rng.uniform(0.05, 0.3))
    finally:
        proc.kill()
        proc.communicate()
    assert _check_whole(folder) >= 3


def _check_whole(folder: Path) -> int:
    assert folder_state(folder) == "ok"
    ckpt = load(folder)
    assert ckpt.step >= 1
    np.testing.assert_array_equal(ckpt.params["g.dense.b"], np.arange(8) * ckpt.step)
    np.testing.assert_array_equal(ckpt.stats["g.bn.mean"], np.full(8, float(ckpt.step)))
    return ckpt.step


@pytest.mark.parametrize("damage, message", [
    ("remove", "is damaged: its metadata"),
    ("data", "is damaged: orbax cannot read it"),
    ("metadata", "is damaged: its metadata"),
    ("source", "its source does not match its sha256"),
])
def test_a_damaged_sharded_checkpoint_is_a_clear_error(tmp_path, damage, message):
    folder = tmp_path / "checkpoint"
    save(folder, 1.0, step=2)
    where = folder / SHARDED_DIR / sharded_name(folder)
    if damage == "remove":
        shutil.rmtree(where)
    elif damage == "data":  # flipped bytes in the arrays' data: the store's checksum fails
        for file in (where / "model" / "d").iterdir():
            blob = bytearray(file.read_bytes())
            blob[len(blob) // 2] ^= 0xFF
            file.write_bytes(bytes(blob))
    elif damage == "metadata":
        (where / "graphdl" / "metadata").write_text('{"format": "graphdl.sharded_ch')
    else:
        info = json.loads((where / "graphdl" / "metadata").read_text())
        info["source"] += "# changed\n"
        (where / "graphdl" / "metadata").write_text(json.dumps(info))
    if damage != "data":  # the cheap check reads the metadata, not the arrays
        assert folder_state(folder) == "damaged"
    with pytest.raises(CheckpointError, match=message):
        load(folder)


def test_another_models_sharded_checkpoint_names_the_differences(tmp_path):
    folder = tmp_path / "checkpoint"
    save(folder, 1.0, step=2)
    params, stats, opt = state(0.0)
    params["g.dense2.w"] = params.pop("g.dense.w")
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint \(1\): g.dense2.w"):
        load_folder(folder, params=params, stats=stats, opt_state=opt)
    params, stats, _ = state(0.0)
    with pytest.raises(CheckpointError, match="optimizer state .* does not match"):
        load_folder(folder, params=params, stats=stats, opt_state=optax.sgd(0.1, 0.9).init(params))


def test_a_one_process_save_replaces_the_sharded_one(tmp_path):
    folder = tmp_path / "checkpoint"
    save(folder, 1.0, step=2)
    save(folder, 2.0, step=3, sharded=False)
    assert sharded_name(folder) is None and not (folder / SHARDED_DIR).exists()
    ckpt = load(folder)
    assert ckpt.step == 3 and "sharded" not in ckpt.meta
    # restored where the template's arrays are
    assert ckpt.params["g.dense.w"].sharding == state(0.0)[0]["g.dense.w"].sharding


# -- graphdl run: --resume and --eval read the sharded checkpoint --------------------------
def sharded_saves(monkeypatch) -> None:
    """Make this one-process run save as a multi-process run does."""
    def save_folder_sharded(*args, sharded=None, **kwargs):
        return save_folder(*args, sharded=True if sharded is None else sharded, **kwargs)

    monkeypatch.setattr(train_module, "save_folder", save_folder_sharded)


def test_run_resumes_and_evaluates_from_the_sharded_checkpoint(tmp_path, capsys, monkeypatch):
    path = make_project(tmp_path / "p")
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        sharded_saves(m)
        code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 3)
        assert code == 0, err
        folder = out / "checkpoint"
        assert sharded_name(folder) is not None
        # the two formats of one save hold the same state
        portable = load_checkpoint(folder)
        params, stats = ({k: jnp.zeros_like(v) for k, v in d.items()}
                         for d in (portable.params, portable.stats))
        sharded = load_folder(folder, params=params, stats=stats)
        same_params(portable.params, {k: np.asarray(v) for k, v in sharded.params.items()})
        same_params(portable.stats, {k: np.asarray(v) for k, v in sharded.stats.items()})
        # from here on the portable file beside it must not be read
        m.setattr(sc, "load_checkpoint", _not_read)
        code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet",
                                      "--resume", "--steps", 2)
        assert code == 0, err
        code, table, err = run_in_process(capsys, "run", path, "--out", out, "--eval")
        assert code == 0 and "accuracy" in table, err
    assert load_checkpoint(folder).step == 5 and sharded_name(folder).startswith("step_00000005")


@pytest.mark.slow
def test_a_run_resumed_from_the_sharded_checkpoint_equals_one_from_the_file(tmp_path, capsys,
                                                                              monkeypatch):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    path = make_project(tmp_path / "p")
    for out in (plain, sharded):
        with monkeypatch.context() as m:
            if out == sharded:
                sharded_saves(m)
                m.setattr(sc, "load_checkpoint", _not_read)
            for flags in (["--steps", 3], ["--resume", "--steps", 2]):
                code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet",
                                              *flags)
                assert code == 0, err
    a, b = load_checkpoint(plain / "checkpoint"), load_checkpoint(sharded / "checkpoint")
    assert a.step == b.step == 5
    same_params(a.params, b.params)  # the optimizer state and the statistics came back whole
    same_params(a.stats, b.stats)
    code, plain_eval, err = run_in_process(capsys, "run", path, "--out", plain, "--eval")
    assert code == 0, err
    code, sharded_eval, err = run_in_process(capsys, "run", path, "--out", sharded, "--eval")
    assert code == 0, err
    assert plain_eval == sharded_eval.replace(str(sharded), str(plain))  # the same metrics


def _not_read(*args, **kwargs):
    raise AssertionError("the safetensors file was read, not the sharded checkpoint")


def test_run_refuses_a_damaged_sharded_checkpoint(tmp_path, capsys, monkeypatch):
    path = make_project(tmp_path / "p")
    out = tmp_path / "out"
    sharded_saves(monkeypatch)
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 2)
    assert code == 0, err
    shutil.rmtree(out / "checkpoint" / SHARDED_DIR)
    for flags in (["--resume"], ["--eval"], []):
        code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", *flags)
        assert_user_error(code, err, "damaged graphdl checkpoint", one_line=False)
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 2,
                                  "--overwrite")
    assert code == 0, err
    assert folder_state(out / "checkpoint") == "ok"


def test_a_link_at_the_sharded_folder_is_refused(tmp_path, capsys, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / SHARDED_DIR).symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="symbolic link"):
        save(tmp_path / "checkpoint", 1.0, step=1)
    assert not any(elsewhere.iterdir())
    path = make_project(tmp_path / "p")
    out = tmp_path / "p" / "out"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / SHARDED_DIR).symlink_to(elsewhere)
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 1)
    assert_user_error(code, err, "symbolic link")


def test_restore_places_arrays_like_the_template_from_the_portable_file(tmp_path):
    folder = tmp_path / "checkpoint"
    save(folder, 1.0, step=2, sharded=False)
    params, stats, opt = state(0.0)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[-1])
    params = {k: jax.device_put(v, one) for k, v in params.items()}
    ckpt = load_folder(folder, params=params, stats=stats, opt_state=None)
    assert ckpt.opt_state is None
    assert all(v.sharding == one for v in ckpt.params.values())
