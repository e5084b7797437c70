"""The persistent compilation cache: on by default in $GRAPHDL_CACHE/xla, a second run of
the same file compiles nothing new and trains to the same numbers, a change to an
imported file misses, and `--no-compile-cache` writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from graphdl.lower import compile as compile_module

REPO = Path(__file__).resolve().parents[1]

LAYERS = """\
graph body(x: f32[B, 4]) -> f32[B, 8] {
    return x |> dense(WIDTH) |> relu |> dense(8)
}
"""

MAIN = """\
use "layers.gdl"
data ring = gaussian_ring(4, n = 256)

graph net(x: f32[B, 2]) -> f32[B, 4] {
    return x |> dense(4) |> body |> dense(4)
}

train {
    data = ring.train(batch = 32, shuffle = true)
    loss = mean(cross_entropy(net(data.x), data.y))
    optimizer = adam(lr = 0.01)
    epochs = 1
}
"""


def _project(folder: Path, width: int) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "layers.gdl").write_text(LAYERS.replace("WIDTH", str(width)))
    (folder / "m.gdl").write_text(MAIN)
    return folder / "m.gdl"


def _run(folder: Path, cache: Path, *flags: str, out: str = "out") -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != compile_module.CACHE_SWITCH}
    env.update(PYTHONPATH=str(REPO), GRAPHDL_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-m", "graphdl", *flags, "run", "m.gdl", "--out", out,
                           "--overwrite", "--quiet"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (folder / out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def _entries(cache: Path) -> set[str]:
    """JAX's entries and graphdl's kept executables (`executables/`)."""
    folder = cache / "xla"
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_second_run_compiles_nothing_new_and_an_imported_change_misses(tmp_path):
    cache = tmp_path / "cache"
    _project(tmp_path, 16)
    first = _run(tmp_path, cache)
    after_first = _entries(cache)
    assert after_first, "the first run wrote nothing into the cache"
    again = _run(tmp_path, cache)
    assert _entries(cache) == after_first  # every program was found
    assert again == first  # loaded programs train to the same numbers
    _project(tmp_path, 24)  # only the imported file changes
    _run(tmp_path, cache)
    assert _entries(cache) - after_first  # the changed programs missed


def test_no_compile_cache_writes_nothing(tmp_path):
    cache = tmp_path / "cache"
    _project(tmp_path, 16)
    losses = _run(tmp_path, cache, "--no-compile-cache")
    assert losses and not (cache / "xla").exists()


def test_the_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHDL_CACHE", str(tmp_path))
    monkeypatch.delenv(compile_module.CACHE_SWITCH, raising=False)
    assert compile_module.default_cache_dir() == tmp_path / "xla"
    monkeypatch.delenv("GRAPHDL_CACHE")
    assert compile_module.default_cache_dir() == Path.home() / ".cache" / "graphdl" / "xla"
    monkeypatch.setenv(compile_module.CACHE_SWITCH, "off")
    assert compile_module.default_cache_dir() is None


def test_the_cli_switch_names_the_variable_compile_reads():
    source = (REPO / "graphdl" / "cli" / "main.py").read_text()
    assert f'os.environ["{compile_module.CACHE_SWITCH}"] = "off"' in source
