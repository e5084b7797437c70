"""What a training run shows and writes: progress bar, metrics.jsonl, plot, summary table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def _read_records(path: Path) -> list[dict]:
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class Reporter:
    def __init__(self, out: Path | None, total: int, plan, progress: bool = True, quiet: bool = False,
                 resume_step: int | None = None):
        """`resume_step`: continuing a run from that step's checkpoint; its records up
        to that step are kept (and plotted), later ones (written after the checkpoint
        by a run that was then killed) are dropped, so no step is logged twice."""
        self.out, self.total, self.plan = out, total, plan
        self.history: list[dict] = []
        self.console = Console(stderr=True)
        self.quiet = quiet
        self.metrics_file = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            path = out / "metrics.jsonl"
            if resume_step is not None and path.exists():
                self.history = [r for r in _read_records(path) if r.get("step", 0) <= resume_step]
            self.metrics_file = path.open("w")
            for record in self.history:
                self.metrics_file.write(json.dumps(record) + "\n")
        self.progress = None
        if progress and not quiet:
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                     TimeElapsedColumn(), console=self.console,
                                     disable=not sys.stderr.isatty() and False)
            self.progress.start()
            self.task = self.progress.add_task("train" if plan.name == "train" else f"train {plan.name}", total=total, info="")

    def _write(self, record: dict) -> None:
        self.history.append(record)
        if self.metrics_file is not None:
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()

    def train(self, step: int, epoch: int, losses: dict, rate: float) -> None:
        record = {"step": step, "epoch": epoch, "split": "train",
                  **({"loss": next(iter(losses.values()))} if len(losses) == 1 else {f"{k}.loss": v for k, v in losses.items()}),
                  "examples_per_s": round(rate, 1)}
        self._write(record)
        if self.progress is not None:
            info = "  ".join(f"{k} {v:.4f}" for k, v in record.items()
                             if k.endswith("loss")) + f"  {rate:,.0f} ex/s"
            self.progress.update(self.task, completed=step, info=info)

    def evaluation(self, step: int, epoch: int, split: str, values: dict) -> None:
        self._write({"step": step, "epoch": epoch, "split": split, **values})
        if self.progress is not None:
            text = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
            self.progress.console.print(f"epoch {epoch} step {step} {split}: {text}")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.metrics_file is not None:
            self.metrics_file.close()
            self.metrics_file = None
            self.plot()

    def plot(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        train = [r for r in self.history if r["split"] == "train"]
        evals = [r for r in self.history if r["split"] != "train"]
        if not train:
            return
        fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(10 if evals else 5, 3.5), squeeze=False)
        ax = axes[0][0]
        for key in [k for k in train[0] if k.endswith("loss")]:
            ax.plot([r["step"] for r in train], [r[key] for r in train], label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        if evals:
            ax = axes[0][1]
            for split in sorted({r["split"] for r in evals}):
                rows = [r for r in evals if r["split"] == split]
                # several evaluate blocks may share a split, each with its own metrics
                keys = dict.fromkeys(k for r in rows for k in r if k not in ("step", "epoch", "split"))
                for key in keys:
                    have = [r for r in rows if key in r]
                    ax.plot([r["step"] for r in have], [r[key] for r in have], marker="o",
                            label=f"{split} {key}")
            ax.set_xlabel("step")
            ax.legend()
        fig.tight_layout()
        fig.savefig(self.out / "loss.png", dpi=100)
        plt.close(fig)

    def summary(self, metrics: dict) -> None:
        if self.quiet or not metrics:
            return
        table = Table(title=f"{self.plan.name}: final evaluation")
        table.add_column("split")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for split, values in metrics.items():
            for name, value in values.items():
                table.add_row(split, name, f"{value:.4f}")
        Console().print(table)
