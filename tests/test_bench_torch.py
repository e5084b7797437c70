"""benchmarks/torch_models.py: each PyTorch twin is graphdl's model, step for step.

From graphdl's initial parameters and batch, the PyTorch step's losses equal graphdl's
compiled step's for the first steps (the first: the same forward pass; the next ones: the
same gradients and Adam update), with dropout set to 0 on both sides (its masks differ).
The VAE draws its noise: its twin is checked against the hand-written JAX VAE on the same
noise, and against graphdl in the mean over draws. Those tests skip without PyTorch (the
`bench` extra); the graphdl package itself never imports it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare  # noqa: E402
from handwritten import HANDWRITTEN  # noqa: E402

STEPS = 2


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_graphdl_never_imports_torch():
    """PyTorch is a benchmark's extra: no module of the package imports it."""
    found = []
    for file in (ROOT / "graphdl").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{file.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert not found


def test_table_without_torch():
    """Without PyTorch the table's torch cells are "-", the ratios' columns kept aligned."""
    assert compare._cell(None, ".3f", 9) == "        -"
    assert len(compare._ratio(None)) == len(compare._ratio((1.0, 0.5, 1.5)))


def _without_dropout(path: Path, tmp_path: Path) -> Path:
    """The .gdl file with every dropout rate 0 (a copy beside the test's files)."""
    text = path.read_text()
    plain = re.sub(r"dropout\([0-9.]+\)", "dropout(0.0)", text)
    if plain == text:
        return path
    copy = tmp_path / path.name
    copy.write_text(plain)
    return copy


def _twins(name: str, path: Path):
    from torch_models import TorchStep

    trainer = compare.make_trainer(path)
    run, state, batch = compare.graphdl_step(trainer)
    step = TorchStep(name, trainer.params, trainer.stats, batch, compare.initial_lr(trainer),
                     threads=1)
    for module in step.model.modules():
        if module.__class__.__name__ == "Dropout":
            module.p = 0.0
    return trainer, state, batch, step


def _graphdl_losses(trainer, state, batch, steps: int) -> list[float]:
    losses = []
    for i in range(steps):
        *state, loss = trainer.iteration(*state, batch, jax.random.key(i))
        losses.append(float(loss[0]))
    return losses


def _check(name: str, tmp_path: Path) -> None:
    path = _without_dropout(compare.model_path(name), tmp_path)
    trainer, state, batch, step = _twins(name, path)
    # the hand-written JAX twin's first loss too, where it has no dropout to differ by
    spec = HANDWRITTEN[name]
    params = spec.get("params", dict)(dict(trainer.params))
    jax_loss = float(spec["loss"](params, trainer.stats, batch, jax.random.key(0))[0])
    expected = _graphdl_losses(trainer, state, batch, STEPS)
    got = [float(step()) for _ in range(STEPS)]
    np.testing.assert_allclose(got, expected, rtol=2e-5)
    assert expected[1] < expected[0]  # a step that moved the parameters
    if path == compare.model_path(name):
        assert jax_loss == pytest.approx(expected[0], rel=2e-5)


@pytest.mark.parametrize("name", ["cnn_mnist", "rnn", "lstm"])
def test_torch_step_equals_graphdl(name, tmp_path, torch):
    _check(name, tmp_path)


# the shipped models with dropout (and batch norm): 30-70 s each on a loaded 2-core machine
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn1d", "cnn2d"])
def test_torch_step_equals_graphdl_shipped(name, tmp_path, torch):
    _check(name, tmp_path)


def test_vae_twins(torch):
    from torch_models import torch_batch

    trainer, state, batch, step = _twins("vae", compare.model_path("vae"))
    model, x = step.model, torch_batch(batch)["x"]
    binary = (x > 0.5).float()
    # on the same noise, the PyTorch VAE is the hand-written JAX one
    key = jax.random.key(3)
    eps = np.array(jax.random.normal(key, (x.shape[0], 8)))  # writable, for torch
    jax_loss = float(HANDWRITTEN["vae"]["loss"](dict(trainer.params), {}, batch, key)[0])
    with torch.no_grad():
        torch_loss = float(model(binary, torch.from_numpy(eps)).mean())
        # and in the mean over draws, graphdl's: its first step's loss over 16 keys
        draws = [float(model(binary).mean()) for _ in range(400)]
    assert torch_loss == pytest.approx(jax_loss, rel=1e-5)
    copies = [jax.tree.map(jnp.copy, state) for _ in range(16)]  # each step donates its own
    graphdl = [float(trainer.iteration(*s, batch, jax.random.key(i))[3][0])
               for i, s in enumerate(copies)]
    spread = np.std(graphdl) / np.sqrt(len(graphdl)) + np.std(draws) / np.sqrt(len(draws))
    assert abs(np.mean(graphdl) - np.mean(draws)) < 4 * spread + 1e-3
    assert np.std(graphdl) > 0 and np.std(draws) > 0  # both draw their z
