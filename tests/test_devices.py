"""Data parallelism and `shard` annotations on simulated CPU devices (runtime/devices.py).

XLA reads `--xla_force_host_platform_device_count` once, before JAX starts, so the
multi-device checks run in one subprocess (a script below) that trains the same model on
1 device, on 4 (data-parallel) and on a {data = 2, model = 2} mesh, and reports the
losses, shardings and the errors that need several devices. The errors one device can
show run here, through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graphdl.cli.main import main
from graphdl.runtime import devices
from graphdl.runtime.devices import Processes, parse_mesh, processes_from, rendezvous

ROOT = Path(__file__).resolve().parents[1]

MODEL = """
graph net[H = 32](x: f32[B, 64]) -> f32[B, 10] {
    param W: f32[64, H] = glorot shard [_, model]
    param b: f32[H] = zeros shard [model]
    return relu(x @ W + b) |> dropout(0.2) |> dense(10)
}

data digits = dataset("digits", split = [0.8, 0.2])

train {
    data = digits.train(batch = 32, shuffle = true)
    loss = mean(cross_entropy(net(data.x), data.y))
    optimizer = adam(lr = 1e-2)
    steps = 8
    evaluate on digits.test {
        accuracy = mean(argmax(net(data.x), -1) == data.y)
    }
}
"""

# run in a subprocess with 4 simulated devices; prints one JSON object
SCRIPT = r"""
import contextlib, io, json, sys
import graphdl
from graphdl.cli.main import main

model = graphdl.load(sys.argv[1])
report = {}
for name, kwargs in (("one", {"devices": 1}), ("four", {"devices": 4}),
                     ("mesh", {"mesh": {"data": 2, "model": 2}})):
    result = model.train(**kwargs)
    report[name] = {
        "losses": [r["loss"] for r in result.history if r.get("split") == "train"],
        "accuracy": result.metrics["test"]["accuracy"],
        "W": str(getattr(result.variables["params"]["net.W"].sharding, "spec", None)),
        "devices": len(result.variables["params"]["net.W"].sharding.device_set),
    }
