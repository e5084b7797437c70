"""`graphdl bench`: front-end time, XLA compile time, steady-state step time, examples/s."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import jax

from graphdl.ir.plan import TrainPlan
from graphdl.runtime.data import Source
from graphdl.runtime.train import Trainer


def bench_plan(plan: TrainPlan, sources: Mapping[str, Source], front_end_s: float,
               steps: int = 50) -> dict:
    """Time `plan`'s iteration (overrides applied); `front_end_s`: how long checking the
    file took, which the caller measured (the runtime does not run the front end)."""
    front = front_end_s
    trainer = Trainer(plan, sources)
    stream = trainer.batch_stream(0)
    _, batch = next(stream)
    key = jax.random.key(0)
    args = (trainer.params, trainer.stats, trainer.opt_states, batch, key)
    t0 = time.perf_counter()
    compiled = trainer.iteration.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    state = args[:3]
    times = []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        out = compiled(*state, batch, jax.random.fold_in(key, i))
        jax.block_until_ready(out)
        if i >= 5:  # the first runs warm caches
            times.append(time.perf_counter() - t0)
        state = out[:3]
    step = statistics.median(times)
    batch_size = plan.batch.batch if plan.batch else 1
    report = {"front_end_s": front, "compile_s": compile_s, "step_ms": step * 1e3,
              "examples_per_s": batch_size / step}
    print(f"front end      {front * 1e3:8.1f} ms\n"
          f"XLA compile    {compile_s * 1e3:8.1f} ms\n"
          f"step (median)  {step * 1e3:8.3f} ms over {steps} steps\n"
          f"throughput     {batch_size / step:10,.0f} examples/s")
    return report
