"""A finished run is never lost: refusals, signals, non-finite losses, damaged or linked
files, unwritable folders, and what a run records about itself (metrics.jsonl header,
epochs, keep-best early stopping)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_runtime import (
    REPO,
    SCHEDULE,
    TRAIN,
    assert_user_error,
    make_project,
    run_in_process,
    same_params,
)

from graphdl.runtime.checkpoint import checkpoint_path, load_checkpoint
from graphdl.runtime.reporting import ema

CKPT = Path("checkpoint") / "checkpoint.safetensors"


def rows(out: Path) -> list[dict]:
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def trained(tmp_path, capsys):
    """A project with a finished 3-step run in OUT."""
    path = make_project(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 3)
    assert code == 0, err
    return path, out


def snapshot(out: Path) -> dict:
    return {p: (out / p).read_bytes() for p in (CKPT, Path("metrics.jsonl"), Path("loss.png"))}


# -- 1. nonsense lengths ---------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps 0: a run needs at least 1 step"),
    (["--steps", "-5"], "--steps -5: a run needs at least 1 step"),
    # checked like `epochs = -1` in the file
    (["--set", "train.epochs=-1"], "--set train.epochs=-1: `epochs` must be an integer >= 1"),
    (["--set", "train.epochs=0"], "--set train.epochs=0: `epochs` must be an integer >= 1"),
])
def test_nonsense_lengths_are_user_errors_before_anything_is_written(trained, capsys, flags,
                                                                     message):
    path, out = trained
    before = snapshot(out)
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--overwrite",
                                  *flags)
    assert_user_error(code, err, message, one_line=False)
    assert snapshot(out) == before
    code, _, err = run_in_process(capsys, "run", path, "--out", out.parent / "fresh", *flags)
    assert code == 2 and not (out.parent / "fresh").exists(), err


def test_metrics_of_another_run_are_not_replaced(tmp_path, capsys):
    """metrics.jsonl without a checkpoint (a run that wrote no checkpoint yet) is refused
    like a checkpoint; --overwrite replaces it."""
    path = make_project(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 1)
    assert_user_error(code, err, "metrics.jsonl", "--overwrite", one_line=False)
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 1,
                                  "--overwrite")
    assert code == 0, err
    assert rows(out)[0]["split"] == "header"


# -- 2. SIGINT / SIGTERM ---------------------------------------------------------------------
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_and_resume_continues(tmp_path, sig, status):
    path = make_project(tmp_path, TRAIN.replace("epochs    = 3", "steps     = 1000000")
                        .replace("checkpoint every 4 steps\n", ""))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "graphdl", "run", path.name, "--out", "out",
                             "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "out" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    # a training record (the header's `"train_block": "train"` is written before training)
    while '"split": "train"' not in (metrics.read_text() if metrics.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err and "--resume" in err, err
    saved = load_checkpoint(tmp_path / "out" / "checkpoint").step
    assert 0 < saved < 1000000
    done = subprocess.run([sys.executable, "-m", "graphdl", "run", path.name, "--out", "out",
                           "--quiet", "--resume", "--steps", "2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(tmp_path / "out" / "checkpoint").step == saved + 2


# -- 3. non-finite losses --------------------------------------------------------------------
NAN = TRAIN.replace("adam(lr = 1e-2)", "sgd(lr = 1e9)").replace("|> batch_norm ", "") \
    .replace("epochs    = 3", "steps     = 500").replace("every 4 steps", "every 1 step")


def test_a_nan_loss_names_its_step_and_op_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """Losses sync every 5 steps here; the step named is still the first non-finite one,
    the op and line are the .gdl's, and no non-finite checkpoint replaced the good one."""
    path = make_project(tmp_path, NAN)
    out = tmp_path / "out"
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet")
    assert_user_error(code, err, "not finite (nan or inf) at step 4", "dense()",
                      f"{path}:2:", one_line=False)
    ckpt = load_checkpoint(out / "checkpoint")
    assert ckpt.step == 3
    assert all(np.all(np.isfinite(v)) for v in ckpt.params.values())


# -- 4. --resume never rewrites history in place ---------------------------------------------
def test_resume_writes_a_new_metrics_file(trained, capsys):
    """A hard link to the old metrics.jsonl sees no change: the records are written to a
    new file renamed over the name, so a kill mid-way leaves the old history whole."""
    path, out = trained
    (out / "old.jsonl").hardlink_to(out / "metrics.jsonl")
    old = (out / "old.jsonl").read_text()
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--resume",
                                  "--steps", 2)
    assert code == 0, err
    assert (out / "old.jsonl").read_text() == old
    new = rows(out)
    assert [r["step"] for r in new if r["split"] == "train"] == [1, 2, 3, 4, 5]
    assert [r.get("resumed_from") for r in new if r["split"] == "header"] == [None, 3]


# -- 5. links in --out -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["metrics.jsonl", "loss.png"])
def test_a_link_in_out_is_never_written_through(tmp_path, capsys, name):
    path = make_project(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / name).symlink_to(victim)
    for extra in ([], ["--overwrite"]):
        code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps",
                                      1, *extra)
        assert_user_error(code, err, "symbolic link", one_line=False)
    assert victim.read_text() == "keep me"


