"""Every script in examples/ runs in its quick mode and learns something.

Each example prints lines like `test accuracy: 0.8123`; with 10 classes chance is 0.1,
so every such number must clear 0.3 even after a quick run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
ACCURACY = re.compile(r"test accuracy: ([0-9.]+)")


def test_there_are_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_quick(script, tmp_path):
    env = {**os.environ, "GRAPHDL_QUICK": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracies = [float(a) for a in ACCURACY.findall(result.stdout)]
    assert accuracies, f"{script.name} printed no test accuracy:\n{result.stdout}"
    assert all(a > 0.3 for a in accuracies), result.stdout
    assert not list(tmp_path.iterdir()), "an example wrote files into the working directory"