def cli(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue()
report["odd_batch"] = cli("run", sys.argv[1], "--devices", "4", "--quiet", "--out",
                          sys.argv[2] + "/odd", "--set", "train.batch=30")
# no --devices: the most of the 4 devices that split a batch of 30 (3), not an error
odd = model.train(batch=30)
report["default_odd"] = {"devices": len(odd.variables["params"]["net.W"].sharding.device_set),
                         "losses": [r["loss"] for r in odd.history if r.get("split") == "train"]}
report["odd_one"] = [r["loss"] for r in model.train(batch=30, devices=1).history
                     if r.get("split") == "train"]
report["odd_dim"] = cli("run", sys.argv[1], "--mesh", "data=1,model=4", "--quiet", "--out",
                        sys.argv[2] + "/dim", "--set", "net.H=30")
report["too_many"] = cli("run", sys.argv[1], "--devices", "8", "--quiet", "--out",
                         sys.argv[2] + "/many")
print(json.dumps(report))
"""


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def user_error(code: int, err: str) -> str:
    """Exit 2, no traceback; stderr."""
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    return err


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("devices")
    (folder / "net.gdl").write_text(MODEL.lstrip(), encoding="utf-8")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(folder / "net.gdl"), str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_devices_give_the_one_device_losses(four_devices):
    one, four = four_devices["one"], four_devices["four"]
    assert len(one["losses"]) == len(four["losses"]) == 8
    assert four["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    assert four["accuracy"] == pytest.approx(one["accuracy"], abs=1e-6)
    assert one["devices"] == 1 and four["devices"] == 4
    assert four["W"] == "P()"  # data-parallel: parameters replicated


def test_a_model_axis_splits_the_annotated_parameter_with_equal_results(four_devices):
    one, mesh = four_devices["one"], four_devices["mesh"]
    assert mesh["W"] == "P(None, 'model')" and mesh["devices"] == 4
    assert mesh["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    assert mesh["accuracy"] == pytest.approx(one["accuracy"], abs=1e-6)


def test_a_batch_that_does_not_split_names_both_numbers(four_devices):
    code, err = four_devices["odd_batch"]
    user_error(code, err)
    assert "error: the batch of 30 does not split over 4 devices" in err
    assert "net.gdl:10:12" in err  # the `digits.train(batch = ...)` call


def test_the_default_uses_the_most_devices_that_split_the_batch(four_devices):
    default = four_devices["default_odd"]
    assert default["devices"] == 3  # 30 = 3 x 10
    assert default["losses"] == pytest.approx(four_devices["odd_one"], rel=1e-5, abs=1e-6)


def test_a_sharded_dim_that_does_not_divide_is_located(four_devices):
    code, err = four_devices["odd_dim"]
    user_error(code, err)
    assert ("error: `net.W` is f32[64, 30]: its axis 1 (30) does not split over the 4 "
            "devices of the mesh axis `model`") in err
    assert "net.gdl:2:5" in err


def test_more_devices_than_there_are_says_what_is_available(four_devices):
    code, err = four_devices["too_many"]
    user_error(code, err)
    assert "error: --devices 8, but this run has 4 devices (cpu)" in err


def test_one_device_errors_of_the_flags(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.gdl").write_text(MODEL.lstrip(), encoding="utf-8")
    run = ("run", "net.gdl", "--quiet", "--out", tmp_path / "out")
    err = user_error(*cli(capsys, *run, "--devices", "2")[::2])
    assert "error: --devices 2, but this run has 1 device (cpu); on a CPU, " \
           "XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N" in err
    err = user_error(*cli(capsys, *run, "--devices", "0")[::2])
    assert "error: --devices 0: a run needs at least 1 device" in err
    err = user_error(*cli(capsys, *run, "--mesh", "data=2,modl=2")[::2])
    assert "error: --mesh data=2,modl=2: unknown axis `modl`; the axes are data, model" in err
    err = user_error(*cli(capsys, *run, "--mesh", "data=two")[::2])
    assert "error: --mesh data=two: expected AXIS=N,..., e.g. data=2,model=2" in err
    err = user_error(*cli(capsys, *run, "--mesh", "data=2,model=2")[::2])
    assert "net.gdl:9:1: error: the mesh {data = 2, model = 2} needs 4 devices, but this " \
           "run has 1 device (cpu)" in err


def test_shard_and_mesh_are_checked_where_they_are_written(check):
    checked = check("""
        graph g(x: f32[B, 4]) -> f32[B, 6] {
            param W: f32[4, 6] = glorot shard [_, modle]
            param V: f32[6, 6] = glorot shard [model]
            param U: f32[6, 6] = glorot shard [model, model]
            return x @ W @ V @ U
        }
        data d = dataset("digits")
        train {
            data = d.train(batch = 8)
            loss = mean(g(data.x[:, :4]))
            mesh = {data = 2, modle = 2}
        }
    """)
    got = [(str(d.span.line) + ":" + str(d.span.col), d.message) for d in checked.diagnostics]
    assert got == [
        ("2:33", "unknown mesh axis `modle` in `shard`; the mesh axes are data, model"),
        ("3:33", "`shard` names 1 axis, but `V` is f32[6, 6] with 2"),
        ("4:33", "`shard` splits two axes of `U` over the mesh axis `model`"),
        ("11:5", "unknown mesh axis `modle`; the mesh axes are data, model"),
    ]
    assert checked.diagnostics[0].hint == "did you mean `model`?"


def test_a_declared_mesh_reaches_the_plan(check):
    checked = check("""
        graph g(x: f32[B, 64]) -> f32[B, 10] {
            param W: f32[64, 10] = glorot shard [_, model]
            return x @ W
        }
        data d = dataset("digits")
        train {
            data = d.train(batch = 8)
            loss = mean(cross_entropy(g(data.x), data.y))
            mesh = {data = 2, model = 2}
        }
    """)
    assert not checked.diagnostics
    assert checked.trains[0].mesh == {"data": 2, "model": 2}


def test_parse_mesh():
    assert parse_mesh("data=2,model=2") == {"data": 2, "model": 2}
    assert parse_mesh("model=4") == {"model": 4}


# -- several processes: the errors before any process joins -------------------------

def test_processes_need_all_three_flags_or_none(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.gdl").write_text(MODEL.lstrip(), encoding="utf-8")
    run = ("run", "net.gdl", "--quiet", "--out", tmp_path / "out")
    err = user_error(*cli(capsys, *run, "--coordinator", "127.0.0.1:1234")[::2])
    assert ("error: --coordinator given without --num-processes and --process-id: a run over "
            "several processes needs all three") in err
    err = user_error(*cli(capsys, *run, "--coordinator", "localhost", "--num-processes", "2",
                          "--process-id", "0")[::2])
    assert "error: --coordinator localhost: expected HOST:PORT, e.g. 127.0.0.1:12345" in err
    err = user_error(*cli(capsys, *run, "--coordinator", "127.0.0.1:1234", "--num-processes",
                          "2", "--process-id", "2")[::2])
    assert "error: --process-id 2 is out of range: with --num-processes 2 it is 0 to 1" in err


def test_processes_from_the_environment():
    assert processes_from(None, None, None, {}) is None
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:5000", "JAX_NUM_PROCESSES": "4",
           "JAX_PROCESS_ID": "3"}
    assert processes_from(None, None, None, env) == Processes("10.0.0.1:5000", 4, 3)
    # the flags win over the environment
    assert processes_from("127.0.0.1:1", 2, 0, env) == Processes("127.0.0.1:1", 2, 0)
    with pytest.raises(Exception, match="JAX_COORDINATOR_ADDRESS is set but JAX_PROCESS_ID is not"):
        processes_from(None, None, None, {k: v for k, v in env.items() if k != "JAX_PROCESS_ID"})


def test_an_unreachable_coordinator_is_an_error_after_the_timeout(capsys, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(devices, "CONNECT_TIMEOUT_S", 1)
    (tmp_path / "net.gdl").write_text(MODEL.lstrip(), encoding="utf-8")
    port = free_port()  # nobody listens there
    err = user_error(*cli(capsys, "run", "net.gdl", "--quiet", "--coordinator",
                          f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1")[::2])
    assert f"error: --coordinator 127.0.0.1:{port}: no process 0 answered there within 1 s" in err


def test_process_0_says_which_processes_did_not_join():
    with pytest.raises(Exception, match=r"processes 1, 2 of 3 did not join within 0.5 s"):
        rendezvous(Processes(f"127.0.0.1:{free_port()}", 3, 0), 0.5)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_script_is_importable_text():
    compile(textwrap.dedent(SCRIPT), "script", "exec")  # a typo fails here, not in a child