# -- 6. unwritable output --------------------------------------------------------------------
def test_an_unwritable_out_is_found_before_training(tmp_path, capsys, monkeypatch):
    import graphdl.runtime.writing as files
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)
    monkeypatch.setattr(files.os, "open", read_only)
    path = make_project(tmp_path)
    code, _, err = run_in_process(capsys, "run", path, "--out", tmp_path / "out", "--quiet")
    assert_user_error(code, err, "cannot write into", "Read-only file system", "nothing was trained",
                      one_line=False)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_a_failed_final_save_rescues_the_weights(tmp_path, capsys, monkeypatch):
    from graphdl.runtime import sharded_checkpoint as saving  # train.save writes through it
    real = saving.save_checkpoint

    def full_disk(directory, **kw):
        if Path(directory).parent == tmp_path / "out":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(directory, **kw)
    monkeypatch.setattr(saving, "save_checkpoint", full_disk)
    path = make_project(tmp_path, TRAIN.replace("checkpoint every 4 steps\n", ""))
    code, _, err = run_in_process(capsys, "run", path, "--out", tmp_path / "out", "--quiet",
                                  "--steps", 2)
    assert_user_error(code, err, "No space left on device", "saved to", one_line=False)
    rescue = Path(err.split("saved to ")[1].split()[0])
    assert load_checkpoint(rescue).step == 2


# -- 7. damaged checkpoints ------------------------------------------------------------------
def test_a_damaged_checkpoint_is_called_damaged_and_overwrite_replaces_it(trained, capsys):
    path, out = trained
    file = checkpoint_path(out / "checkpoint")
    file.write_bytes(file.read_bytes()[:-10])
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--resume")
    assert_user_error(code, err, "damaged", "--overwrite", one_line=False)
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 1,
                                  "--overwrite")
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint").step == 1


def test_flipped_bytes_stop_a_resume(trained, capsys):
    path, out = trained
    file = checkpoint_path(out / "checkpoint")
    data = bytearray(file.read_bytes())
    data[-3] ^= 0x10
    file.write_bytes(bytes(data))
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--resume")
    assert_user_error(code, err, "damaged", "sha256", one_line=False)


# -- 8. what a run records -------------------------------------------------------------------
def test_eval_loads_no_optimizer_state(trained, capsys, monkeypatch):
    from graphdl.runtime import sharded_checkpoint as loading  # train.restore reads through it
    templates = []
    real = loading.load_checkpoint
    monkeypatch.setattr(loading, "load_checkpoint", lambda d, opt_state_template=None:
                        (templates.append(opt_state_template), real(d))[1])
    path, out = trained
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--eval")
    assert code == 0, err
    assert templates == [None]


def test_header_epochs_and_throughput_records(tmp_path, capsys):
    path = make_project(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--set",
                                  "train.seed=3")
    assert code == 0, err
    records = rows(out)
    head = records[0]
    assert head["split"] == "header" and head["seed"] == 3 and head["jax"]
    assert {"graphdl", "platform", "device", "overrides"} <= set(head)
    assert json.loads(load_checkpoint(out / "checkpoint").meta["run"])["seed"] == 3
    train = [r for r in records if r["split"] == "train"]
    assert "examples_per_s" not in train[0] and "examples_per_s" in train[1]  # after compiling
    # one numbering: the epochs completed at the record's step (9 steps per epoch)
    assert all(r["epoch"] == r["step"] // 9 for r in records)


def test_early_stop_restores_the_best_weights(tmp_path):
    import graphdl
    from graphdl.api import train_model
    path = make_project(tmp_path, SCHEDULE.replace("LR", "3.0"))
    result = train_model(graphdl.load(path), out_dir=tmp_path / "a", progress=False)
    val = [r for r in result.history if r["split"] == "val"]
    assert result.steps < 72, "early stopping did not fire; pick another learning rate"
    best = max(val, key=lambda r: r["accuracy"])  # the first of the best
    again = train_model(graphdl.load(path), out_dir=tmp_path / "b", progress=False,
                        max_steps=best["step"])
    same_params(result.variables["params"], again.variables["params"])


def test_the_final_evaluation_after_an_early_stop_uses_the_restored_weights(tmp_path):
    # The val block ran at the stopping step on the weights being replaced; it runs again.
    import graphdl
    from graphdl.api import train_model
    text = SCHEDULE.replace("LR", "3.0").replace(
        "early_stop(accuracy, patience = 2)", 'early_stop(val_loss, patience = 1, mode = "min")'
    ).replace("accuracy = mean(", "val_loss = mean(cross_entropy(net(data.x), data.y))\n"
              "        accuracy = mean(")
    result = train_model(graphdl.load(make_project(tmp_path, text)), out_dir=tmp_path / "a",
                         progress=False)
    val = [r for r in result.history if r["split"] == "val"]
    assert result.steps < 72, "early stopping did not fire; pick another learning rate"
    best = min(val, key=lambda r: r["val_loss"])
    at_stop = [r for r in val if r["step"] == result.steps][0]  # before the weights went back
    assert at_stop["val_loss"] > best["val_loss"]
    assert result.metrics["val"]["val_loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_ema_starts_at_the_first_value_and_smooths():
    smooth = ema([1.0, 0.0, 1.0, 0.0], 0.9)
    assert smooth[0] == 1.0 and 0.0 < min(smooth[1:]) and max(smooth[1:]) < 1.0


def test_tensorboard_without_tensorboardx_is_a_user_error(tmp_path, capsys):
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        path = make_project(tmp_path)
        code, _, err = run_in_process(capsys, "run", path, "--out", tmp_path / "out",
                                      "--tensorboard")
        assert_user_error(code, err, "pip install tensorboardX")
        assert not (tmp_path / "out").exists()
        return
    path = make_project(tmp_path)
    code, _, err = run_in_process(capsys, "run", path, "--out", tmp_path / "out", "--quiet",
                                  "--steps", 2, "--tensorboard")
    assert code == 0, err
    assert any((tmp_path / "out" / "tensorboard").iterdir())
