"""`graphdl check` and `graphdl show` as a user runs them: exit status, stdout, stderr.

User errors exit 2 with `file:line:col: error:` lines and a caret, never a traceback;
a good file exits 0 and says ok.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

SPEC = Path(__file__).resolve().parent / "spec"


def graphdl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphdl", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def assert_user_error(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_spec_examples_check():
    files = [SPEC / f"{name}.gdl" for name in ("gan", "lstm", "mlp", "stochastic")]
    proc = graphdl("check", *(str(p) for p in files))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert [line.split(": ok (")[0] for line in proc.stdout.splitlines()] == [str(p) for p in files]


def test_a_good_file_prints_ok(tmp_path):
    (tmp_path / "good.gdl").write_text("graph g(x: f32[B, 3]) -> f32[B, 2] {\n"
                                       "    return x |> dense(2)\n}\n")
    proc = graphdl("check", "good.gdl", cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "good.gdl: ok (1 graph, 0 train blocks)\n", "")


BAD = {
    "unknown_op.gdl": ("graph g(x: f32[B, 3]) -> f32[B, 3] {\n    return x |> relux\n}\n",
                       "unknown_op.gdl:2:17: error: unknown operation `relux`",
                       "  |                 ^^^^^"),
    "paren.gdl": ("graph g(x: f32[B, 3]) -> f32[B, 2] {\n    h = dense(x, 2\n    return h\n}\n",
                  "paren.gdl:2:19: error: expected ')' to close the call opened at 2:14",
                  "  |                   ^"),
    "eof.gdl": ("graph g(x: f32[B, 3]) -> f32[B, 3] {\n    return x\n",
                "eof.gdl:2:13: error: the file ended inside the `graph g` body opened at 1:1; "
                "a '}' is missing", "  |             ^"),
    "matmul.gdl": ("graph g(x: f32[B, 3], w: f32[4, 5]) -> f32[B, 5] {\n    return x @ w\n}\n",
                   "matmul.gdl:2:12: error: cannot multiply f32[B, 3] @ f32[4, 5]: inner dims "
                   "3 and 4 differ", "  |            ^^^^^"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_file_exits_2_with_a_located_error_and_a_caret(tmp_path, name):
    text, head, caret = BAD[name]
    (tmp_path / name).write_text(text)
    proc = graphdl("check", name, cwd=tmp_path)
    assert_user_error(proc)
    lines = proc.stderr.splitlines()
    assert lines[0] == head
    assert caret in lines


def test_several_errors_are_counted(tmp_path):
    (tmp_path / "two.gdl").write_text(
        "graph g(x: f32[B, 3]) -> f32[B, 3] {\n    a = relux(x)\n    return y\n}\n")
    proc = graphdl("check", "two.gdl", cwd=tmp_path)
    assert_user_error(proc)
    assert [line for line in proc.stderr.splitlines() if ": error: " in line] == [
        "two.gdl:2:9: error: unknown operation `relux`",
        "two.gdl:3:12: error: undefined name `y`"]
    assert proc.stderr.rstrip().endswith("2 errors")


def test_a_good_and_a_bad_file_exit_2_and_report_both(tmp_path):
    (tmp_path / "good.gdl").write_text("graph g(x: f32[B]) -> f32[B] {\n    return x\n}\n")
    (tmp_path / "bad.gdl").write_text("graph g(x: f32[B]) -> f32[B] {\n    return x +\n")
    proc = graphdl("check", "good.gdl", "bad.gdl", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "good.gdl: ok" in proc.stdout and proc.stderr.startswith("bad.gdl:")


@pytest.mark.parametrize("kind, message", [
    ("missing", "error: nothere.gdl: no such file"),
    ("directory", "error: adir: is a directory, not a .gdl file"),
    ("latin1", "error: latin.gdl: is not UTF-8 text"),
])
def test_unreadable_inputs(tmp_path, kind, message):
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin.gdl").write_bytes(b"graph g() {\n    return \xe9\xff\n}\n")
    target = {"missing": "nothere.gdl", "directory": "adir", "latin1": "latin.gdl"}[kind]
    proc = graphdl("check", target, cwd=tmp_path)
    assert_user_error(proc)
    assert proc.stderr.strip() == message


def test_binary_garbage_and_an_empty_file(tmp_path):
    (tmp_path / "nul.gdl").write_bytes(b"graph \x00\x01\x02")
    proc = graphdl("check", "nul.gdl", cwd=tmp_path)
    assert_user_error(proc)
    assert proc.stderr.startswith("nul.gdl:1:7: error: unexpected character '\\x00'")
    (tmp_path / "empty.gdl").write_text("")
    proc = graphdl("check", "empty.gdl", cwd=tmp_path)
    assert proc.returncode == 0 and "ok (0 graphs" in proc.stdout


def test_show_params_lists_hierarchical_names():
    proc = graphdl("show", str(SPEC / "lstm.gdl"), "--params")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert "classify.run.lstm.f.dense.w" in names
    assert "classify.out.dense.w" in names and "lstm.w.dense.b" in names
    assert "parameters of classify: 10 tensors" in proc.stdout


def test_show_params_of_a_trained_graph():
    proc = graphdl("show", str(SPEC / "mlp.gdl"), "--params")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert [r[0] for r in rows] == ["mlp.out.dense.b", "mlp.out.dense.w", "mlp.out.dense_1.b",
                                    "mlp.out.dense_1.w"]


def test_show_on_a_bad_file_is_a_user_error(tmp_path):
    (tmp_path / "bad.gdl").write_text("graph g(x: f32[B]) -> f32[B] {\n    return relux(x)\n}\n")
    proc = graphdl("show", "bad.gdl", "--params", cwd=tmp_path)
    assert_user_error(proc)
    assert proc.stderr.startswith("bad.gdl:2:12: error: unknown operation `relux`")


def deck_model(blocks: int = 12) -> str:
    """A model the size of the deck's examples: a conv tower, an LSTM, an MLP, training."""
    convs = "\n".join(f"    h{i + 1} = h{i} |> conv(32, kernel = 3) |> batch_norm |> relu"
                      for i in range(blocks))
    return f"""\
use std.nn

graph tower(x: f32[B, 8, 8, 1]) -> f32[B, 10] {{
    h0 = x |> conv(32)
{convs}
    p = h{blocks} |> max_pool(2) |> flatten |> dense(128) |> relu |> dropout(0.2)
    return p |> dense(10)
}}

graph reader(xs: f32[B, T, D]) -> f32[B, 10] {{
    enc = scan(xs, lstm[64])
    dec = scan(xs, lstm[64], init = enc.state)
    return dec.state.h |> dense(10)
}}

data digits = dataset("digits", split = [0.8, 0.2], seed = 0)

train {{
    data      = digits.train(batch = 64, shuffle = true)
    logits    = tower(data.image)
    loss      = mean(cross_entropy(logits, data.y))
    optimizer = adam(lr = 1e-3)
    epochs    = 30
    evaluate on digits.test every 1 epoch {{
        accuracy = mean(argmax(tower(data.image), -1) == data.y)
    }}
}}
"""


def test_check_of_a_deck_sized_model_is_fast(tmp_path):
    (tmp_path / "deck.gdl").write_text(deck_model())
    start = time.perf_counter()
    proc = graphdl("check", "deck.gdl", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    print(f"\ngraphdl check of a deck-sized model: {elapsed:.2f} s (process start included)")
