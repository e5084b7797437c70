"""`graphdl show` for tuples and cells, `--format dot --out`, and `graphdl --version`."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import graphdl
from graphdl.cli import main

REPO = Path(__file__).resolve().parents[1]
LSTM = REPO / "tests" / "spec" / "lstm.gdl"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_writes_tuple_types_as_gdl(capsys):
    code, out, err = cli(capsys, "show", LSTM, "--graph", "classify")
    assert code == 0, err
    scan = next(line for line in out.splitlines() if line.strip().startswith("scan"))
    assert "(f32[B, T, 128], f32[B, 128], f32[B, 128])" in scan
    assert "TensorType" not in out and "Dim(" not in out


def test_show_a_cell_shows_its_step_and_states(capsys):
    code, out, err = cli(capsys, "show", LSTM, "--graph", "lstm")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "cell lstm: one time step (run by scan), states h: f32[B, H], c: f32[B, H]"
    assert lines[1].split()[:3] == ["input", "x", "f32[B,"]
    assert [line.split()[:2] for line in lines if line.split()[0] == "state"] == [
        ["state", "h"], ["state", "c"]]
    assert any(line.split()[0] == "concat" and "f32[B, D + H]" in line for line in lines)
    nexts = [line.split()[:4] for line in lines if line.split()[0] == "next"]
    assert nexts == [["next", "h", "=", "mul"], ["next", "c", "=", "add"]]


def test_show_dot_out_writes_the_file(capsys, tmp_path):
    target = tmp_path / "g.dot"
    code, out, err = cli(capsys, "show", LSTM, "--graph", "classify", "--format", "dot",
                         "--out", target)
    assert code == 0, err
    assert out == f"wrote {target}\n"
    text = target.read_text()
    assert text.startswith('digraph "classify" {') and text.rstrip().endswith("}")
    assert "(f32[B, T, 128], f32[B, 128], f32[B, 128])" in text
    # without --out, the DOT is printed
    code, out, _ = cli(capsys, "show", LSTM, "--graph", "lstm", "--format", "dot")
    assert code == 0 and out.startswith('digraph "lstm" {') and "h\\nf32[B, H]" in out
    code, _, err = cli(capsys, "show", LSTM, "--graph", "lstm", "--format", "dot",
                       "--out", tmp_path / "no" / "such" / "dir.dot")
    assert code == 2 and err.startswith("error: --out ") and "Traceback" not in err


def test_version_names_graphdl_and_jax_without_importing_jax():
    probe = ("import sys, contextlib, io\n"
             "from graphdl.cli.main import main\n"
             "buf = io.StringIO()\n"
             "with contextlib.redirect_stdout(buf):\n"
             "    try:\n        main(['--version'])\n"
             "    except SystemExit as e:\n        code = e.code\n"
             "print(repr(buf.getvalue()), code, 'jax' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    try:
        ours = metadata.version("graphdl")
    except metadata.PackageNotFoundError:
        ours = graphdl.__version__
    expected = f"graphdl {ours} (jax {metadata.version('jax')})\n"
    assert proc.stdout.strip() == f"{expected!r} 0 False"


@pytest.mark.parametrize("argv", [["--version", "check"], ["--version"]])
def test_version_exits_zero(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("graphdl ")
