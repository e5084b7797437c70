"""Time from `graphdl run FILE` to its first finished training step, with an empty
compilation cache (cold) and with the cache the cold run left (warm), in fresh
processes, interleaved over rounds.

    python benchmarks/startup.py models/mlp.gdl models/cnn2d.gdl --rounds 5
    python benchmarks/startup.py models/mlp.gdl --baseline /tmp/graphdl-main   # before/after

Each round runs the file cold (a new, empty $GRAPHDL_CACHE/xla; the data sets and parser
tables stay cached, as on a user's machine after the first run ever), then warm (the
same folder again), then with `--no-compile-cache`. The child is `graphdl run FILE
--steps 1` with the reporter's per-step call patched to print the seconds since the
parent started it and exit at once, so evaluation, checkpoint and plot are not timed.
Python's bytecode of graphdl's modules is kept between runs (in the temporary folder,
as pip's install compiles it), also where PYTHONDONTWRITEBYTECODE is set.

`--baseline REPO` times another checkout's graphdl too (its own cache folder), in the
same rounds, and prints its rows and the warm ratio this/baseline.
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
KINDS = (("cold", ()), ("warm", ()), ("off", ("--no-compile-cache",)))

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


def first_step_seconds(repo: Path, file: str, cache: Path, out: Path, *flags: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(repo), "GRAPHDL_CACHE": str(cache),
           "PYTHONPYCACHEPREFIX": str(cache / "pycache"), "STARTUP_T0": repr(time.time())}
    env.pop("GRAPHDL_COMPILE_CACHE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # run in `repo`: `python -c` puts the working directory first on sys.path, so run
    # from another checkout, the child would import that one's graphdl
    proc = subprocess.run([sys.executable, "-c", CHILD, *flags, "run",
                           str(Path(file).resolve()), "--steps", "1", "--out", str(out),
                           "--overwrite", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=repo)
    for line in proc.stdout.splitlines():
        if line.startswith("FIRST_STEP "):
            return float(line.split()[1])
    raise RuntimeError(f"{file}: no step ran\n{proc.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="REPO", type=Path,
                        help="another checkout of graphdl to time in the same rounds")
    args = parser.parse_args()
    codes = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory(prefix="graphdl-startup-") as tmp:
        out = Path(tmp) / "out"
        caches = {code: Path(tmp) / f"cache-{code}" for code in codes}
        for code, repo in codes.items():  # data sets, parser tables and bytecode, untimed
            for file in args.files:
                first_step_seconds(repo, file, caches[code], out)
        times: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(args.rounds):
            for file in args.files:
                for code, repo in codes.items():
                    shutil.rmtree(caches[code] / "xla", ignore_errors=True)
                    for kind, flags in KINDS:
                        times.setdefault((file, code, kind), []).append(
                            first_step_seconds(repo, file, caches[code], out, *flags))
    median = {key: statistics.median(values) for key, values in times.items()}
    code_col = "| code " if args.baseline else ""
    print(f"| file {code_col}| cold cache s | warm cache s | --no-compile-cache s |  "
          f"(median of {args.rounds})")
    print("|---" * (4 + bool(args.baseline)) + "|")
    for file in args.files:
        for code in codes:
            cells = [f"{median[(file, code, kind)]:.2f}" for kind, _ in KINDS]
            label = f"| {code} " if args.baseline else ""
            print(f"| {file} {label}| {' | '.join(cells)} |")
    if args.baseline:
        for file in args.files:
            ratios = [a / b for a, b in zip(times[(file, "this", "warm")],
                                            times[(file, "baseline", "warm")])]
            print(f"{file}: warm this/baseline {statistics.median(ratios):.2f} "
                  f"(rounds {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
