"""One run over several processes (jax.distributed on the loopback address, gloo on CPU):
2 processes x 2 simulated devices train loss for loss as 1 process x 4 devices, and
process 0 alone writes. Each process is a `python -m graphdl run` subprocess, since
XLA's device count and jax.distributed are set once per process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_devices import MODEL

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # three trainings in subprocesses: ~30 s on a quiet machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphdl(folder: Path, devices: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    environ = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
               "PYTHONPATH": str(ROOT), "GRAPHDL_CONNECT_TIMEOUT": "60", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "graphdl", "run", "net.gdl", "--quiet",
                             *args], cwd=folder, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=600)
    return p.returncode, out, err


def train_losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r.get("split") == "train"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("distributed")
    (folder / "net.gdl").write_text(MODEL.lstrip(), encoding="utf-8")
    port = free_port()
    flags = ("--coordinator", f"127.0.0.1:{port}", "--num-processes", "2")
    procs = [graphdl(folder, 2, *flags, "--process-id", "0", "--out", "two"),
             # the second process from the environment variables, as a launcher sets them
             graphdl(folder, 2, "--out", "two", env={
                 "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                 "JAX_PROCESS_ID": "1"})]
    results = [finish(p) for p in procs]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    (folder / "stdout0").write_text(results[0][1])
    (folder / "stderr1").write_text(results[1][2])
    (folder / "stdout1").write_text(results[1][1])
    code, _, err = finish(graphdl(folder, 4, "--devices", "4", "--out", "one"))
    assert code == 0, err[-3000:]
    return folder


def test_two_processes_train_as_one_process_over_the_same_devices(runs):
    two, one = train_losses(runs / "two"), train_losses(runs / "one")
    assert len(two) == len(one) == 8
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
    header = json.loads((runs / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert header["mesh"] == {"data": 4, "model": 1} and header["processes"] == 2


def test_process_0_writes_the_checkpoint_of_the_whole_run(runs):
    two = load_file(str(runs / "two" / "checkpoint" / "checkpoint.safetensors"))
    one = load_file(str(runs / "one" / "checkpoint" / "checkpoint.safetensors"))
    assert two.keys() == one.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert "trained 8 steps; wrote two/checkpoint" in (runs / "stdout0").read_text()


def own_lines(text: str) -> list[str]:
    """Without gloo's own connection lines (`[Gloo] Rank 2 is connected to 3 peer
    ranks...`, which its C++ prints on stdout of every process)."""
    return [line for line in text.splitlines() if not line.startswith("[Gloo]")]


def test_the_other_processes_write_nothing_and_say_one_line(runs):
    assert own_lines((runs / "stdout1").read_text()) == []
    assert own_lines((runs / "stderr1").read_text()) == [
        "process 1 of 2: trained 8 steps (process 0 writes the outputs)"]
    assert sorted(p.name for p in (runs / "two").iterdir()) == [
        "checkpoint", "loss.png", "metrics.jsonl"]


def test_a_model_axis_across_processes_trains_as_one_process(tmp_path):
    """{data = 2, model = 2} over 2 processes x 2 devices: `net.W` split over `model`,
    the checkpoint gathered from both processes."""
    (tmp_path / "net.gdl").write_text(MODEL.lstrip(), encoding="utf-8")
    flags = ("--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2",
             "--mesh", "data=2,model=2", "--out", "two")
    procs = [graphdl(tmp_path, 2, *flags, "--process-id", str(i)) for i in range(2)]
    for code, _, err in [finish(p) for p in procs]:
        assert code == 0, err[-3000:]
    code, _, err = finish(graphdl(tmp_path, 4, "--mesh", "data=2,model=2", "--out", "one"))
    assert code == 0, err[-3000:]
    assert train_losses(tmp_path / "two") == pytest.approx(train_losses(tmp_path / "one"),
                                                           rel=1e-5, abs=1e-6)
    two = load_file(str(tmp_path / "two" / "checkpoint" / "checkpoint.safetensors"))
    one = load_file(str(tmp_path / "one" / "checkpoint" / "checkpoint.safetensors"))
    assert two["params/net.W"].shape == (64, 32)  # whole, not one process's half
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_a_checkpoint_of_two_processes_resumes_in_one(runs, tmp_path):
    """2 processes x 2 devices stop after 4 of the 8 steps (each process writes its shards
    with orbax, process 0 the portable file); one process on one device resumes and its
    last 4 losses are those of the uninterrupted 4-device run."""
    (tmp_path / "net.gdl").write_text(MODEL.lstrip(), encoding="utf-8")
    flags = ("--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2",
             "--out", "half", "--steps", "4")
    procs = [graphdl(tmp_path, 2, *flags, "--process-id", str(i)) for i in range(2)]
    for code, _, err in [finish(p) for p in procs]:
        assert code == 0, err[-3000:]
    from graphdl.runtime.sharded_checkpoint import sharded_name

    name = sharded_name(tmp_path / "half" / "checkpoint")
    assert name is not None and (tmp_path / "half" / "checkpoint" / "sharded" / name).is_dir()
    code, _, err = finish(graphdl(tmp_path, 1, "--resume", "--out", "half"))
    assert code == 0, err[-3000:]
    resumed = train_losses(tmp_path / "half")
    assert len(resumed) == 8
    assert resumed[4:] == pytest.approx(train_losses(runs / "one")[4:], rel=1e-5, abs=1e-6)
    # a one-process save replaces the sharded folder with the portable file alone
    assert sharded_name(tmp_path / "half" / "checkpoint") is None
