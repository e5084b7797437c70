"""Mixed precision (`precision = "bf16"` in a train block; passes/precision.py): which
nodes compute in bf16 and which stay f32, that a bf16 run stays near the f32 run, that
master weights and optimizer state stay f32, and the errors of a graph the policy would
break."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_overrides import blobs_project, cli

import graphdl
from graphdl.elaborate.check import check_program
from graphdl.ir.graph import node, nodes
from graphdl.ir.printer import format_ir
from graphdl.passes.pipeline import run_passes
from graphdl.runtime.data import SOURCES

MODEL = """\
graph net[H = 16](x: f32[B, 4]) -> f32[B, 3] {
    h = x |> dense(H) |> layer_norm |> relu |> dense(H) |> batch_norm |> tanh
    return h |> dropout(0.1) |> dense(3)
}

data blobs = npz("blobs.npz", split = [0.75, 0.25], seed = 0)

train {
    data      = blobs.train(batch = 8, shuffle = true)
    logits    = net(data.x)
    p         = softmax(logits)
    loss      = mean(cross_entropy(logits, data.y)) + 0.01 * mean(square(max(p, axis = -1)))
    optimizer = adam(lr = 1e-2)
    epochs    = 4
    seed      = 1
    evaluate on blobs.test every 1 epoch {
        accuracy = mean(argmax(net(data.x), -1) == data.y)
    }
}
"""

# A bf16 run of MODEL above may differ from the f32 run by this much: its last train loss
# (after 4 epochs, 36 steps) relatively, its test accuracy absolutely (24 test examples).
LOSS_TOLERANCE = 0.05
ACCURACY_TOLERANCE = 1 / 24 + 1e-6


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return blobs_project(tmp_path, MODEL)




def train_ir(project: Path, text: str | None = None, precision: str | None = "bf16"):
    text = MODEL if text is None else text
    overrides = {"train.precision": precision} if precision else None
    checked = check_program(str(project), text, overrides, sources=SOURCES)
    assert not checked.diagnostics, checked.diagnostics
    return checked.trains[0].ir


def by_op(g) -> dict[str, list]:
    out: dict[str, list] = {}
    for _, n in nodes(g):
        out.setdefault(n.op, []).append(n)
    return out


# -- the pass -------------------------------------------------------------------------
def test_the_pass_computes_matmuls_and_elementwise_in_bf16_and_keeps_reductions_f32(project):
    g = run_passes(train_ir(project))
    ops = by_op(g)
    for op in ("dense", "relu", "tanh", "dropout", "square", "max"):
        assert {n.attrs.get("compute") for n in ops[op]} == {"bf16"}, op
        assert {n.dtype for n in ops[op]} == {"bf16"}, op
    for op in ("layer_norm", "batch_norm", "softmax", "cross_entropy", "mean"):
        assert {n.attrs.get("compute") for n in ops[op]} == {"f32"}, op
        assert {n.dtype for n in ops[op]} == {"f32"}, op
    # master weights, statistics and inputs are read as they are: f32
    assert {n.dtype for op in ("param", "stat", "input") for n in ops[op]} == {"f32", "i32"}
    assert all(node(g, o).dtype == "f32" for o in g.graph["outputs"])  # the losses
    assert "# precision bf16" in format_ir(g).splitlines()[0]


def test_f32_and_no_train_block_leave_the_ir_alone(project):
    for precision in (None, "f32"):
        g = train_ir(project, precision=precision)
        assert format_ir(run_passes(g, until="precision")) == \
            format_ir(run_passes(g, until="fuse_dense"))
    checked = check_program(str(project), MODEL, sources=SOURCES)
    graph = run_passes(checked.irs["net"])
    assert not any("compute" in n.attrs for _, n in nodes(graph))


def test_a_recurrent_body_computes_in_bf16_with_its_state_f32(tmp_path):
    text = """\
