"""Train plans: what a train block asks the runtime to do, as plain data.

The front end builds these from a train block; the runtime reads nothing else. Data is
named, not held: a plan says `digits.train`, and whoever runs it passes the opened
sources by name. The classes are frozen; their lists and dicts are the elaborator's own
and are not changed after a plan is made (`dataclasses.replace` makes a changed copy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphdl.errors import Span
from graphdl.ir.graph import IR


@dataclass(frozen=True)
class OptimizerSpec:
    """`adam(lr = 1e-3)`: a name of `graphdl.ops.training.OPTIMIZERS`, every keyword given."""

    name: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleSpec:
    """`cosine(lr = 1e-3)`: a name of `graphdl.ops.training.SCHEDULES`, every keyword given."""

    name: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BatchPlan:
    """The batches of one split: `digits.train(batch = 64, shuffle = true)`."""

    source: str  # the data source's name in the file
    split: str
    batch: int
    shuffle: bool
    inputs: dict[str, int]  # field -> input node id
    span: Span | None = None  # the `SRC.SPLIT(batch = N)` call (a batch that does not split)


@dataclass(frozen=True)
class StepPlan:
    """One `step` (or the whole block): a loss, its optimizer, the parameters it moves.

    The settings left None are the train block's."""

    name: str
    loss: int  # output node id in the train IR (-1 after an error)
    optimizer: OptimizerSpec
    over: list[str] | None = None  # graph names; None: every trainable parameter
    clip_grad_norm: float | None = None
    weight_decay: float | None = None
    schedule: ScheduleSpec | None = None


@dataclass(frozen=True)
class EvalPlan:
    """An `evaluate on SOURCE.SPLIT every N UNIT { metrics }` block."""

    source: str
    split: str
    every: int
    unit: str  # "epoch" or "step"
    ir: IR
    batch: BatchPlan | None
    metrics: dict[str, int]  # metric name -> output node id
    span: Span
    # metric name -> (num, den) node ids of a `ratio_of_sums` metric: the runtime sums
    # both over the split's batches and divides at the end, instead of averaging the metric
    ratios: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointPlan:
    every: int
    unit: str  # "epoch" or "step"


@dataclass(frozen=True)
class EarlyStopPlan:
    metric: str
    patience: int = 5
    mode: str = "max"  # "max" or "min"
    span: Span | None = None


@dataclass(frozen=True)
class TrainPlan:
    """A train block. `epochs`, `steps`, `seed`, ... are None where the file gives none."""

    name: str
    ir: IR
    batch: BatchPlan | None
    steps: list[StepPlan]
    span: Span
    epochs: int | None = None
    num_steps: int | None = None  # the `steps = N` setting (`steps` are the step blocks)
    seed: int | None = None
    clip_grad_norm: float | None = None
    weight_decay: float | None = None
    schedule: ScheduleSpec | None = None
    evaluations: list[EvalPlan] = field(default_factory=list)
    checkpoint: CheckpointPlan | None = None
    early_stop: EarlyStopPlan | None = None
    mesh: dict[str, int] | None = None  # `mesh = {data = 2, model = 2}`: devices per axis
    precision: str | None = None  # "bf16" or "f32"; None: f32 (passes/precision.py)

    def setting(self, name: str):
        """The value of a train setting by its GDL name (`steps` is `num_steps`)."""
        return self.num_steps if name == "steps" else getattr(self, name)
