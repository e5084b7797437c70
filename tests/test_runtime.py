"""`graphdl run`, `export` and `bench` end to end: files written, checkpoints, resume, kills,
refusals, and the errors a user sees for bad inputs.

The tests that are about the process itself (exit status, SIGKILL, no traceback) run
`python -m graphdl` in a subprocess; the others call `graphdl.cli.main` in-process,
which is the same code path without paying for a fresh JAX import each time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from graphdl.cli import main
from graphdl.runtime.checkpoint import is_graphdl_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]

TRAIN = """\
graph net(x: f32[B, 4]) -> f32[B, 3] {
    return x |> dense(8) |> batch_norm |> relu |> dropout(0.1) |> dense(3)
}

data blobs = npz("blobs.npz", split = [0.75, 0.25], seed = 0)

train {
    data      = blobs.train(batch = 8, shuffle = true)
    loss      = mean(cross_entropy(net(data.x), data.y))
    optimizer = adam(lr = 1e-2)
    epochs    = 3
    seed      = 1
    checkpoint every 4 steps
    evaluate on blobs.test every 1 epoch {
        accuracy = mean(argmax(net(data.x), -1) == data.y)
    }
}
"""
STEPS = 3 * (72 // 8)  # 96 examples, 72 for training, batches of 8


def write_blobs(folder: Path, n=96) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = (2 * np.eye(4, dtype=np.float32)[y] + 0.5 * rng.normal(size=(n, 4))).astype(np.float32)
    np.savez(folder / "blobs.npz", x=x, y=y)


def make_project(folder: Path, source: str = TRAIN, name: str = "t.gdl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_blobs(folder)
    (folder / name).write_text(source)
    return folder / name


def graphdl_cli(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "graphdl", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *needles: str, one_line: bool = True) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    if one_line:
        assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def same_params(a, b) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted `graphdl run` in a subprocess: (project folder, out folder, result)."""
    folder = tmp_path_factory.mktemp("straight")
    path = make_project(folder)
    result = graphdl_cli("run", path.name, "--out", "out", "--quiet", cwd=folder)
    return folder, folder / "out", result


# -- a training run ------------------------------------------------------------------------
def test_run_writes_metrics_plot_and_checkpoint(straight):
    folder, out, result = straight
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"trained {STEPS} steps" in result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and all({"step", "epoch", "split"} <= set(r) for r in records)
    train = [r for r in records if r["split"] == "train"]
    tests = [r for r in records if r["split"] == "test"]
    assert [r["step"] for r in train] == sorted(r["step"] for r in train)
    assert train[-1]["step"] == STEPS and all(np.isfinite(r["loss"]) for r in train)
    assert len(tests) >= 3 and all(0 <= r["accuracy"] <= 1 for r in tests)
    assert tests[-1]["accuracy"] > 0.6
    png = (out / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    ckpt = load_checkpoint(out / "checkpoint")
    assert ckpt.step == STEPS and ckpt.epoch == 3
    assert sorted(ckpt.params) == ["net.out.batch_norm.bias", "net.out.batch_norm.scale",
                                   "net.out.dense.b", "net.out.dense.w", "net.out.dense_1.b",
                                   "net.out.dense_1.w"]
    assert sorted(ckpt.stats) == ["net.out.batch_norm.mean", "net.out.batch_norm.var"]
    assert ckpt.source == (folder / "t.gdl").read_text()
    import safetensors
    with safetensors.safe_open(str(out / "checkpoint" / "checkpoint.safetensors"), "np") as f:
        assert any(k.startswith("opt/") for k in f.keys())  # adam's state is saved too


def test_resume_reaches_the_same_parameters(straight, tmp_path, capsys):
    """Stop after 10 steps (checkpoints every 4), resume: the straight run's parameters."""
    _, straight_out, result = straight
    assert result.returncode == 0, result.stderr
    path = make_project(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 10)
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint").step == 10
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--resume")
    assert code == 0, err
    a = load_checkpoint(straight_out / "checkpoint")
    b = load_checkpoint(tmp_path / "out" / "checkpoint")
    assert b.step == a.step == STEPS
    same_params(a.params, b.params)
    same_params(a.stats, b.stats)  # batch-norm running statistics too
    # the resumed log has every step once
    steps = [json.loads(line)["step"] for line in (tmp_path / "out" / "metrics.jsonl").read_text()
             .splitlines() if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, STEPS + 1))