cell acc(x: f32[B, 4]) -> f32[B, 4] {
    state s: f32[B, 4] = zeros
    s = tanh(dense(x, 4)) + s
    return s
}
graph run(x: f32[B, T, 4]) -> f32[B, 4] {
    r = scan(x, acc)
    return r.state.s
}
train {
    precision = "bf16"
    loss = mean(run(ones([2, 3, 4])))
    steps = 1
}
"""
    checked = check_program(str(tmp_path / "r.gdl"), text, sources=SOURCES)
    assert not checked.diagnostics, checked.diagnostics
    g = run_passes(checked.trains[0].ir)
    scan = next(n for _, n in nodes(g) if n.op == "scan")
    body = by_op(scan.attrs["body"])
    assert body["dense"][0].attrs["compute"] == "bf16"
    assert body["add"][0].attrs["compute"] == "f32"  # the state's next value
    assert body["state"][0].dtype == "f32"


# -- runs -----------------------------------------------------------------------------
def test_bf16_trains_near_f32_with_f32_master_weights_and_optimizer_state(project):
    results = {}
    for precision in ("f32", "bf16"):
        out = project.parent / f"run-{precision}"
        results[precision] = graphdl.load(project).train(out=str(out), precision=precision)
        saved = load_file(out / "checkpoint" / "checkpoint.safetensors")
        floats = {k: v.dtype for k, v in saved.items() if v.dtype.kind == "f"}
        assert floats and set(floats.values()) == {np.dtype("float32")}, floats
        assert any(k.startswith("opt/") for k in floats)  # adam's moments
    f32, bf16 = results["f32"], results["bf16"]
    assert {str(v.dtype) for v in bf16.variables["params"].values()} == {"float32"}
    assert {str(v.dtype) for v in bf16.variables["stats"].values()} == {"float32"}
    loss = [[r["loss"] for r in res.history if r.get("split") == "train"][-1]
            for res in (f32, bf16)]
    assert loss[0] != loss[1]  # bf16 did compute in bf16
    assert abs(loss[1] - loss[0]) <= LOSS_TOLERANCE * abs(loss[0]), loss
    acc = [res.metrics["test"]["accuracy"] for res in (f32, bf16)]
    assert abs(acc[1] - acc[0]) <= ACCURACY_TOLERANCE, acc


def test_set_precision_bf16_is_what_show_prints(project, capsys):
    code, out, err = cli(capsys, "show", project, "--ir", "--train", "train", "--after",
                         "precision", "--set", "train.precision=bf16")
    assert code == 0, err
    assert 'compute="bf16") : bf16[8, 16]' in out and 'compute="f32") : f32[]' in out
    code, out, _ = cli(capsys, "show", project, "--ir", "--train", "train", "--after",
                       "precision")
    assert code == 0 and "compute=" not in out


# -- errors ---------------------------------------------------------------------------
def check_errors(capsys, project: Path, text: str, *args) -> str:
    project.write_text(text)
    code, out, err = cli(capsys, "check", project, *args)
    assert code == 2 and out == "", (out, err)
    return err


def test_a_bad_precision_is_a_located_error_with_a_did_you_mean(project, capsys):
    err = check_errors(capsys, project, MODEL, "--set", "train.precision=fp8")
    assert err.strip() == ('error: --set train.precision="fp8": unknown precision "fp8"; the '
                           'choices are "f32", "bf16"; did you mean `bf16`? it is the '
                           "narrowest precision offered")
    err = check_errors(capsys, project, MODEL.replace("    epochs", '    precision = "bfloat16"\n'
                                                                  "    epochs"))
    assert f"{project}:14:5: error: unknown precision \"bfloat16\"" in err
    assert "did you mean `bf16`?" in err


def test_f16_is_refused_with_why(project, capsys):
    err = check_errors(capsys, project, MODEL, "--set", "train.precision=f16")
    assert 'precision "f16" is not offered: f16 needs loss scaling' in err
    assert 'write precision = "bf16"' in err


def _with(line: str, precision: str = "bf16") -> str:
    """MODEL with `net`'s first line replaced and the train block in `precision`."""
    text = MODEL.replace("    h = x |> dense(H)", line + "\n    h = x |> dense(H)", 1)
    return text.replace("    epochs", f'    precision = "{precision}"\n    epochs')


@pytest.mark.parametrize("line, message, col", [
    ('    x = cast(x, "f16")', 'this value is f16, but precision "bf16"', 9),
    ('    k = cast(x, "f64") |> relu', 'this value is f64, but precision "bf16"', 9),
    ('    x = cast(x |> relu, "f32")', 'cast(..., "f32") of a float value', 9),
    ('    x = x + cast(arange(300), "f32")[0]',
     "bf16 holds integers exactly only up to 256, but this cast's values reach 299", 13),
])
def test_a_dtype_the_policy_would_break_is_an_error_at_its_line(project, capsys, line,
                                                                message, col):
    err = check_errors(capsys, project, _with(line))
    assert err.startswith(f"{project}:2:{col}: error: {message}"), err
    assert "= hint: " in err
    project.write_text(_with(line, "f32"))  # the same graph is fine in f32
    code, _, err = cli(capsys, "check", project)
    assert code == 0, err


@pytest.mark.parametrize("line", [
    '    x = x + cast(arange(4), "f32")',  # small integers are exact in bf16
    '    x = x * cast(x > 0.0, "f32")',  # a mask
    '    x = cast(x, "bf16")',  # the graph's own bf16
    '    k = sum(cast(arange(1000), "f32"))',  # reduced in f32 before any bf16 math
])
def test_what_the_policy_keeps_is_no_error(project, capsys, line):
    project.write_text(_with(line))
    code, _, err = cli(capsys, "check", project)
    assert code == 0, err
