"""`graphdl run --input-grads FIELD[:AXIS]`: how much the loss feels each position of its input.

The deck's vanishing-gradient story as data: for one fixed training batch, the norm of
∂loss/∂FIELD[:, t] (over the batch and every other axis) for each position `t` along
`AXIS` (default 1, the time axis of `[B, T, ...]`), once with the parameters the run
starts from and once with those it ends with. A plain RNN's curve falls off with the
distance from where the loss reads the sequence (a product of many factors below 1); an
LSTM's cell path keeps it. Written to `OUT/input_grads.json` and `OUT/input_grads.png`.

The batch is the run's first training batch, so the two curves differ only by the
parameters; the key is fixed, so a graph with dropout gives the same numbers each time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from graphdl.errors import Span, user_error
from graphdl.lower import LowerCtx, run_ir
from graphdl.lower.compile import compile_fn
from graphdl.runtime.writing import atomic_write, write_figure

FILES = ("input_grads.json", "input_grads.png")


@dataclass(frozen=True)
class InputGrads:
    field: str  # a field of the train block's data, e.g. "x"
    axis: int = 1  # the axis whose positions are plotted


def parse_input_grads(text: str) -> InputGrads:
    """`x` or `x:2` (the command-line form); a malformed one is a ValueError with the reason."""
    name, _, axis = text.partition(":")
    if not name.isidentifier():
        raise ValueError(f"--input-grads {text!r}: expected FIELD or FIELD:AXIS, e.g. x or x:1")
    try:
        return InputGrads(name, int(axis) if axis else 1)
    except ValueError:
        raise ValueError(f"--input-grads {text!r}: the axis {axis!r} is not an integer") from None


def check_input_grads(spec: InputGrads, batch: dict[str, np.ndarray], span: Span | None) -> int:
    """The axis (made non-negative) after checking that `spec` names a float field of the
    training batch with that axis, and not its batch axis 0; else a user error at the
    train block."""
    fields = {k.removeprefix("data."): v for k, v in batch.items()}
    if not fields:
        raise user_error(f"--input-grads {spec.field}: this train block reads no data", span,
                     "the gradient is taken with respect to a field of the training batch")
    if spec.field not in fields:
        raise user_error(f"--input-grads {spec.field}: the training data has no field "
                     f"`{spec.field}`", span, f"its fields: {', '.join(sorted(fields))}")
    value = fields[spec.field]
    if not np.issubdtype(value.dtype, np.floating):
        raise user_error(f"--input-grads {spec.field}: the field is {value.dtype} (integers), and "
                     "the loss has no gradient with respect to integers", span,
                     "take it with respect to a float field (for token ids, the gradient "
                     "stops at the embedding)")
    rank = value.ndim
    axis = spec.axis + rank if spec.axis < 0 else spec.axis
    if not 1 <= axis < rank:
        raise user_error(f"--input-grads {spec.field}:{spec.axis}: the field has shape "
                     f"{list(value.shape)}, whose axes other than the batch axis 0 are "
                     f"1..{rank - 1}", span,
                     "name the axis whose positions to plot, e.g. 1 for the time of [B, T, D]")
    return axis


def input_grad_fn(ir, loss: int, field: str, axis: int):
    """A compiled `(params, stats, batch, key) -> norms[T]`: the norm of the gradient of
    node `loss` with respect to `data.FIELD`, over every axis but `axis`."""
    name = f"data.{field}"

    def norms(params, stats, batch, key):
        def loss_of(x):
            ctx = LowerCtx(params, stats, key, train=True)
            return run_ir(ir, ctx, {**batch, name: x})[loss]

        grad = jax.grad(loss_of)(batch[name]).astype(jnp.float32)
        others = tuple(i for i in range(grad.ndim) if i != axis)
        return jnp.sqrt(jnp.sum(jnp.square(grad), axis=others))

    return compile_fn(norms)


def write_input_grads(out: Path, spec: InputGrads, loss_name: str,
                      curves: dict[int, np.ndarray]) -> None:
    """OUT/input_grads.json (`{"field", "axis", "loss", "curves": {step: [norm per t]}}`)
    and OUT/input_grads.png (one line per step, log scale)."""
    record = {"field": spec.field, "axis": spec.axis, "loss": loss_name,
              "curves": {str(s): [float(v) for v in c] for s, c in curves.items()}}
    text = json.dumps(record, indent=1).encode()
    atomic_write(out / FILES[0], lambda f: f.write(text))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for step, curve in curves.items():
        # a zero norm (a position the loss never reads) has no place on a log scale
        ax.plot(np.arange(len(curve)), np.where(curve > 0, curve, np.nan),
                label=f"step {step}")
    ax.set_yscale("log")
    ax.set_xlabel(f"position t along axis {spec.axis} of data.{spec.field}")
    ax.set_ylabel(f"‖∂{loss_name}/∂{spec.field}_t‖")
    ax.legend()
    fig.tight_layout()
    write_figure(fig, out / FILES[1])
