"""Time from `graphdl run FILE` to its first finished training step, with an empty
compilation cache (cold) and with the cache the cold run left (warm), in fresh
processes, interleaved over rounds.

    python benchmarks/startup.py models/mlp.gdl models/cnn2d.gdl --rounds 5

Each round runs the file cold (a new, empty $GRAPHDL_CACHE/xla; the data sets and parser
tables stay cached, as on a user's machine after the first run ever), then warm (the
same folder again), then with `--no-compile-cache`. The child is `graphdl run FILE
--steps 1` with the reporter's per-step call patched to print the seconds since the
parent started it and exit at once, so evaluation, checkpoint and plot are not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import os, sys, time
from graphdl.runtime import reporting
def first_step(self, *args, **kwargs):
    print(f"FIRST_STEP {time.time() - float(os.environ['STARTUP_T0']):.3f}", flush=True)
    os._exit(0)
reporting.Reporter.train = first_step
from graphdl.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def first_step_seconds(file: str, cache: Path, out: Path, *flags: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRAPHDL_CACHE": str(cache),
           "STARTUP_T0": repr(time.time())}
    env.pop("GRAPHDL_COMPILE_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, *flags, "run", file, "--steps", "1",
                           "--out", str(out), "--overwrite", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("FIRST_STEP "):
            return float(line.split()[1])
    raise RuntimeError(f"{file}: no step ran\n{proc.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graphdl-startup-") as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "out"
        for file in args.files:  # the data sets and parser tables once, untimed
            first_step_seconds(file, cache, out)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for file in args.files:
                shutil.rmtree(cache / "xla", ignore_errors=True)
                for kind, flags in (("cold", ()), ("warm", ()), ("off", ("--no-compile-cache",))):
                    times.setdefault((file, kind), []).append(
                        first_step_seconds(file, cache, out, *flags))
    print(f"| file | cold cache s | warm cache s | --no-compile-cache s |  (median of {args.rounds})")
    print("|---|---|---|---|")
    for file in args.files:
        cells = [f"{statistics.median(times[(file, k)]):.2f}" for k in ("cold", "warm", "off")]
        print(f"| {file} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