BIG = """\
graph big(x: f32[B, 4]) -> f32[B, 3] {
    return x |> dense(2048) |> relu |> dense(2048) |> relu |> dense(3)
}

data blobs = npz("blobs.npz", split = [0.75, 0.25], seed = 0)

train {
    data      = blobs.train(batch = 8, shuffle = true)
    loss      = mean(cross_entropy(big(data.x), data.y))
    optimizer = sgd(lr = 1e-3)
    steps     = 100000
    checkpoint every 1 step
}
"""


def test_sigkill_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """A 17 MB checkpoint every step; SIGKILL the moment a save's temp file appears."""
    path = make_project(tmp_path, BIG)
    folder = tmp_path / "out" / "checkpoint"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    landed = False
    for _attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "graphdl", "run", path.name, "--out", "out",
                                 "--quiet", "--overwrite"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        tmp = folder / f".checkpoint.safetensors.tmp-{proc.pid}"
        final = folder / "checkpoint.safetensors"
        deadline = time.monotonic() + 90
        try:
            while not final.exists():  # at least one whole checkpoint first
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline
                time.sleep(0.005)
            while not tmp.exists():  # the next save has begun
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        landed = tmp.exists()  # killed with the new file half written
        if landed:
            break
    assert landed, "no kill landed while a checkpoint was being written"
    ckpt = load_checkpoint(folder)  # the previous checkpoint, whole
    assert ckpt.step >= 1
    assert ckpt.params["big.out.dense_1.w"].shape == (2048, 2048)
    assert all(np.isfinite(v).all() for v in ckpt.params.values())
    # and the run continues from it; the dead writer's temp file is cleaned away
    resumed = graphdl_cli("run", path.name, "--out", "out", "--quiet", "--resume", "--steps", 1,
                          cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(folder).step == ckpt.step + 1
    assert not list(folder.glob(".checkpoint.safetensors.tmp-*"))


def test_foreign_checkpoint_is_never_overwritten(tmp_path):
    path = make_project(tmp_path)
    folder = tmp_path / "out" / "checkpoint"
    folder.mkdir(parents=True)
    foreign = folder / "checkpoint.safetensors"
    foreign.write_bytes(b"my own weights, not graphdl's")
    before = foreign.stat().st_mtime_ns
    result = graphdl_cli("run", path.name, "--out", "out", "--quiet", cwd=tmp_path)
    assert_user_error(result.returncode, result.stderr, "is not a graphdl checkpoint",
                      one_line=False)
    assert result.stderr.startswith("error: ")
    assert foreign.read_bytes() == b"my own weights, not graphdl's"
    assert foreign.stat().st_mtime_ns == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint"]  # nothing else
    # --overwrite does not apply to a file that is not a graphdl checkpoint
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--overwrite"])
    assert code == 2
    assert foreign.read_bytes() == b"my own weights, not graphdl's"


def test_a_checkpoint_in_out_needs_resume_or_overwrite(straight, tmp_path, capsys):
    """A run never replaces a checkpoint it did not start from: not another source's (an
    edited file), and not the same file's either (a 10-step smoke test over a finished
    run); --resume continues it, --overwrite replaces it."""
    _, straight_out, result = straight
    assert result.returncode == 0
    path = make_project(tmp_path, TRAIN.replace("lr = 1e-2", "lr = 2e-2"))  # an edited file
    out = tmp_path / "out"
    (out / "checkpoint").mkdir(parents=True)
    original = (straight_out / "checkpoint" / "checkpoint.safetensors").read_bytes()
    (out / "checkpoint" / "checkpoint.safetensors").write_bytes(original)
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet")
    assert_user_error(code, err, "holds a checkpoint (step 27) of another .gdl source",
                      "--resume", "--overwrite", one_line=False)
    assert (out / "checkpoint" / "checkpoint.safetensors").read_bytes() == original
    assert not (out / "metrics.jsonl").exists()
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--overwrite",
                                  "--steps", 2)
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint").step == 2
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert [r["step"] for r in map(json.loads, records) if r["split"] == "train"] == [1, 2]
    # the same file again: refused too, and nothing of the earlier run is touched
    before = {p.name: p.read_bytes() for p in (out / "metrics.jsonl", out / "loss.png",
                                                out / "checkpoint" / "checkpoint.safetensors")}
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 3,
                                  "--set", "train.seed=2")
    assert_user_error(code, err, "holds a checkpoint (step 2) of this file", "--overwrite",
                      one_line=False)
    assert before == {p.name: p.read_bytes() for p in (out / "metrics.jsonl", out / "loss.png",
                                                       out / "checkpoint" / "checkpoint.safetensors")}
    code, _, err = run_in_process(capsys, "run", path, "--out", out, "--quiet", "--steps", 3,
                                  "--set", "train.seed=2", "--overwrite")
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint").step == 3
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert [r["step"] for r in map(json.loads, records) if r["split"] == "train"] == [1, 2, 3]


