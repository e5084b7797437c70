"""A child process for tests/test_sharded_checkpoint.py: saves or restores a small train
state with graphdl.runtime.sharded_checkpoint on simulated CPU devices, possibly as one
of several processes (jax.distributed on the loopback address, gloo collectives).

    python _sharded_worker.py save FOLDER DEVICES [PORT NUM_PROCESSES PROCESS_ID] [--portable]
    python _sharded_worker.py restore FOLDER DEVICES [...] [--onto K,L]  (K of the devices, then L)
    python _sharded_worker.py loop FOLDER DEVICES  (saves steps 1, 2, ... until killed)

The device count must be set before jax starts, so it is read here from argv and put
into XLA_FLAGS. `restore` checks the values it reads against the ones `save` wrote (both
are made from np.arange) and prints one JSON line with what it found.
"""

from __future__ import annotations

import json
import os
import sys

mode, folder, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
onto = [int(n) for n in sys.argv[sys.argv.index("--onto") + 1].split(",")] \
    if "--onto" in sys.argv else [devices]
portable = "--portable" in sys.argv  # save the safetensors file alone
argv = [a for a in sys.argv if a != "--portable"]
argv = argv[: argv.index("--onto")] if "--onto" in argv else argv
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"

import jax  # noqa: E402

if len(argv) > 4:
    port, processes, index = argv[4:7]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=int(processes), process_id=int(index))

import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from graphdl.runtime.sharded_checkpoint import (  # noqa: E402
    host_values,
    load_folder,
    save_folder,
)

SOURCE = "graph g(x: f32[B, 4]) { return dense(x, 8) }\n"


def values() -> dict[str, np.ndarray]:
    """The saved values: distinct numbers everywhere, so a shard in the wrong place shows."""
    return {"g.dense.w": np.arange(32, dtype=np.float32).reshape(8, 4) / 7,
            "g.dense.b": np.arange(8, dtype=np.float32) - 3.5}


def state(shard_over_all: bool, count: int | None = None):
    """Params sharded over the run's first `count` devices (all: rows over a `data` axis),
    or replicated."""
    mesh = Mesh(np.array(jax.devices()[:count]), ("data",))
    put = {}
    for name, value in values().items():
        sharding = NamedSharding(mesh, P("data") if shard_over_all else P())
        put[name] = jax.make_array_from_callback(value.shape, sharding,
                                                 lambda i, v=value: v[i])
    return put


def optimizer():
    return optax.adam(1e-2)


def train_a_step(params):
    """One Adam step, so the optimizer state is not all zeros."""
    opt = optimizer()
    state_ = opt.init(params)
    grads = jax.tree_util.tree_map(lambda p: p * 0 + 1.0, params)
    updates, state_ = jax.jit(opt.update)(grads, state_, params)
    return state_


if mode == "save":
    params = state(shard_over_all=True)
    opt_state = train_a_step(params)
    save_folder(folder, params=params, stats={}, opt_state=opt_state, step=7, epoch=2,
                source=SOURCE, meta={"train": "t"}, sharded=not portable)
    print(json.dumps({"process": jax.process_index(), "saved": True}))
elif mode == "restore":
    for count in onto:
        # this process's devices first: `count` < all devices is for one process only
        template = state(shard_over_all=True, count=count if count < devices else None)
        opt_template = optimizer().init(template)
        ckpt = load_folder(folder, params=template, stats={}, opt_state=opt_template)
        # whole values: the rows of the other processes are gathered
        got, mu = host_values((ckpt.params, ckpt.opt_state[0].mu["g.dense.w"]))
        want = values()
        print(json.dumps({
            "step": ckpt.step, "epoch": ckpt.epoch, "sharded": ckpt.meta.get("sharded"),
            "equal": all(np.array_equal(got[k], want[k]) for k in want),
            "mu_equal": bool(np.allclose(mu, 0.1 * np.ones((8, 4)))),
            "count": int(ckpt.opt_state[0].count),
            "shardings": sorted({str(v.sharding.num_devices) for v in ckpt.params.values()}),
        }))
elif mode == "loop":
    # the values of test_sharded_checkpoint.state(step), sharded over the devices
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = NamedSharding(mesh, P("data"))
    for step in range(1, 10_000):
        params = {"g.dense.w": np.arange(32, dtype=np.float32).reshape(8, 4) * step,
                  "g.dense.b": np.arange(8, dtype=np.float32) * step}
        params = {k: jax.device_put(v, rows) for k, v in params.items()}
        stats = {"g.bn.mean": jax.device_put(np.full((8,), float(step), np.float32), rows)}
        save_folder(folder, params=params, stats=stats, opt_state=optimizer().init(params),
                    step=step, epoch=0, source=SOURCE, meta={"train": "t"}, sharded=True)
        print(f"saved {step}", flush=True)
