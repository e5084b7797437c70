"""Limits: every input gets a result or a located error, in bounded time and memory.

Sizes no backend can allocate, integers no backend can hold, numbers that overflow a
float, multi-result ops and dim polynomials that would explode, blank-line and nesting
bombs: each is a user error at its `line:col` (graphdl/dims.py holds the limits). The
bombs run the real `graphdl check` in a subprocess under a memory rlimit and a timeout,
which bounds the work without timing it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from graphdl.dims import (
    MAX_ELEMENTS,
    MAX_INT,
    MAX_INT32,
    Dim,
    DimTooLarge,
    const_problem,
    float_problem,
    int_problem,
    size_problem,
)
from graphdl.parse.parser import parse_source

BIG = "1" + "0" * 320  # an integer too large to be a float (1e320)
DIM_BOMB = " * ".join(f"(A{i} + B{i})" for i in range(22))  # 2^22 terms once expanded

CASES = [
    pytest.param(
        """\
        graph g(x: f32[B, 3]) -> f32[B, 3] {
            param w: f32[100000000000] = zeros
            return x
        }
        """,
        [(2, 18, "this dim is too large: 100000000000 is not below 2^31",
          "the limit is 2^31 elements in one tensor")],
        id="param_dim",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 9223372036854775808]) -> f32[B, 3] {
            return x
        }
        """,
        [(1, 19, "this dim is too large: 9223372036854775808 is not below 2^31",
          "the limit is 2^31 elements in one tensor")],
        id="dim_2_63",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 3]) -> f32[B, 3] {
            param w: f32[100000, 100000] = zeros
            return x
        }
        """,
        [(2, 14, "f32[100000, 100000] has 10000000000 elements; the limit is 2^31 (2147483648) "
                 "elements in one tensor", "a tensor this large cannot be allocated")],
        id="param_elements",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 3]) -> f32[B, 3] {
            param a: f32[65536, 32768] = zeros
            param b: f32[65536, 32768] = zeros
            param c: f32[65536, 32768] = zeros
            param d: f32[65536, 32768] = zeros
            param e: f32[65536, 32768] = zeros
            return x
        }
        """,
        [(6, 5, "the parameters come to 10737418240 elements with `g.e` (f32[65536, 32768]); "
                "the limit is 2^33 (8589934592) parameter elements in all",
          "a model this large cannot be allocated")],
        id="param_total",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 3]) -> f32[B, 3] {
            return dense(x, 1000000000000)
        }
        """,
        [(2, 21, "`units` of dense() is too large: 1000000000000 is not below 2^31",
          "its signature is dense(x, units: int, bias: bool = true)")],
        id="dense_units",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 100000]) -> f32[B, 100000] {
            return dense(x, 100000)
        }
        """,
        [(2, 12, "parameter `g.out.dense.w` (f32[100000, 100000]) has 10000000000 elements; "
                 "the limit is 2^31 (2147483648) elements in one tensor",
          "a tensor this large cannot be allocated")],
        id="dense_weight",
    ),
    pytest.param(
        """\
        use std.nn
        graph g(x: f32[B, T, 3]) -> f32[B, T, 8] {
            return scan(x, lstm[1000000000000])
        }
        """,
        [(3, 12, "`H` of lstm is too large: 1000000000000 is not below 2^31",
          "a constant of a graph is a size or a setting; it must fit an int32 (or a finite "
          "float)")],
        id="lstm_constant",
    ),
    pytest.param(
        """\
        graph g(x: i32[B]) -> f32[B, 8] {
            return embedding(x, vocab = 1000000000000, dim = 8)
        }
        """,
        [(2, 25, "`vocab` of embedding() is too large: 1000000000000 is not below 2^31",
          "its signature is embedding(x, vocab: int, dim: int)")],
        id="embedding_vocab",
    ),
    pytest.param(
        """\
        graph g(x: f32[10000000, 3]) -> f32[1, 3] {
            return split(x, 10000000, axis = 0)[0]
        }
        """,
        [(2, 21, "split into 10000000 sections is too many: the limit is 4096 results",
          "reshape the axis instead, e.g. reshape(x, [B, N, -1]), and index it")],
        id="split_sections",
    ),
    pytest.param(
        f"""\
        graph g(x: f32[B]) -> f32[B] {{
            param w: f32[{DIM_BOMB}] = zeros
            return x
        }}
        """,
        [(2, 18, "this dim expands to more than 256 terms",
          "write a name for the product and bind it, e.g. a graph constant")],
        id="dim_terms",
    ),
    pytest.param(
        f"""\
        graph g(x: f32[B, 3]) -> f32[B, 3] {{
            return dropout(x, {BIG})
        }}
        """,
        [(2, 23, "`rate` of dropout() is too large for a float: 1.000e+320 (321 digits)",
          "its signature is dropout(x, rate: float = 0.5)")],
        id="dropout_big_int",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 3]) -> f32[B, 3] {
            return dropout(x, 1e400)
        }
        """,
        [(2, 23, "this number is too large for a float", None)],
        id="float_literal_inf",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 3]) -> f32[B, 3] {
            return dropout(x, 1e300 * 1e300)
        }
        """,
        [(2, 23, "`rate` of dropout() is too large for a float",
          "its signature is dropout(x, rate: float = 0.5)")],
        id="float_product_inf",
    ),
    pytest.param(
        f"""\
        graph g(x: f32[B, 3]) -> f32[B, 3] {{
            param w: f32[3] = normal(std = {BIG})
            return x * w
        }}
        """,
        [(2, 30, "`std` of normal() is too large for a float: 1.000e+320 (321 digits)", None)],
        id="initializer_std",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 0]) -> f32[B, 4] {
            return dense(x, 4)
        }
        """,
        [(2, 18, "dense needs a non-empty feature axis, got f32[B, 0]",
          "the last axis is the features; it has size 0")],
        id="dense_zero_width",
    ),
    pytest.param(
        f"""\
        data digits = dataset("digits", split = [0.8, 0.2], seed = 0)
        graph f(x: f32[B, 64]) -> f32[B, 10] {{
            return dense(x, 10)
        }}
        train {{
            data = digits.train(batch = 4294967296)
            loss = mean(cross_entropy(f(data.x), data.y))
            steps = 10
            seed = 18446744073709551616
            clip_grad_norm = {BIG}
            optimizer = adam(lr = 1e300 * 1e300)
            schedule = cosine(lr = 0.1, steps = 100000000000000000000000)
        }}
        """,
        [(6, 25, "`batch` is too large: 4294967296 is not below 2^31", None),
         (9, 5, "`seed` must be an integer from 0 to 4294967295, got 18446744073709551616", None),
         (10, 5, "`clip_grad_norm` is too large for a float: 1.000e+320 (321 digits)", None),
         (11, 22, "`lr` of adam() is too large for a float", None),
         (12, 33, "`steps` of cosine() is too large: 100000000000000000000000 is not below 2^63",
          None)],
        id="train_settings",
    ),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_limit_error(check, text, expected):
    result = check(text)
    got = [(d.span.line, d.span.col, d.message, d.hint) for d in result.diagnostics]
    assert got == expected
    assert all(d.span.file == "m.gdl" for d in result.diagnostics)


def test_sizes_at_the_limits_are_accepted(check):
    result = check("""\
        graph g(x: f32[B, 3]) -> f32[B, 3] {
            param w: f32[32768, 65536] = zeros
            return x
        }
        """)
    assert result.diagnostics == []


# -- the checks, reusable for `--set` values -------------------------------------
def test_int_problem():
    assert int_problem(MAX_INT, "`seed`") is None
    assert int_problem(MAX_INT + 1, "`seed`") == \
        "`seed` is too large: 9223372036854775808 is not below 2^63"
    assert int_problem(MAX_INT32, "`H`", int32=True) is None
    assert int_problem(-MAX_INT32 - 1, "`H`", int32=True) == \
        "`H` is too large: -2147483648 is not below 2^31"
    assert int_problem(True, "`x`") is None and int_problem(1.5, "`x`") is None


def test_float_problem():
    assert float_problem(1e308, "`lr`") is None
    assert float_problem(float("inf"), "`lr`") == "`lr` is too large for a float"
    assert float_problem(10**400, "`lr`") == \
        "`lr` is too large for a float: 1.000e+400 (401 digits)"


def test_size_problem():
    assert size_problem((Dim("B"), Dim(MAX_ELEMENTS)), "x") is None
    assert size_problem((Dim(2), Dim(MAX_ELEMENTS)), "x") == \
        "x has 4294967296 elements; the limit is 2^31 (2147483648) elements in one tensor"
    assert size_problem((Dim(0), Dim(10**12)), "x") is None  # no elements at all


def test_dim_terms_are_capped_before_they_explode():
    d = Dim(1)
    with pytest.raises(DimTooLarge):
        for i in range(22):
            d = d * (Dim(f"A{i}") + Dim(f"B{i}"))
    assert len(d.terms) <= 256


def test_a_huge_set_value_is_a_user_error(tmp_path):
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "mlp.gdl").write_text((root / "models" / "mlp.gdl").read_text())
    proc = subprocess.run([sys.executable, "-m", "graphdl", "check", "mlp.gdl",
                           "--set", "mlp.H=1000000000000"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "`H` of mlp is too large: 1000000000000 is not below 2^31" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_const_problem_is_the_check_of_graph_constants():
    assert const_problem(512, "`H` of mlp") is None
    assert const_problem(10**12, "`H` of mlp") == \
        "`H` of mlp is too large: 1000000000000 is not below 2^31"
    assert const_problem(float("inf"), "`p` of g") == "`p` of g is too large for a float"
    assert const_problem("relu", "`act` of g") is None


# -- bombs: the real command, bounded in memory and time -------------------------------
# The child caps its own address space, then runs `graphdl check` (no preexec_fn: this
# process may have imported JAX, and forking a multithreaded process is unsafe).
BOUNDED = ("import resource, runpy, sys; gib = 1 << 30; "
           "resource.setrlimit(resource.RLIMIT_AS, (2 * gib, 2 * gib)); "
           "sys.argv = ['graphdl', 'check', sys.argv[1]]; "
           "runpy.run_module('graphdl', run_name='__main__')")


def check_bounded(path: Path) -> subprocess.CompletedProcess:
    """`graphdl check path` with 2 GiB of address space (the interpreter and its imports
    need about 1) and a generous timeout."""
    return subprocess.run([sys.executable, "-c", BOUNDED, path.name], cwd=path.parent,
                          capture_output=True, text=True, timeout=300)


def test_ten_megabytes_of_blank_lines(tmp_path):
    path = tmp_path / "blank.gdl"
    path.write_text("\n" * 10_000_000 + "graph g(x: f32[B]) -> f32[B] {\n    return x\n}\n")
    proc = check_bounded(path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "blank.gdl: ok (1 graph, 0 train blocks)"


@pytest.mark.parametrize("opener, closer", [("(", ")"), ("[", "]")])
def test_brackets_nested_a_hundred_thousand_deep(tmp_path, opener, closer):
    path = tmp_path / "deep.gdl"
    path.write_text("graph g(x: f32[B]) -> f32[B] {\n    return "
                    + opener * 100_000 + "x" + closer * 100_000 + "\n}\n")
    proc = check_bounded(path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    first = proc.stderr.splitlines()[0]
    assert first == "deep.gdl:2:112: error: brackets are nested too deeply (more than 100 levels)"
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr


def test_an_operator_chain_a_hundred_thousand_long(tmp_path):
    path = tmp_path / "chain.gdl"
    path.write_text("graph g(x: f32[B]) -> f32[B] {\n    return x" + " + x" * 100_000 + "\n}\n")
    proc = check_bounded(path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(
        "chain.gdl:2:5: error: this is nested too deeply (more than 100 levels)")


@pytest.mark.parametrize("body, message", [
    ("    return split(x, 10000000, axis = 0)[0]\n",
     "m.gdl:2:21: error: split into 10000000 sections is too many: the limit is 4096 results"),
    (f"    param w: f32[{DIM_BOMB}] = zeros\n    return x[0]\n",
     "m.gdl:2:18: error: this dim expands to more than 256 terms"),
])
def test_work_bombs_end_in_a_located_error(tmp_path, body, message):
    path = tmp_path / "m.gdl"
    path.write_text("graph g(x: f32[10000000, 3]) -> f32[1, 3] {\n" + body + "}\n")
    proc = check_bounded(path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[0] == message


# -- threads ------------------------------------------------------------------------
def test_parsing_from_several_threads():
    root = Path(__file__).resolve().parents[1]
    files = sorted([root / "graphdl" / "std" / "nn.gdl", *(root / "tests" / "spec").glob("*.gdl"),
                    *(root / "models").glob("*.gdl")])[:8]
    texts = {str(p): p.read_text(encoding="utf-8") for p in files}
    texts["bad.gdl"] = "graph g(x: f32[B]) -> f32[B] {\n    return (x\n}\n"  # a syntax error

    def parse(name: str):
        try:
            return repr(parse_source(texts[name], name))
        except Exception as err:  # noqa: BLE001 - compared with the sequential answer
            return f"{type(err).__name__}: {err}"

    expected = {name: parse(name) for name in texts}
    assert expected["bad.gdl"].startswith("UserError")
    got: dict[str, list[str]] = {name: [] for name in texts}

    def worker(name: str) -> None:
        for _ in range(10):
            got[name].append(parse(name))

    threads = [threading.Thread(target=worker, args=(name,)) for name in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, answers in got.items():
        assert answers == [expected[name]] * 10, name
