"""What a training run shows and writes: progress bar, metrics.jsonl, plot, summary table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from graphdl.runtime.writing import OutputError, atomic_write, open_append, write_figure

# the files of --out a run writes besides its checkpoint (a new run refuses to replace them)
OUT_FILES = ("metrics.jsonl", "loss.png")
SMOOTHING = 0.9  # the EMA weight of the plotted train-loss curve (TensorBoard's default 0.6 is
# too little for single batches of a small model)


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
                 resume_step: int | None = None, header: dict | None = None,
                 tensorboard: bool = False):
        """`resume_step`: continuing a run from that step's checkpoint; its records up
        to that step are kept (and plotted), later ones (written after the checkpoint
        by a run that was then killed) are dropped, so no step is logged twice.

        metrics.jsonl is never rewritten in place: the kept records (or the `header` of a
        fresh run) go to a new file renamed over it, then records are appended."""
        self.out, self.total, self.plan = out, total, plan
        self.history: list[dict] = []
        self.console = Console(stderr=True)
        self.quiet = quiet
        self.metrics_file = None
        self.tb = None
        if out is not None:
            path = out / "metrics.jsonl"
            if resume_step is not None and path.exists():
                self.history = [r for r in _read_records(path) if r.get("step", 0) <= resume_step]
            if header is not None:
                self.history.append(header)
            lines = b"".join(json.dumps(r).encode() + b"\n" for r in self.history)
            atomic_write(path, lambda f: f.write(lines))
            self.metrics_file = open_append(path)
            if tensorboard:
                self.tb = self._tensorboard(out / "tensorboard")
        self.progress = None
        if progress and not quiet:
            # imported here: a --quiet run (scripts, benchmarks) starts without them
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                     TimeElapsedColumn(), console=self.console,
                                     disable=not sys.stderr.isatty() and False)
            self.progress.start()
            self.task = self.progress.add_task("train" if plan.name == "train" else f"train {plan.name}", total=total, info="")

    @staticmethod
    def check_tensorboard() -> None:
        """--tensorboard needs tensorboardX (optional extra `graphdl[tensorboard]`)."""
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise OutputError("--tensorboard needs the tensorboardX package: "
                              "pip install tensorboardX (or graphdl[tensorboard])") from None

    @staticmethod
    def _tensorboard(folder: Path):
        from tensorboardX import SummaryWriter
        return SummaryWriter(str(folder))

    def _write(self, record: dict) -> None:
        self.history.append(record)
        if self.metrics_file is not None:
            try:
                self.metrics_file.write(json.dumps(record).encode() + b"\n")
                self.metrics_file.flush()
            except OSError as err:
                raise OutputError(f"cannot write {self.out / 'metrics.jsonl'}: "
                                  f"{err.strerror or err}") from None
        if self.tb is not None:
            for key, value in record.items():
                if key not in ("step", "epoch", "split", "eval") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def train(self, step: int, epoch: int, losses: dict, rate: float | None) -> None:
        """`rate`: examples per second since the first (compiling) step; None at that step."""
        record = {"step": step, "epoch": epoch, "split": "train",
                  **({"loss": next(iter(losses.values()))} if len(losses) == 1 else {f"{k}.loss": v for k, v in losses.items()})}
        if rate is not None:
            record["examples_per_s"] = round(rate, 1)
        self._write(record)
        if self.progress is not None:
            info = "  ".join(f"{k} {v:.4f}" for k, v in record.items()
                             if k.endswith("loss")) + (f"  {rate:,.0f} ex/s" if rate else "")
            self.progress.update(self.task, completed=step, info=info)

    def evaluation(self, step: int, epoch: int, split: str, values: dict) -> None:
        # `eval` tells an evaluation of the split named `train` from the training records
        self._write({"step": step, "epoch": epoch, "split": split, "eval": True, **values})
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
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.metrics_file is not None:
            self.metrics_file.close()
            self.metrics_file = None
            self.plot()

    def plot(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        train = [r for r in self.history if r.get("split") == "train" and not r.get("eval")]
        evals = [r for r in self.history if r.get("eval")]
        if not train:
            return
        fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(10 if evals else 5, 3.5), squeeze=False)
        ax = axes[0][0]
        for key in [k for k in train[0] if k.endswith("loss")]:
            steps, values = [r["step"] for r in train], [r[key] for r in train]
            # single batches are noisy: the raw values faint, their EMA as the curve
            line, = ax.plot(steps, values, alpha=0.25)
            ax.plot(steps, ema(values, SMOOTHING), color=line.get_color(),
                    label=f"{key} (EMA {SMOOTHING})")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.legend()
        if evals:
            ax = axes[0][1]
            for split in sorted({r["split"] for r in evals}):
                rows = [r for r in evals if r["split"] == split]
                # several evaluate blocks may share a split, each with its own metrics
                keys = dict.fromkeys(k for r in rows for k in r
                                     if k not in ("step", "epoch", "split", "eval"))
                for key in keys:
                    have = [r for r in rows if key in r]
                    ax.plot([r["step"] for r in have], [r[key] for r in have], marker="o",
                            label=f"{split} {key}")
            ax.set_xlabel("step")
            ax.legend()
        fig.tight_layout()
        write_figure(fig, self.out / "loss.png")

    def summary(self, metrics: dict) -> None:
        if self.quiet or not metrics:
            return
        from rich.table import Table  # at the end of a run, not at its start

        table = Table(title=f"{self.plan.name}: final evaluation")
        table.add_column("split")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for split, values in metrics.items():
            for name, value in values.items():
                table.add_row(split, name, f"{value:.4f}")
        Console().print(table)


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, bias-corrected so the curve starts at the first value."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i))
    return out
