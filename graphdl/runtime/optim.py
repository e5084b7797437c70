"""Optimizers and schedules of a train plan, all through optax.

What each name means (its keywords and its optax constructor) is the table in
graphdl/ops/training.py; this module only turns a plan's specs into optax objects.
"""

from __future__ import annotations

import optax

from graphdl.ir.plan import OptimizerSpec, ScheduleSpec
from graphdl.ops.training import OPTIMIZERS, SCHEDULES


def schedule(spec: ScheduleSpec | None, lr: float, total_steps: int):
    """The learning rate: `lr` without a schedule, else the schedule's (which has its own)."""
    if spec is None:
        return lr
    entry = SCHEDULES[spec.name]
    kw = spec.kwargs
    args = {}
    for name, given in entry.args:
        args[name] = kw[given] if isinstance(given, str) else given
    if "decay_steps" in args:  # `steps = None`: the whole run, never shorter than the warmup
        steps = args["decay_steps"] or total_steps
        args["decay_steps"] = max(steps, kw.get("warmup_steps", 0) + 1)
    if entry.optax is None:  # a constant rate is the number itself: no schedule state
        return args["value"]
    return getattr(optax, entry.optax)(**args)


def make_optimizer(opt: OptimizerSpec, sched: ScheduleSpec | None, total_steps: int,
                   clip: float | None = None, weight_decay: float | None = None):
    """The optax transformation of one step: clipping, weight decay, then the optimizer."""
    kw = dict(opt.kwargs)
    lr = schedule(sched, kw.pop("lr"), total_steps)
    tx = getattr(optax, OPTIMIZERS[opt.name].optax)(learning_rate=lr, **kw)
    parts = []
    if clip:
        parts.append(optax.clip_by_global_norm(clip))
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*parts, tx) if parts else tx
