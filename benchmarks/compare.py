"""Train-step time of each shipped model against the same model hand-written in JAX.

Both sides run in this process on the same batch with the same optax optimizer; their
steps are timed in interleaved rounds (so machine noise hits both alike) and the median
ratio graphdl / hand-written is printed with its spread. Target: <= 1.05.

    python benchmarks/compare.py [--rounds 15] [--steps 20] [MODEL ...]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from handwritten import HANDWRITTEN  # noqa: E402

import graphdl  # noqa: E402
from graphdl.runtime.train import Trainer  # noqa: E402


def graphdl_step(model_path: Path, train: str | None):
    model = graphdl.load(model_path)
    trainer = Trainer(model.plan(train), model.sources)
    _, batch = next(trainer.batch_stream(0))
    state = (trainer.params, trainer.stats, trainer.opt_states)
    fn = trainer.iteration

    def run(state, i):
        return fn(*state, batch, jax.random.fold_in(jax.random.key(0), i))[:3]
    return run, state, batch, trainer


def handwritten_step(name: str, trainer, batch):
    spec = HANDWRITTEN[name]
    # the same initial values, by name, in buffers of their own (graphdl's step donates its)
    params = {k: jnp.copy(v) for k, v in trainer.params.items()}
    if "params" in spec:  # laid out as the hand-written model keeps them
        params = spec["params"](params)
    stats = {k: jnp.copy(v) for k, v in trainer.stats.items()}
    tx = optax.adam(spec.get("lr", 1e-3))
    opt_state = tx.init(params)
    loss_fn = spec["loss"]

    # donated like graphdl's step (lower/compile.py): both update their state in place
    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, stats, opt_state, batch, key):
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), {**stats, **new_stats}, opt_state, loss

    def run(state, i):
        return step(*state, batch, jax.random.fold_in(jax.random.key(0), i))[:3]
    return run, (params, stats, opt_state)


def time_steps(run, state, steps: int):
    state = run(state, 0)  # (the state passed in is donated)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(steps):
        state = run(state, i)
    jax.block_until_ready(state)
    return (time.perf_counter() - t0) / steps, state


def compare(name: str, rounds: int, steps: int) -> dict:
    spec = HANDWRITTEN[name]
    path = ROOT / spec["file"] if "/" in spec["file"] else ROOT / "models" / spec["file"]
    g_run, g_state, batch, trainer = graphdl_step(path, spec.get("train"))
    h_run, h_state = handwritten_step(name, trainer, batch)
    ratios, g_times, h_times = [], [], []
    for _ in range(rounds):
        tg, g_state = time_steps(g_run, g_state, steps)
        th, h_state = time_steps(h_run, h_state, steps)
        ratios.append(tg / th)
        g_times.append(tg)
        h_times.append(th)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
    return {"model": name, "graphdl_ms": statistics.median(g_times) * 1e3,
            "jax_ms": statistics.median(h_times) * 1e3, "ratio": statistics.median(ratios),
            "q1": q[0], "q3": q[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(HANDWRITTEN))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"{'model':<12} {'graphdl ms':>11} {'jax ms':>9} {'ratio':>7}  {'IQR':>13}")
    for name in args.models:
        r = compare(name, args.rounds, args.steps)
        print(f"{r['model']:<12} {r['graphdl_ms']:>11.3f} {r['jax_ms']:>9.3f} {r['ratio']:>7.3f}  "
              f"[{r['q1']:.3f}, {r['q3']:.3f}]", flush=True)


if __name__ == "__main__":
    main()
