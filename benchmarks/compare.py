"""Train-step time of each model: compiled by graphdl, by graphdl with its rewrite passes
off, hand-written in JAX, and in PyTorch.

The four run in this process on the same batch, from the same initial parameters, with
Adam at the same learning rate; their steps are timed in interleaved rounds (so machine
noise hits all alike; the order rotates from round to round) and the median ratios of
graphdl to each other are printed with their interquartile ranges, then the conv
lowerings the autotuner picked on this machine.
PyTorch (`pip install -e ".[bench]"`) is optional: without it, or with --no-torch, its
columns are "-".

    python benchmarks/compare.py [--rounds 15] [--steps 20] [--no-torch]
                                 [--torch-threads N] [MODEL ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
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
from graphdl.passes import autotune  # noqa: E402
from graphdl.runtime.optim import schedule  # noqa: E402
from graphdl.runtime.train import Trainer  # noqa: E402


def model_path(name: str) -> Path:
    file = HANDWRITTEN[name]["file"]
    return ROOT / file if "/" in file else ROOT / "models" / file


def make_trainer(path: Path, train: str | None = None, rewrites: bool = True) -> Trainer:
    model = graphdl.load(path, rewrites=rewrites)
    return Trainer(model.plan(train), model.sources)


def graphdl_step(trainer: Trainer):
    _, batch = next(trainer.batch_stream(0))
    state = (trainer.params, trainer.stats, trainer.opt_states)
    fn = trainer.iteration

    def run(state, i):
        return fn(*state, batch, jax.random.fold_in(jax.random.key(0), i))[:3]
    return run, state, batch


def initial_lr(trainer: Trainer) -> float:
    """The learning rate of the first step (a schedule's value at step 0)."""
    step = trainer.plan.steps[0]
    sched = step.schedule if step.schedule is not None else trainer.plan.schedule
    lr = schedule(sched, dict(step.optimizer.kwargs)["lr"], trainer.total_steps)
    return float(lr(0)) if callable(lr) else float(lr)


def handwritten_step(name: str, trainer, batch):
    spec = HANDWRITTEN[name]
    # the same initial values, by name, in buffers of their own (graphdl's step donates its)
    params = {k: jnp.copy(v) for k, v in trainer.params.items()}
    if "params" in spec:  # laid out as the hand-written model keeps them
        params = spec["params"](params)
    stats = {k: jnp.copy(v) for k, v in trainer.stats.items()}
    tx = optax.adam(spec.get("lr", initial_lr(trainer)))
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


def torch_step(name: str, trainer: Trainer, batch, threads: int | None = None):
    """PyTorch's step on the same batch, from the same initial values, on `threads`
    threads (default: as many as XLA uses)."""
    from torch_models import TorchStep  # imports torch

    step = TorchStep(name, trainer.params, trainer.stats, batch, initial_lr(trainer), threads)
    return lambda state, i: step()  # its state lives in the module and the optimizer


def time_steps(run, state, steps: int):
    """Seconds per step after one untimed step; waits for the results (jax dispatches
    asynchronously; PyTorch on a CPU returns when the step is done)."""
    state = run(state, 0)  # (the state passed in is donated)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(steps):
        state = run(state, i)
    jax.block_until_ready(state)
    return (time.perf_counter() - t0) / steps, state


#: how long PyTorch's idle OpenMP threads may spin-wait after its step (libgomp's default
#: spin count is some 300k iterations, ~0.1-0.3 s): the next side is timed after it
TORCH_SPIN_S = 0.3


def _spread(ratios: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
    return statistics.median(ratios), q[0], q[-1]


def compare(name: str, rounds: int, steps: int, with_torch: bool = True,
            torch_threads: int | None = None) -> dict:
    trainer = make_trainer(model_path(name), HANDWRITTEN[name].get("train"))
    # the same file with every rewrite pass skipped: the same seed, so the same start
    plain = make_trainer(model_path(name), HANDWRITTEN[name].get("train"), rewrites=False)
    g_run, g_state, batch = graphdl_step(trainer)
    o_run, o_state, _ = graphdl_step(plain)
    h_run, h_state = handwritten_step(name, trainer, batch)
    sides = {"graphdl": [g_run, g_state], "off": [o_run, o_state], "jax": [h_run, h_state]}
    if with_torch:  # before graphdl's first step: that donates trainer.params
        sides["torch"] = [torch_step(name, trainer, batch, torch_threads), None]
    times: dict[str, list[float]] = {side: [] for side in sides}
    names = list(sides)
    order = random.Random(0)
    for _ in range(rounds):
        # a new order each round: whatever one side leaves behind (PyTorch's OpenMP
        # threads spinning after its step, a cold cache) falls on each side alike. A
        # rotation would not do: it keeps the cycle, so one side (graphdl) always ran
        # right after PyTorch, which cost the millisecond steps 5-15%
        for side in order.sample(names, len(names)):
            run, state = sides[side]
            t, sides[side][1] = time_steps(run, state, steps)
            times[side].append(t)
            if side == "torch":  # its OpenMP threads spin a while after a step: let them stop
                time.sleep(TORCH_SPIN_S)
    out = {"model": name, **{f"{side}_ms": statistics.median(t) * 1e3 for side, t in times.items()}}
    for side in names[1:]:
        out[side] = _spread([g / o for g, o in zip(times["graphdl"], times[side])])
    return out


def _cell(value, fmt: str, width: int) -> str:
    return f"{'-' if value is None else format(value, fmt):>{width}}"


def _ratio(r) -> str:
    if r is None:
        return f"{'-':>7} {'':<16}"
    return f"{r[0]:>7.3f} {f'[{r[1]:.3f}, {r[2]:.3f}]':<16}"


def picks() -> list[str]:
    """The conv lowerings the autotuner kept on this machine (its cache file)."""
    out = []
    for k, entry in autotune.read_all().items():
        key = json.loads(k)
        grad = entry.get("grad") or {}
        times = ", ".join(f"{n} {ms:.1f} ms" + (f" (gradients {grad[n]:.1f})" if n in grad else "")
                          for n, ms in sorted(entry["ms"].items()))
        out.append(f"{key['op']} {key['sizes']} -> {entry['pick']} ({times})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(HANDWRITTEN))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true", help="time graphdl and JAX only")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch's intra-op threads (default: the cores XLA uses). On a "
                             "machine loaded by other jobs, OpenMP's barriers make several "
                             "threads far slower than one")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in HANDWRITTEN]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; the models are {', '.join(HANDWRITTEN)}")
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print('note: PyTorch is not installed, its columns are "-" '
                  '(pip install -e ".[bench]" installs it)')
            with_torch = False
    print(f"{'model':<10} {'graphdl ms':>10} {'off ms':>9} {'jax ms':>9} {'torch ms':>9} "
          f"{'/off':>7} {'IQR':<16} {'/jax':>7} {'IQR':<16} {'/torch':>7} {'IQR':<16}")
    for name in args.models:
        r = compare(name, args.rounds, args.steps, with_torch, args.torch_threads)
        print(f"{r['model']:<10} {r['graphdl_ms']:>10.3f} {r['off_ms']:>9.3f} {r['jax_ms']:>9.3f} "
              f"{_cell(r.get('torch_ms'), '.3f', 9)} {_ratio(r['off'])} {_ratio(r['jax'])} "
              f"{_ratio(r.get('torch'))}", flush=True)
    for line in picks():
        print("autotune:", line)


if __name__ == "__main__":
    main()
