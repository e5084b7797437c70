"""The 8-Gaussian ring criterion of a GAN's samples (issue 9): mode coverage and quality.

    graphdl sample models/gan.gdl --graph generator --n 2500 --seed 0
    python docs/ring_coverage.py runs/gan/samples_generator.npy

A sample is *near* mode k when it lies within 3 std of the mode's center (k modes on a
circle of `radius`, the first at angle 0, as `gaussian_ring` draws them). The criterion:
every mode holds at least 1% of the samples (all modes covered), and at least 90% of the
samples are near some mode (few samples between the modes). Exit status 0 when it holds.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def ring_coverage(points: np.ndarray, k: int = 8, radius: float = 2.0,
                  std: float = 0.02) -> dict:
    """`points` [N, 2] -> {"per_mode": fraction of the samples near each mode (k floats),
    "near": fraction near some mode, "covered": modes holding >= 1%, "passes": bool}."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    angle = 2 * np.pi * np.arange(k) / k
    centers = radius * np.stack([np.cos(angle), np.sin(angle)], -1)
    distance = np.linalg.norm(points[:, None, :] - centers[None], axis=-1)  # [N, k]
    near = distance < 3 * std  # modes 2 apart, 3 std = 0.06: a point is near one at most
    per_mode = near.mean(0)
    near_any = float(near.any(1).mean())
    covered = int((per_mode >= 0.01).sum())
    return {"per_mode": [round(float(p), 4) for p in per_mode], "near": round(near_any, 4),
            "covered": covered, "passes": covered == k and near_any >= 0.9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("samples", nargs="+", help=".npy files of [N, 2] samples")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--radius", type=float, default=2.0)
    parser.add_argument("--std", type=float, default=0.02)
    args = parser.parse_args()
    ok = True
    for path in args.samples:
        result = ring_coverage(np.load(path), args.k, args.radius, args.std)
        ok &= result["passes"]
        print(f"{path}: {result['covered']}/{args.k} modes covered, "
              f"{result['near']:.1%} near a mode, per mode {result['per_mode']} "
              f"-> {'pass' if result['passes'] else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
