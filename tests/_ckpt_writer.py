"""Helper for test_checkpoint's kill test: save large checkpoints forever.

Usage: python tests/_ckpt_writer.py DIR FIRST_STEP [MEGABYTES]

Every checkpoint is internally consistent: each param, stat and optimizer leaf
is filled with the step number, and step == epoch == meta["marker"].  The test
SIGKILLs this process at arbitrary moments and checks that what it can load is
always one whole checkpoint.  It prints READY once set up, then "BEGIN <step>"
before and "DONE <step>" after each save, so the test can aim its kills.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# Run as a script, sys.path[0] is tests/; the package lives one level up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphdl.runtime.checkpoint import save_checkpoint  # noqa: E402

N_PARAMS = 8
SOURCE = "graph main(x: f32[B, 4]) { return x }\n"


def make_arrays(megabytes: int) -> tuple[dict, dict, dict]:
    per_param = megabytes * 2**20 // (4 * N_PARAMS)
    params = {f"layer{i}.dense.w": np.zeros(per_param, np.float32) for i in range(N_PARAMS)}
    stats = {"bn.mean": np.zeros(16, np.float32)}
    opt_state = {
        "count": np.zeros((), np.int32),
        "mu": {"layer0.dense.w": np.zeros(16, np.float32)},
    }
    return params, stats, opt_state


def fill(tree: dict, value: int) -> None:
    for leaf in tree.values():
        if isinstance(leaf, dict):
            fill(leaf, value)
        else:
            leaf.fill(value)  # in place: no allocation between BEGIN and the save


def main() -> None:
    directory, step = Path(sys.argv[1]), int(sys.argv[2])
    megabytes = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    params, stats, opt_state = make_arrays(megabytes)
    # One throwaway save elsewhere pays for the lazy jax import before READY.
    save_checkpoint(
        directory.parent / "warmup",
        params={},
        stats={},
        opt_state={"c": np.zeros(())},
        step=0,
        epoch=0,
        source="",
    )
    print("READY", flush=True)
    while True:
        for tree in (params, stats, opt_state):
            fill(tree, step)
        print(f"BEGIN {step}", flush=True)
        save_checkpoint(
            directory,
            params=params,
            stats=stats,
            opt_state=opt_state,
            step=step,
            epoch=step,
            source=SOURCE,
            meta={"marker": str(step)},
        )
        print(f"DONE {step}", flush=True)
        step += 1


if __name__ == "__main__":
    main()
