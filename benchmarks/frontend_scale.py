"""`graphdl check` on generated graphs of N layers: the front end (parse, elaboration,
the verifier, the passes up to the surrogate) should take time linear in N.

    python benchmarks/frontend_scale.py 100 1000 10000 --rounds 3

Each graph chains N `relu(dense(h, 8))` statements. The table gives the median seconds
per check and the microseconds per layer; a linear front end keeps the last column flat.
"""

from __future__ import annotations

import argparse
import statistics
import time

from graphdl.elaborate.check import check_program
from graphdl.passes.pipeline import run_passes
from graphdl.runtime.data import SOURCES


def deep_source(layers: int) -> str:
    lines = ["graph deep(x: f32[B, 8]) -> f32[B, 8] {", "    h0 = x"]
    lines += [f"    h{i} = relu(dense(h{i - 1}, 8))" for i in range(1, layers + 1)]
    return "\n".join([*lines, f"    return h{layers}", "}", ""])


def check_seconds(text: str) -> float:
    start = time.perf_counter()
    checked = check_program("deep.gdl", text, sources=SOURCES)
    assert not checked.diagnostics, checked.diagnostics[:1]
    for ir in checked.irs.values():
        run_passes(ir, until="surrogate")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    check_seconds(deep_source(10))  # the parser tables and imports, untimed
    texts = {n: deep_source(n) for n in args.sizes}
    times: dict[int, list[float]] = {n: [] for n in args.sizes}
    for _ in range(args.rounds):  # interleaved, so machine noise hits every size alike
        for n in args.sizes:
            times[n].append(check_seconds(texts[n]))
    print("| layers | check s (median) | µs per layer |")
    print("|---|---|---|")
    for n in args.sizes:
        t = statistics.median(times[n])
        print(f"| {n} | {t:.3f} | {1e6 * t / n:.0f} |")


if __name__ == "__main__":
    main()
