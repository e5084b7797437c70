"""Overlay the `input_grads.json` of several runs (`graphdl run ... --input-grads x`) in one plot.

    python docs/plot_input_grads.py runs/rnn runs/lstm --out docs/img/vanishing_gradient.png

Each run's curves (one per measured step) are drawn in that run's colour: dashed at the
first step, solid at the last; the legend names the run's folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders holding input_grads.json")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, run in enumerate(args.runs):
        record = json.loads((Path(run) / "input_grads.json").read_text())
        curves = record["curves"]
        for j, (step, curve) in enumerate(curves.items()):
            values = np.asarray(curve)
            ax.plot(np.where(values > 0, values, np.nan), color=f"C{i}",
                    linestyle="-" if j == len(curves) - 1 else "--",
                    label=f"{Path(run).name}, step {step}")
    ax.set_yscale("log")
    ax.set_xlabel(f"t (position along axis {record['axis']} of data.{record['field']})")
    ax.set_ylabel(f"‖∂loss/∂{record['field']}_t‖")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
