"""Optimizers and schedules from train-block settings, all through optax."""

from __future__ import annotations

import optax

from graphdl.elaborate.values import Setting


def schedule(setting: Setting | None, lr: float, total_steps: int):
    if setting is None:
        return lr
    kw = setting.kwargs
    steps = kw.get("steps") or total_steps
    if setting.name == "constant":
        return kw["lr"]
    if setting.name == "cosine":
        return optax.cosine_decay_schedule(kw["lr"], max(1, steps), kw.get("alpha", 0.0))
    if setting.name == "warmup":
        return optax.warmup_cosine_decay_schedule(0.0, kw["lr"], kw["warmup_steps"], max(steps, kw["warmup_steps"] + 1))
    if setting.name == "exponential":
        return optax.exponential_decay(kw["lr"], kw["every"], kw["rate"])
    raise ValueError(setting.name)


def make_optimizer(opt: Setting | None, sched: Setting | None, total_steps: int,
                   clip: float | None = None, weight_decay: float | None = None):
    """optax transformation for an `optimizer = adam(lr = ...)` setting (default adam)."""
    name = opt.name if opt else "adam"
    kw = dict(opt.kwargs) if opt else {"lr": 1e-3}
    lr = schedule(sched, kw.pop("lr", 1e-3), total_steps)
    if name == "sgd":
        tx = optax.sgd(lr)
    elif name == "momentum":
        tx = optax.sgd(lr, momentum=kw.get("momentum", 0.9), nesterov=kw.get("nesterov", False))
    elif name == "adam":
        tx = optax.adam(lr, b1=kw.get("b1", 0.9), b2=kw.get("b2", 0.999), eps=kw.get("eps", 1e-8))
    elif name == "adamw":
        tx = optax.adamw(lr, b1=kw.get("b1", 0.9), b2=kw.get("b2", 0.999), eps=kw.get("eps", 1e-8),
                         weight_decay=kw.get("weight_decay", 1e-4))
    elif name == "rmsprop":
        tx = optax.rmsprop(lr, decay=kw.get("decay", 0.9), eps=kw.get("eps", 1e-8))
    else:
        raise ValueError(name)
    parts = []
    if clip:
        parts.append(optax.clip_by_global_norm(clip))
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*parts, tx) if parts else tx