def test_resume_without_a_checkpoint(tmp_path, capsys):
    path = make_project(tmp_path)
    code, _, err = run_in_process(capsys, "run", path, "--out", tmp_path / "none", "--resume")
    assert_user_error(code, err, "no checkpoint in", one_line=False)
    assert not (tmp_path / "none").exists()


def test_eval_runs_the_evaluations_on_the_checkpoint(straight, capsys):
    folder, out, result = straight
    assert result.returncode == 0
    code, stdout, err = run_in_process(capsys, "run", folder / "t.gdl", "--out", out, "--eval")
    assert code == 0, err
    assert f"step {STEPS}" in stdout
    last = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert f"{last['accuracy']:.4f}" in stdout  # the same number as the run's final evaluation


# -- a graph without a train block ---------------------------------------------------------
GRAPH = """\
graph main(x: f32[B, 3], k: i32[B]) -> f32[B, 3] {
    return x * 2 + expand_dims(cast(k, "f32"), 1)
}
"""


@pytest.fixture
def graph_file(tmp_path):
    (tmp_path / "g.gdl").write_text(GRAPH)
    np.save(tmp_path / "x.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.save(tmp_path / "k.npy", np.array([1, -2], np.int32))
    return tmp_path / "g.gdl"


def test_graph_only_run_writes_outputs(graph_file, capsys):
    d = graph_file.parent
    code, stdout, err = run_in_process(capsys, "run", graph_file, "--out", d / "o",
                                       "--input", f"x={d / 'x.npy'}", "--input", f"k={d / 'k.npy'}")
    assert code == 0, err
    out = np.load(d / "o" / "output.npy")
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3) * 2 + np.array([[1], [-2]]))
    assert out.dtype == np.float32
    assert "output.npy" in stdout
    # float64 and int64 arrays are accepted and converted to the declared dtypes
    np.save(d / "x64.npy", np.ones((2, 3)))
    np.save(d / "k64.npy", np.array([3, 4]))
    code, _, err = run_in_process(capsys, "run", graph_file, "--out", d / "o2",
                                  "--input", f"x={d / 'x64.npy'}", "--input", f"k={d / 'k64.npy'}")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(d / "o2" / "output.npy"), [[5, 5, 5], [6, 6, 6]])


def test_graph_with_params_uses_the_checkpoint(tmp_path, straight, capsys):
    """--input on a train file evaluates a graph with the parameters the run trained."""
    folder, out, result = straight
    assert result.returncode == 0
    x = np.load(folder / "blobs.npz")["x"][:5]
    np.save(tmp_path / "x.npy", x)
    code, _, err = run_in_process(capsys, "run", folder / "t.gdl", "--out", out, "--graph", "net",
                                  "--input", f"x={tmp_path / 'x.npy'}")
    assert code == 0, err
    logits = np.load(out / "output.npy")
    ck = load_checkpoint(out / "checkpoint")
    p, s = ck.params, ck.stats
    h = x @ p["net.out.dense.w"] + p["net.out.dense.b"]
    h = (h - s["net.out.batch_norm.mean"]) / np.sqrt(s["net.out.batch_norm.var"] + 1e-5)
    h = np.maximum(h * p["net.out.batch_norm.scale"] + p["net.out.batch_norm.bias"], 0)
    np.testing.assert_allclose(logits, h @ p["net.out.dense_1.w"] + p["net.out.dense_1.b"],
                               rtol=1e-4, atol=1e-5)


