"""Train-step time of the CNN and the LSTM with graphdl's rewrites on and off, against
the same model hand-written in JAX and in PyTorch.

    python benchmarks/rewrites.py [--rounds 9] [--steps 10] [cnn] [lstm] [--no-torch]

cnn: benchmarks/rewrites_cnn.gdl (two 3x3 convs with 2x2 max pooling, 28x28x1, batch 128);
lstm: benchmarks/lstm_adding.gdl (T = 100, hidden 128, batch 64). A step is forward,
backward and Adam. Each contender runs `--steps` steps per round; rounds are interleaved
(noise from other processes hits all alike) and the medians of the per-round times and of
the per-round ratios are printed, with the interquartile range of each ratio. "on" is
graphdl as shipped (the conv lowerings autotuned on this machine at its first compile,
the picks printed); "off" is `graphdl.load(path, rewrites=False)`. PyTorch runs on
`torch.set_num_threads(--threads)` (default 2, this machine's cores).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from compare import time_steps  # noqa: E402
from handwritten import dense, lstm_loss, lstm_params, xent  # noqa: E402

import graphdl  # noqa: E402
from graphdl.passes import autotune  # noqa: E402
from graphdl.runtime.train import Trainer  # noqa: E402


# -- the CNN by hand, as a JAX user writes it: XLA's convolution and window pooling ------
def cnn_loss(p, stats, batch, key):
    def conv(prefix, x):
        y = lax.conv_general_dilated(x, p[prefix + ".w"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p[prefix + ".b"]

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = pool(jax.nn.relu(conv("cnn.h.conv", batch["data.x"])))
    h = pool(jax.nn.relu(conv("cnn.h.conv_1", h)))
    h = jax.nn.relu(dense(p, "cnn.out.dense", h.reshape(h.shape[0], -1)))
    return xent(dense(p, "cnn.out.dense_1", h), batch["data.y"]), {}


MODELS = {
    "cnn": {"file": "rewrites_cnn.gdl", "loss": cnn_loss},
    "lstm": {"file": "lstm_adding.gdl", "loss": lstm_loss, "params": lstm_params},
}


def cnn_folder() -> Path:
    """A folder with rewrites_cnn.gdl and its npz of random MNIST-shaped images."""
    folder = Path(tempfile.mkdtemp(prefix="graphdl-rewrites-"))
    text = (ROOT / "benchmarks" / "rewrites_cnn.gdl").read_text(encoding="utf-8")
    assert 'dataset("mnist")' in text
    (folder / "rewrites_cnn.gdl").write_text(
        text.replace('dataset("mnist")', 'npz("images.npz", split = [0.9, 0.1])'),
        encoding="utf-8")
    rng = np.random.default_rng(0)
    np.savez(folder / "images.npz", x=rng.random((1024, 28, 28, 1), dtype=np.float32),
             y=rng.integers(0, 10, 1024).astype(np.int32))
    return folder


def graphdl_step(path: Path, rewrites: bool):
    model = graphdl.load(path, rewrites=rewrites)
    trainer = Trainer(model.plan(), model.sources)
    _, batch = next(trainer.batch_stream(0))
    fn = trainer.iteration

    def run(state, i):
        return fn(*state, batch, jax.random.fold_in(jax.random.key(0), i))[:3]
    return run, (trainer.params, trainer.stats, trainer.opt_states), batch, trainer


def jax_step(spec: dict, trainer, batch):
    params = {k: jnp.copy(v) for k, v in trainer.params.items()}
    if "params" in spec:
        params = spec["params"](params)
    tx = optax.adam(1e-3)
    loss_fn = spec["loss"]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, batch, key):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, {}, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(state, i):
        return step(*state, batch, jax.random.fold_in(jax.random.key(0), i))[:2]
    return run, (params, tx.init(params))


def torch_step(name: str, threads: int):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                              nn.Linear(128, 10))
        x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))

        def loss_fn():
            return nn.functional.cross_entropy(model(x), y)
    else:
        lstm, head = nn.LSTM(2, 128, batch_first=True), nn.Linear(128, 1)
        model = nn.ModuleList([lstm, head])
        x, y = torch.rand(64, 100, 2), torch.rand(64, 1)

        def loss_fn():
            _, (h, _) = lstm(x)
            return nn.functional.mse_loss(head(h[-1]), y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run(state, i):
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
        return state
    return run, None


def time_torch(run, steps: int) -> float:
    run(None, 0)
    t0 = time.perf_counter()
    for i in range(steps):
        run(None, i)
    return (time.perf_counter() - t0) / steps


def picks() -> list[str]:
    """The conv lowerings the autotuner kept on this machine (its cache file)."""
    out = []
    for k, entry in autotune.read_all().items():
        key = json.loads(k)
        out.append(f"{key['op']} {key['sizes']} -> {entry['pick']} "
                   f"({', '.join(f'{n} {ms:.1f} ms' for n, ms in sorted(entry['ms'].items()))})")
    return out


def bench(name: str, rounds: int, steps: int, threads: int, torch_too: bool) -> dict:
    spec = MODELS[name]
    path = (cnn_folder() if name == "cnn" else ROOT / "benchmarks") / spec["file"]
    runs = {}
    run, state, batch, trainer = graphdl_step(path, rewrites=True)
    runs["on"] = [run, state]
    run, state, _, _ = graphdl_step(path, rewrites=False)
    runs["off"] = [run, state]
    runs["jax"] = list(jax_step(spec, trainer, batch))
    if torch_too:
        runs["torch"] = list(torch_step(name, threads))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, entry in runs.items():
            if k == "torch":
                times[k].append(time_torch(entry[0], steps))
            else:
                t, entry[1] = time_steps(entry[0], entry[1], steps)
                times[k].append(t)
    ratios = {f"on/{k}": [a / b for a, b in zip(times["on"], times[k])]
              for k in runs if k != "on"}
    return {"ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
            "ratios": {k: (statistics.median(v), *iqr(v)) for k, v in ratios.items()}}


def iqr(v: list[float]) -> tuple[float, float]:
    if len(v) < 4:
        return min(v), max(v)
    q = statistics.quantiles(v, n=4)
    return q[0], q[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), metavar="MODEL",
                        help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch's CPU threads")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    args = parser.parse_args()
    for name in args.models:
        if name not in MODELS:
            parser.error(f"no model {name!r}; the models are {', '.join(MODELS)}")
    for name in args.models:
        r = bench(name, args.rounds, args.steps, args.threads, not args.no_torch)
        print(f"{name}: " + ", ".join(f"{k} {ms:.2f} ms" for k, ms in r["ms"].items()))
        for k, (med, q1, q3) in r["ratios"].items():
            print(f"  {k:<9} {med:.3f}  [{q1:.3f}, {q3:.3f}]")
        sys.stdout.flush()
    for line in picks():
        print("autotune:", line)


if __name__ == "__main__":
    main()
