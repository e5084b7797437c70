"""PCA's test reconstruction error on the digits: the linear baseline of the autoencoders.

    python docs/pca_baseline.py             # Z = 2, 4, 8, 16
    python docs/pca_baseline.py --z 2 8

PCA with Z components is the best linear autoencoder with a Z-number code: fitted on the
train split (its mean and its top Z principal directions, by SVD), it encodes a test digit
as its Z coordinates along them and reconstructs it from those. The error is the mean
squared error per pixel on the [0, 1] scale, the `mse` that models/autoencoder.gdl and
models/conv_autoencoder.gdl report on digits.test. The split is the models' own:
`dataset("digits", split = [0.8, 0.2], seed = 0)`, read through the same data source.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def digits_splits(split=(0.8, 0.2), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train x [N, 64], test x [M, 64]) of `dataset("digits", split, seed)`, as the
    models read them."""
    from graphdl.runtime.data import open_source

    source = open_source("dataset", ["digits"], {"split": list(split), "seed": seed}, Path("."))
    return (np.asarray(source.arrays("train")["x"], np.float64),
            np.asarray(source.arrays("test")["x"], np.float64))


def pca_mse(train: np.ndarray, test: np.ndarray, z: int) -> float:
    """The per-pixel test MSE of PCA with `z` components fitted on `train`."""
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[:z]                               # [z, D], orthonormal rows
    codes = (test - mean) @ basis.T              # [M, z]
    rebuilt = codes @ basis + mean
    return float(np.mean((rebuilt - test) ** 2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--z", type=int, nargs="+", default=[2, 4, 8, 16],
                        help="code sizes (numbers of components)")
    args = parser.parse_args()
    train, test = digits_splits()
    print(f"digits: {len(train)} train / {len(test)} test; PCA fitted on train")
    print(f"mean predictor (Z = 0): test mse {pca_mse(train, test, 0):.5f}")
    for z in args.z:
        print(f"PCA Z = {z:2d}: test mse {pca_mse(train, test, z):.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