GAN = """\
graph generator(z: f32[B, 2]) -> f32[B, 2] {
    return z |> dense(4) |> relu |> dense(2)
}

graph critic(x: f32[B, 2]) -> f32[B, 1] {
    return dense(x, 1)
}

data ring = gaussian_ring(4, n = 256)

train {
    data = ring.train(batch = 32, shuffle = true)
    z ~ normal(0, 1, shape = [32, 2])
    step critic {
        loss = mean(bce(critic(data.x), 1) + bce(critic(stop_gradient(generator(z))), 0))
        over critic
    }
    step generator {
        loss = mean(bce(critic(generator(z)), 1))
        over generator
    }
    steps = 5
}
"""


def test_one_graph_runs_from_a_checkpoint_holding_more(tmp_path, capsys):
    """A GAN's generator runs from the GAN's checkpoint: it takes the parameters it uses
    (the critic's are in the checkpoint too, and are not an error)."""
    gdl = tmp_path / "gan.gdl"
    gdl.write_text(GAN)
    out = tmp_path / "run"
    code, _, err = run_in_process(capsys, "run", gdl, "--out", out, "--quiet")
    assert code == 0, err
    z = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    code, _, err = run_in_process(capsys, "run", gdl, "--out", out, "--graph", "generator",
                                  "--input", f"z={tmp_path / 'z.npy'}")
    assert code == 0, err
    p = load_checkpoint(out / "checkpoint").params
    assert any(n.startswith("critic.") for n in p)
    h = np.maximum(z @ p["generator.out.dense.w"] + p["generator.out.dense.b"], 0)
    np.testing.assert_allclose(np.load(out / "output.npy"),
                               h @ p["generator.out.dense_1.w"] + p["generator.out.dense_1.b"],
                               rtol=1e-5, atol=1e-6)
    # a graph whose parameters no train block of this run trained: said so, exit 2
    gdl.write_text(GAN + "\ngraph probe(z: f32[B, 2]) -> f32[B, 1] {\n    return dense(z, 1)\n}\n")
    code, _, err = run_in_process(capsys, "run", gdl, "--out", out, "--graph", "probe",
                                  "--input", f"z={tmp_path / 'z.npy'}")
    assert code == 2 and "probe.out.dense.w" in err
    assert "did not train these parameters" in err and "Traceback" not in err


def _bad_inputs(d: Path) -> dict:
    np.save(d / "wide.npy", np.zeros((2, 4), np.float32))
    np.save(d / "rank3.npy", np.zeros((2, 3, 1), np.float32))
    np.save(d / "ints.npy", np.zeros((2, 3), np.int32))
    np.save(d / "floatk.npy", np.zeros(2, np.float32))
    np.save(d / "k3.npy", np.zeros(3, np.int32))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "arch.npz", x=np.zeros((2, 3), np.float32))
    (d / "text.npy").write_text("hello, not numpy")
    (d / "x.csv").write_text("1,2,3\n4,5,6\n")
    return {
        "wrong shape": ("wide.npy", "k.npy", ["has shape (2, 4)", "x: f32[B, 3]", "g.gdl:1:12"]),
        "wrong rank": ("rank3.npy", "k.npy", ["has shape (2, 3, 1)", "f32[B, 3]"]),
        "wrong dtype": ("ints.npy", "k.npy", ["has dtype int32", "x: f32[B, 3]"]),
        "float labels": ("x.npy", "floatk.npy", ["--input k=", "has dtype float32", "i32[B]"]),
        "B disagrees": ("x.npy", "k3.npy", ["has shape (3,)", "B is 2 from --input x="]),
        "not npy (text)": ("text.npy", "k.npy", ["not a .npy file"]),
        "not npy (csv)": ("x.csv", "k.npy", ["x.csv: not a .npy file"]),
        "an npz": ("arch.npz", "k.npy", ["not a .npy file", "npz"]),
        "pickled objects": ("objects.npy", "k.npy", ["Python objects"]),
        "missing file": ("nope.npy", "k.npy", ["nope.npy: no such file"]),
        "a folder": (".", "k.npy", ["is a directory"]),
    }


