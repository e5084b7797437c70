"""The train-block vocabulary: settings, optimizers and schedules, one table each.

The front end reads these tables to check a train block (which names are settings, what
an optimizer's keywords are); the runtime reads them to build optax transformations;
docs/gen_ops.py prints them. Optax itself is named by string here, so that checking a
file (`graphdl check`) never imports optax or JAX.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSetting:
    """One name a train block may assign.

    kind: "int" (a constant integer from `minimum` to `maximum`, None: no bound), "float" (a constant number),
    "choice" (a constant string, one of `choices`),
    "optimizer", "schedule" (a call like adam(...) / cosine(...)), "loss" (a scalar
    tensor), "data" (a split's batch), "early_stop" (the early_stop(...) statement) or
    "mesh" (a record of mesh axis sizes, `{data = 2, model = 2}`).
    overridable: `--set K=V` and `Model.train(K=V)` may replace it.
    in_step: a `step` block may give it for itself; the others belong to the whole block.
    """

    name: str
    kind: str
    overridable: bool = False
    in_step: bool = False
    minimum: int = 0
    maximum: int | None = None
    choices: tuple[str, ...] = ()


# The compute precisions a train block may ask for (passes/precision.py applies them):
# f32 throughout, or bf16 compute with f32 master weights, optimizer state and reductions.
PRECISIONS = ("f32", "bf16")
DEFAULT_PRECISION = "f32"
# asked for but refused, with why (a did-you-mean would point f16 at f32 or bf16)
REFUSED_PRECISIONS = {
    "f16": "f16 needs loss scaling (its exponent range is too small for small gradients), "
           "which graphdl does not do; bf16 has f32's range and needs none",
    "f64": "train runs compute in f32 at most (parameters and optimizer state are f32)",
}

SEED_MAX = 2**32 - 1  # a seed is a 32-bit unsigned integer (JAX keys take no more than 63 bits)


def int_range_problem(name: str, value: object, minimum: int, maximum: int | None) -> str | None:
    """What is wrong with `value` as the integer setting `name`, or None (the one place
    an integer setting's range is checked)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum \
            and (maximum is None or value <= maximum):
        return None
    if maximum is None:
        return f"`{name}` must be an integer >= {minimum}"
    return f"`{name}` must be an integer from {minimum} to {maximum}"


# in the order error messages list them ("the settings are epochs, steps, ...")
TRAIN_SETTINGS: dict[str, TrainSetting] = {s.name: s for s in (
    TrainSetting("epochs", "int", overridable=True, minimum=1),
    TrainSetting("steps", "int", overridable=True, minimum=1),
    TrainSetting("seed", "int", overridable=True, minimum=0, maximum=SEED_MAX),
    TrainSetting("precision", "choice", overridable=True, choices=PRECISIONS),
    TrainSetting("clip_grad_norm", "float", overridable=True, in_step=True),
    TrainSetting("weight_decay", "float", overridable=True, in_step=True),
    TrainSetting("schedule", "schedule", in_step=True),
    TrainSetting("optimizer", "optimizer", in_step=True),
    TrainSetting("loss", "loss", in_step=True),
    TrainSetting("early_stop", "early_stop"),
    TrainSetting("data", "data", in_step=True),  # read once per block; a step may rebind it
    TrainSetting("mesh", "mesh"),  # {data = 2, model = 2}: the devices, by mesh axis
)}

# the axes of a device mesh: a train block's `mesh = {data = 2, model = 2}` and a
# parameter's `shard [_, model]` name them (the runtime builds the mesh)
MESH_AXES = ("data", "model")

OVERRIDABLE_SETTINGS: tuple[str, ...] = tuple(n for n, s in TRAIN_SETTINGS.items() if s.overridable)
# constants a step may give for itself (its optimizer and loss are read on their own)
STEP_SETTINGS: tuple[str, ...] = tuple(n for n, s in TRAIN_SETTINGS.items()
                                       if s.in_step and s.kind in ("float", "schedule"))


@dataclass(frozen=True)
class Optimizer:
    """`signature`: the GDL keywords with their defaults (the front end fills every one
    in). `optax`: the optax constructor; it takes the keywords under the same names,
    except `lr`, which is its `learning_rate`."""

    signature: str
    optax: str


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer("lr = 0.01", "sgd"),
    "momentum": Optimizer("lr = 0.01, momentum = 0.9, nesterov = false", "sgd"),
    "adam": Optimizer("lr = 0.001, b1 = 0.9, b2 = 0.999, eps = 1e-8", "adam"),
    "adamw": Optimizer("lr = 0.001, b1 = 0.9, b2 = 0.999, eps = 1e-8, weight_decay = 0.0001",
                       "adamw"),
    "rmsprop": Optimizer("lr = 0.001, decay = 0.9, eps = 1e-8", "rmsprop"),
}
DEFAULT_OPTIMIZER = "adam"  # a train block with no `optimizer`: adam with its defaults


@dataclass(frozen=True)
class Schedule:
    """`optax`: the schedule constructor, None for a constant rate (the rate itself, so an
    optimizer state has no schedule counter). `args`: optax keyword -> the GDL keyword
    that gives it, or a number. `steps = None` in GDL is the run's length in steps, and
    the decay is never shorter than the warmup."""

    signature: str
    optax: str | None
    args: tuple[tuple[str, str | float], ...] = ()


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule("lr", None, (("value", "lr"),)),
    "cosine": Schedule("lr, steps = None, alpha = 0.0", "cosine_decay_schedule",
                       (("init_value", "lr"), ("decay_steps", "steps"), ("alpha", "alpha"))),
    "warmup": Schedule("lr, warmup_steps, steps = None", "warmup_cosine_decay_schedule",
                       (("init_value", 0.0), ("peak_value", "lr"),
                        ("warmup_steps", "warmup_steps"), ("decay_steps", "steps"))),
    "exponential": Schedule("lr, rate, every", "exponential_decay",
                            (("init_value", "lr"), ("transition_steps", "every"),
                             ("decay_rate", "rate"))),
}
