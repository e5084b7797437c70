"""Shared fixtures of the front-end tests: check GDL text in-process."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import textwrap

import pytest

from graphdl.elaborate.check import check_program
from graphdl.runtime.data import SOURCES

# The suite's compilation cache (and downloads) in a folder of its own, gone at the end:
# never the user's ~/.cache/graphdl, and no entries left from an earlier run of the suite.
if "GRAPHDL_CACHE" not in os.environ:
    os.environ["GRAPHDL_CACHE"] = tempfile.mkdtemp(prefix="graphdl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GRAPHDL_CACHE"], ignore_errors=True)
# The conv autotuner measures for real only where a test asks for it (test_rewrites.py with
# a fake timer, the slow model checks): measuring each conv shape of the quick model tests
# cost seconds of compiles each.
os.environ.setdefault("GRAPHDL_AUTOTUNE", "off")


def pytest_configure(config):
    """On a GPU, f32 matmuls default to TF32 (about 3 decimal digits): the tests that
    compare a matmul form of an op with another form would fail on rounding alone."""
    import jax

    if jax.default_backend() != "cpu":
        jax.config.update("jax_default_matmul_precision", "highest")


def source(text: str) -> str:
    """A test's GDL text: dedented, without the leading newline of a triple-quoted string."""
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture
def check(tmp_path, monkeypatch):
    """`check(text, name="m.gdl")` writes the file into a temporary working directory and
    checks it there, so every span reads `m.gdl:LINE:COL`."""
    monkeypatch.chdir(tmp_path)

    def run(text: str, name: str = "m.gdl"):
        text = source(text)
        (tmp_path / name).write_text(text, encoding="utf-8")
        return check_program(name, text, sources=SOURCES)

    return run