BAD_IDS = ["wrong shape", "wrong rank", "wrong dtype", "float labels", "B disagrees",
           "not npy (text)", "not npy (csv)", "an npz", "pickled objects", "missing file",
           "a folder"]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_files(graph_file, capsys, case):
    d = graph_file.parent
    xfile, kfile, needles = _bad_inputs(d)[case]
    code, stdout, err = run_in_process(capsys, "run", graph_file, "--out", d / "o",
                                       "--input", f"x={d / xfile}", "--input", f"k={d / kfile}")
    assert_user_error(code, err, "error: --input ", *needles)
    assert not (d / "o" / "output.npy").exists()


@pytest.mark.parametrize("inputs, needle", [
    (["x=x.npy"], "needs --input for k"),
    (["x=x.npy", "k=k.npy", "q=k.npy"], "has no input `q`; its inputs are x, k"),
    (["x"], "expected NAME=FILE.npy"),
    (["x=x.npy", "x=x.npy", "k=k.npy"], "given twice"),
])
def test_bad_input_flags(graph_file, capsys, monkeypatch, inputs, needle):
    monkeypatch.chdir(graph_file.parent)
    args = [a for i in inputs for a in ("--input", i)]
    code, _, err = run_in_process(capsys, "run", "g.gdl", "--out", "o", *args)
    assert_user_error(code, err, needle)


def test_bad_input_in_a_subprocess_has_no_traceback(graph_file):
    d = graph_file.parent
    np.save(d / "wide.npy", np.zeros((2, 4), np.float32))
    result = graphdl_cli("run", "g.gdl", "--out", "o", "--input", "x=wide.npy", "--input",
                         "k=k.npy", cwd=d)
    assert result.returncode == 2
    assert result.stderr == ("error: --input x=wide.npy has shape (2, 4), but `main` takes "
                             "x: f32[B, 3] (g.gdl:1:12): axis 1 must be 3\n")
    assert result.stdout == ""


# -- export and bench ------------------------------------------------------------------------
def test_export_writes_stablehlo(tmp_path, capsys):
    path = make_project(tmp_path)
    out = tmp_path / "net.mlir"
    code, stdout, err = run_in_process(capsys, "export", path, "--graph", "net", "--input",
                                       "x=B,4", "--out", out)
    assert code == 0, err
    text = out.read_text()
    assert "func.func public @main" in text
    assert "tensor<?x4xf32>" in text and "tensor<?x3xf32>" in text  # B stays symbolic
    assert "stablehlo." in text
    code, _, err = run_in_process(capsys, "export", path, "--graph", "net", "--input", "x=2,5",
                                  "--out", out)
    assert_user_error(code, err, "--input x=2,5", "f32[B, 4]")
    code, _, err = run_in_process(capsys, "export", path, "--graph", "nope", "--input", "x=B,4")
    assert_user_error(code, err, "no such graph", "net")


EXPORTABLE = """\
use std.nn
graph cnn(x: f32[B, 12]) -> f32[B, 3] {
    h = reshape(x, [B, 12, 1]) |> conv(4, 3) |> relu |> max_pool(2)
    return h + zeros([B, 6, 4]) |> flatten |> dense(3)
}
graph seq(xs: f32[B, T, 2]) -> f32[B, 3] {
    run = scan(xs, lstm[3], axis = 1)
    return run.state.h
}
graph noisy(x: f32[B, 3]) -> f32[B, 3] {
    z ~ normal(x, 1)
    return z
}
"""


@pytest.mark.parametrize("graph, given, shapes", [
    ("cnn", "x=B,12", [(2, 12), (5, 12)]),
    ("seq", "xs=B,T,2", [(2, 4, 2), (3, 6, 2)]),
])
def test_exported_symbolic_dims_compute_the_graph(tmp_path, graph, given, shapes):
    """Symbolic B (and T) stay symbolic through reshape, zeros and a scan's state, and the
    exported function gives the compiled graph's values at several sizes."""
    import jax

    import graphdl
    (tmp_path / "e.gdl").write_text(EXPORTABLE)
    model = graphdl.load(tmp_path / "e.gdl")
    exported, with_key = model.export(graph, [given])
    assert not with_key
    fn = model.compile(graph)
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = rng.normal(size=shape).astype(np.float32)
        v = fn.init(jax.random.key(3), x)
        got = exported.call(v["params"], v.get("stats", {}), x)
        np.testing.assert_allclose(got, fn(v, x), rtol=1e-5, atol=1e-6)


