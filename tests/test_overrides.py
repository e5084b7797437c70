"""`--set` overrides (and `load(path, K=V)`, `Model.train(K=V)`): what they reach, how
their values are checked (exactly as the same setting in the file), and how `--eval` and
`--resume` replay the overrides a checkpoint was trained with."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import graphdl
from graphdl.cli import main
from graphdl.cli.inputs import RECORDED_KEY, parse_overrides, recorded_overrides
from graphdl.errors import CliError

SOURCE = """\
graph net[H = 8](x: f32[B, 4]) -> f32[B, 3] {
    return x |> dense(H) |> relu |> dense(3)
}

data blobs = npz("blobs.npz", split = [0.75, 0.25], seed = 0)

train {
    data      = blobs.train(batch = 8, shuffle = true)
    loss      = mean(cross_entropy(net(data.x), data.y))
    optimizer = adam(lr = 1e-2)
    epochs    = 2
    seed      = 1
    evaluate on blobs.test every 1 epoch {
        accuracy = mean(argmax(net(data.x), -1) == data.y)
    }
}
"""


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return blobs_project(tmp_path, SOURCE)


def blobs_project(folder: Path, source: str) -> Path:
    """`folder/t.gdl` (the `source` given) beside `blobs.npz`: 96 points of 3 classes in 4-D."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 96).astype(np.int32)
    x = (2 * np.eye(4, dtype=np.float32)[y] + 0.5 * rng.normal(size=(96, 4))).astype(np.float32)
    np.savez(folder / "blobs.npz", x=x, y=y)
    (folder / "t.gdl").write_text(source)
    return folder / "t.gdl"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


def check_error(capsys, path, setting: str) -> str:
    code, out, err = cli(capsys, "check", path, "--set", setting)
    assert code == 2 and out == "", (out, err)
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


# -- what --set reaches (finding 1) ------------------------------------------------------
def test_set_reaches_the_optimizer_batch_and_schedule(project):
    model = graphdl.load(project)
    plan = model.plan()
    assert (plan.steps[0].optimizer.name, plan.steps[0].optimizer.kwargs["lr"]) == ("adam", 1e-2)
    assert plan.batch.batch == 8 and plan.schedule is None
    lr = model.plan(overrides={"train.optimizer.lr": 0.5}).steps[0].optimizer
    assert (lr.name, lr.kwargs["lr"], lr.kwargs["b1"]) == ("adam", 0.5, 0.9)
    sgd = model.plan(overrides={"train.optimizer": "sgd(lr = 0.1)"}).steps[0].optimizer
    assert (sgd.name, sgd.kwargs) == ("sgd", {"lr": 0.1})
    small = model.plan(overrides={"train.batch": 4})
    assert small.batch.batch == 4
    assert small.ir.nodes[small.batch.inputs["x"]]["node"].type.concrete() == (4, 4)
    cosine = model.plan(overrides={"train.schedule": "cosine(lr = 1e-3)"}).schedule
    assert (cosine.name, cosine.kwargs["lr"]) == ("cosine", 1e-3)
    # the file's plan is untouched by the others
    assert model.plan().batch.batch == 8


def test_set_on_the_command_line(project, capsys):
    code, out, err = cli(capsys, "check", project, "--set", "train.optimizer=sgd(lr = 0.1)",
                         "--set", "train.batch=16", "--set", "train.optimizer.lr=0.5",
                         "--set", "net.H=4")
    assert (code, err) == (0, ""), err
    assert parse_overrides(["train.optimizer=sgd(lr = 0.1)", "net.H=4"]) == {
        "train.optimizer": "sgd(lr = 0.1)", "net.H": 4}


def test_a_wrong_optimizer_reads_as_in_the_file(project, capsys):
    err = check_error(capsys, project, "train.optimizer=sgdd(lr = 0.1)")
    assert err == ("error: --set train.optimizer=sgdd(lr = 0.1): unknown operation `sgdd`; "
                   "did you mean `sgd`?")
    # the same mistake in the file: the same message and hint
    project.write_text(SOURCE.replace("adam(lr = 1e-2)", "sgdd(lr = 0.1)"))
    code, _, err = cli(capsys, "check", project)
    assert code == 2 and "error: unknown operation `sgdd`" in err and "did you mean `sgd`?" in err


def test_optimizer_keywords_are_checked_against_its_signature(project, capsys):
    err = check_error(capsys, project, "train.optimizer.lrr=0.01")
    assert err == ("error: --set train.optimizer.lrr=0.01: adam() has no keyword `lrr`; "
                   "its keywords are lr, b1, b2, eps; did you mean `lr`?")
    err = check_error(capsys, project, "train.optimizer=sgd(lr = 0.1, momentum = 0.9)")
    assert "sgd() has no keyword `momentum`; its keywords are lr" in err
    err = check_error(capsys, project, "train.optimizer=sgd(lr = ")
    assert err == "error: --set train.optimizer=sgd(lr =: `sgd(lr =` is not a GDL expression"