def test_export_of_a_sampling_graph_takes_a_key(tmp_path, capsys):
    import jax

    import graphdl
    (tmp_path / "e.gdl").write_text(EXPORTABLE)
    exported, with_key = graphdl.load(tmp_path / "e.gdl").export("noisy", ["x=B,3"])
    assert with_key and "takes a key" in capsys.readouterr().err
    x = np.zeros((4000, 3), np.float32)
    z = np.asarray(exported.call({}, {}, jax.random.key_data(jax.random.key(0)), x))
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def test_bench_prints_its_four_lines(tmp_path, capsys):
    path = make_project(tmp_path)
    code, stdout, err = run_in_process(capsys, "bench", path, "--steps", 5)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 4
    for line, word in zip(lines, ["front end", "XLA compile", "step (median)", "throughput"]):
        assert line.startswith(word)
    assert lines[3].endswith("examples/s")
    ms = float(lines[2].split()[2])
    assert 0 < ms < 10_000


# -- MNIST from IDX files ----------------------------------------------------------------------
def idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()


MNIST = """\
graph net(x: f32[B, 28, 28, 1]) -> f32[B, 10] {
    return x |> max_pool(4) |> flatten |> dense(10)
}

data digits = dataset("mnist", path = "idx")

train {
    data  = digits.train(batch = 8, shuffle = true)
    loss  = mean(cross_entropy(net(data.x), data.y))
    steps = 2
    evaluate on digits.test every 1 epoch {
        accuracy = mean(argmax(net(data.x), -1) == data.y)
    }
}
"""


def test_mnist_idx_files_train_a_step(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "idx").mkdir()
    for prefix, n in (("train", 24), ("t10k", 8)):
        (tmp_path / "idx" / f"{prefix}-images-idx3-ubyte").write_bytes(
            idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (tmp_path / "idx" / f"{prefix}-labels-idx1-ubyte").write_bytes(
            idx(rng.integers(0, 10, n, dtype=np.uint8)))
    (tmp_path / "m.gdl").write_text(MNIST)
    code, _, err = run_in_process(capsys, "run", tmp_path / "m.gdl", "--out", tmp_path / "o",
                                  "--quiet")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "o" / "checkpoint").step == 2
    records = [json.loads(r) for r in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "test" and 0 <= r["accuracy"] <= 1 for r in records)
    assert is_graphdl_checkpoint(tmp_path / "o" / "checkpoint")


# -- schedules of evaluation, checkpoints and early stopping --------------------------------
SCHEDULE = """\
graph net(x: f32[B, 4]) -> f32[B, 3] {
    return x |> dense(8) |> relu |> dense(3)
}

data blobs = npz("blobs.npz", split = [0.5, 0.25, 0.25], seed = 0)

train {
    data      = blobs.train(batch = 8, shuffle = true)
    loss      = mean(cross_entropy(net(data.x), data.y))
    optimizer = sgd(lr = LR)
    epochs    = 12
    checkpoint every 2 epochs
    early_stop(accuracy, patience = 2)
    evaluate on blobs.val every 1 epoch {
        accuracy = mean(argmax(net(data.x), -1) == data.y)
    }
    evaluate on blobs.test every 5 steps {
        loss = mean(cross_entropy(net(data.x), data.y))
    }
}
"""  # 48 training examples: 6 steps per epoch


def records(out: Path, split: str) -> list[dict]:
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def test_step_evaluations_and_epoch_checkpoints(tmp_path, monkeypatch):
    """`evaluate ... every 5 steps` runs during training; `checkpoint every 2 epochs` saves."""
    import graphdl
    from graphdl.runtime import train as train_mod
    saved = []
    real_save = train_mod.save
    monkeypatch.setattr(train_mod, "save", lambda tr, out, step, epoch, model, **kw:
                        (saved.append((step, epoch)), real_save(tr, out, step, epoch, model, **kw)))
    path = make_project(tmp_path, SCHEDULE.replace("early_stop(accuracy, patience = 2)\n", "")
                        .replace("LR", "0.1"))
    graphdl.load(path).train(out=tmp_path / "out", epochs=5)  # 30 steps
    assert [r["step"] for r in records(tmp_path / "out", "test")] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in records(tmp_path / "out", "val")] == [6, 12, 18, 24, 30]
    assert saved == [(12, 2), (24, 4), (30, 5)]  # every 2 epochs, and the final one
    assert load_checkpoint(tmp_path / "out" / "checkpoint").step == 30


def test_early_stop_counts_only_its_own_metric(tmp_path):
    """With a learning rate of 0 the val accuracy never improves: stop after 1 + patience
    epochs, not sooner because another block's evaluation ran in between; then the test
    evaluation still runs at the end."""
    import graphdl
    path = make_project(tmp_path, SCHEDULE.replace("LR", "0.0"))
    result = graphdl.load(path).train(out=tmp_path / "out")
    assert result.steps == 18  # val at 6 (best), 12 (1 bad), 18 (2 bad: stop)
    # the evaluation that stopped the run, and again on the restored weights of step 6
    val = records(tmp_path / "out", "val")
    assert [r["step"] for r in val] == [6, 12, 18, 18]
    assert val[-1]["accuracy"] == val[0]["accuracy"] == result.metrics["val"]["accuracy"]
    assert [r["step"] for r in records(tmp_path / "out", "test")] == [5, 10, 15, 18]
    assert "loss" in result.metrics["test"] and "accuracy" in result.metrics["val"]


def test_resume_keeps_the_early_stopping_count(tmp_path):
    """Stopped at step 13 (best at 6, one evaluation without gain at 12) and resumed, the
    run stops at 18 like the uninterrupted one, not two evaluations after the resume."""
    import graphdl
    path = make_project(tmp_path, SCHEDULE.replace("LR", "0.0"))
    from graphdl.api import train_model as run_training
    run_training(graphdl.load(path), out_dir=tmp_path / "out", progress=False, max_steps=13)
    result = run_training(graphdl.load(path), out_dir=tmp_path / "out", progress=False,
                          resume=True)
    assert result.steps == 18


def test_length_overrides_replace_the_files_length(tmp_path):
    """`epochs=` overrides a file that sets `steps` (and the other way round)."""
    import graphdl
    path = make_project(tmp_path, SCHEDULE.replace("LR", "0.1").replace("epochs    = 12",
                                                                        "steps     = 40"))
    model = graphdl.load(path)
    assert model.plan().num_steps == 40
    plan = model.plan(overrides={"epochs": 2})
    assert plan.epochs == 2 and plan.num_steps is None
    assert model.plan(overrides={"train.steps": 3}).num_steps == 3
    result = graphdl.load(path).train(epochs=1)
    assert result.steps == 6


def test_each_evaluation_batch_draws_its_own_noise_and_the_train_split_evaluates(tmp_path):
    """A `~` in an evaluation: the train split's two batches of 256 must not draw the same
    noise as each other (nor as the val split's one batch of 256): every x is 0, so with
    one key for every batch the two splits' means would be equal."""
    import graphdl
    (tmp_path / "m.gdl").write_text(
        'data pts = npz("pts.npz", split = [0.5, 0.25, 0.25], seed = 0)\n'
        "train {\n    data = pts.train(batch = 8)\n    z ~ normal(data.x, 1.0)\n"
        "    w = data.x |> dense(1)\n    loss = mean(w * w)\n    steps = 1\n"
        "    evaluate on pts.train { m = mean(z) }\n    evaluate on pts.val { m2 = mean(z) }\n}\n")
    np.savez(tmp_path / "pts.npz", x=np.zeros((1024, 2), np.float32))
    metrics = graphdl.load(tmp_path / "m.gdl").train(out=tmp_path / "out").metrics
    train, val = metrics["train"]["m"], metrics["val"]["m2"]
    assert abs(train) < 5 / np.sqrt(1024) and abs(val) < 5 / np.sqrt(512)
    assert train != val
    # the evaluation of the split named `train` is told from the training records
    rows = records(tmp_path / "out", "train")
    assert [r.get("eval", False) for r in rows] == [False, True]
    assert "loss" in rows[0] and "m" in rows[1]
    assert (tmp_path / "out" / "loss.png").stat().st_size > 0