def test_train_lr_suggests_the_optimizers_lr(project, capsys):
    err = check_error(capsys, project, "train.lr=0.1")
    assert err.endswith("no graph constant or train setting is called `train.lr`; "
                        "did you mean `train.optimizer.lr`?")


def test_schedule_keyword_without_a_schedule(project, capsys):
    err = check_error(capsys, project, "train.schedule.lr=0.1")
    assert "train block `train` has no schedule" in err
    code, _, err = cli(capsys, "check", project, "--set", "train.schedule=cosine(lr = 0.1)",
                       "--set", "train.schedule.lr=0.2")
    assert code == 0, err


# -- values are checked like the file's (finding 2) ------------------------------------
@pytest.mark.parametrize("setting, message", [
    ('train.epochs="abc"', '`epochs` must be an integer >= 1, got "abc"'),
    ("train.epochs=0", "`epochs` must be an integer >= 1, got 0"),
    ("train.epochs=[1, 2]", "`epochs` must be an integer >= 1, got a constant"),
    ("train.steps=2.5", "`steps` must be an integer >= 1, got 2.5"),
    ("train.seed=18446744073709551616",
     "`seed` must be an integer from 0 to 4294967295, got 18446744073709551616"),
    ('train.clip_grad_norm="x"', "`clip_grad_norm` must be a number, got a constant"),
    ("train.batch=0", "`batch` must be a positive integer"),
    ('train.batch="8"', "`batch` must be a positive integer"),
])
def test_set_values_are_checked_like_the_file(project, capsys, setting, message):
    key, value = setting.split("=", 1)
    assert check_error(capsys, project, setting) == f"error: --set {key}={value}: {message}"


def test_the_file_gets_the_same_range_check(project, capsys):
    project.write_text(SOURCE.replace("seed      = 1", "seed      = 18446744073709551616"))
    code, _, err = cli(capsys, "check", project)
    assert code == 2
    assert "t.gdl:12:5: error: `seed` must be an integer from 0 to 4294967295" in err


def test_api_overrides_are_checked(project):
    with pytest.raises(ValueError, match=r'train.epochs="abc": `epochs` must be an integer'):
        graphdl.load(project, **{"train.epochs": "abc"})
    with pytest.raises(TypeError, match=r"did you mean `train.optimizer.lr`"):
        graphdl.load(project).train(lr=0.1)
    with pytest.raises(ValueError, match=r"adam\(\) has no keyword `lrr`"):
        graphdl.load(project).plan(overrides={"train.optimizer.lrr": 1.0})


# -- overrides are recorded and replayed (finding 3) -------------------------------------
def record(checkpoint_dir: Path, overrides: dict) -> None:
    """Write `overrides` into a checkpoint's metadata as the train loop records them."""
    file = checkpoint_dir / "checkpoint.safetensors"
    blob = file.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header["__metadata__"][RECORDED_KEY] = json.dumps(overrides)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n:])


def test_eval_replays_the_recorded_overrides(project, capsys):
    given = ["--set", "net.H=16", "--set", "train.optimizer=sgd(lr = 0.1)"]
    code, _, err = cli(capsys, "run", project, "--out", "out", "--quiet", "--steps", "2", *given)
    assert code == 0, err
    # the run recorded its overrides with the checkpoint; --eval without --set replays them
    # (the file's own H would not fit the checkpoint's parameters)
    assert recorded_overrides("out") == {"net.H": 16, "train.optimizer": "sgd(lr = 0.1)"}
    code, out, err = cli(capsys, "run", project, "--out", "out", "--quiet", "--eval")
    assert code == 0, err
    assert "evaluated the checkpoint in out/checkpoint (step 2)" in out
    code, _, err = cli(capsys, "run", project, "--out", "out", "--quiet", "--eval", *given)
    assert code == 0, err
    code, _, err = cli(capsys, "run", project, "--out", "out", "--quiet", "--resume",
                       "--set", "net.H=32")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: --resume: the checkpoint in out was trained with "
                          "--set net.H=16 --set train.optimizer=sgd(lr = 0.1), but this run "
                          "gives --set net.H=32"), err
    code, _, err = cli(capsys, "run", project, "--out", "out", "--quiet", "--resume")
    assert code == 0, err


def test_no_recorded_overrides_without_a_checkpoint(tmp_path):
    assert recorded_overrides(tmp_path) is None
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    assert recorded_overrides(tmp_path) is None


def test_parse_overrides_refuses_non_literals():
    with pytest.raises(CliError, match="must be a GDL literal"):
        parse_overrides(["net.H=abc"])
    with pytest.raises(CliError, match="give the optimizer as GDL"):
        parse_overrides(["train.optimizer="])
