"""`graphdl gradvar FILE`: how noisy each gradient estimator is, measured.

The deck says REINFORCE is unbiased with "high variance"; this puts a number on it. For
each stochastic node below a train block's loss and each estimator that applies to its
family (`reinforce` twice when the node declares a baseline: without it and with it), the
gradient of the loss's surrogate with respect to the parameters is taken on one fixed
batch (the block's first training batch) for N independent keys, vmapped in chunks, and
summarised as

    ‖ḡ‖                 the norm of the mean gradient over the keys
    variance            E‖g - ḡ‖²: the per-coordinate variances summed over every parameter
    snr                 ‖ḡ‖ / sqrt(variance): above 1, one key's gradient points the right way
    std err             sqrt(variance / N): how far ḡ itself is from the true mean gradient

Only the node under study changes estimator, on a copy of the train block's IR made
before the pass pipeline (the language gives a node the same type under every estimator
of its family, so the graph below it is unchanged); every other node keeps its own. The
keys are the same for every row (`fold_in(key(seed), i)`, so the first N of a larger run
are the same N), which makes the numbers reproducible and the rows comparable.

A `moving_average` baseline uses the value the checkpoint holds; without one (fresh
parameters, where the statistic is still 0 and the baseline would be no baseline at
all), the mean cost over the same keys, which is what the average converges to while
the parameters stand still. The variance counts the parameters the step trains that the
loss reaches other than through a tensor baseline: a value network's own regression
gradient is not the estimator's noise.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from graphdl.errors import Diagnostic, GdlError, user_error
from graphdl.ir.graph import IR, clone, node, order, remove_operand
from graphdl.ir.node import Node
from graphdl.ir.plan import TrainPlan
from graphdl.lower import LowerCtx, run_ir
from graphdl.lower.compile import compile_fn
from graphdl.ops.distributions import FAMILIES
from graphdl.ops.estimators import admitted
from graphdl.passes.pipeline import run_passes, surrogate_of
from graphdl.runtime.checkpoint import (
    CheckpointError,
    checkpoint_path,
    checkpoint_state,
    load_checkpoint,
    restore_into,
)
from graphdl.runtime.data import Source
from graphdl.runtime.train import Trainer
from graphdl.runtime.writing import OutputError, atomic_write

FILE = "gradvar.json"
DEFAULT_KEYS = 1000
MAX_KEYS = 1_000_000
# one chunk of keys holds chunk x (parameters) gradient entries at once; past this many
# entries the chunk shrinks (a model of 4M parameters takes one key at a time)
CHUNK_ENTRIES = 1 << 22
MAX_CHUNK = 64


@dataclass(frozen=True)
class Variant:
    """One estimator for one node: `reinforce` with its declared baseline or without."""

    estimator: str
    options: dict = field(default_factory=dict)  # gumbel_softmax's, when the file gives them
    baseline: str | None = None  # None, "moving_average(0.9)" or "tensor"
    declared: bool = False  # the file's own choice for the node

    @property
    def label(self) -> str:
        opts = ", ".join(f"{k} = {_gdl(v)}" for k, v in self.options.items())
        name = f"{self.estimator}({opts})" if opts else self.estimator
        if self.baseline == "tensor":
            return f"{name} + baseline tensor"
        return f"{name} + {self.baseline}" if self.baseline else name


@dataclass
class Row:
    """The numbers of one (step, node, estimator); `problem` says why there are none."""

    step: str
    node: str  # the node's name with the scope it was drawn in (`a`, `pick.b`)
    estimator: str  # Variant.label
    declared: bool
    keys: int
    mean_norm: float | None = None
    variance: float | None = None
    snr: float | None = None  # inf when the variance is 0
    stderr: float | None = None
    loss: float | None = None  # the loss averaged over the keys
    baseline_value: float | None = None  # a moving average's value as used
    baseline_from: str | None = None  # "checkpoint" or "mean cost"
    seconds: float = 0.0  # compile and run
    problem: str | None = None
    mean: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # per parameter
    variances: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def record(self) -> dict:
        out = {k: getattr(self, k) for k in ("step", "node", "estimator", "declared", "keys",
                                             "mean_norm", "variance", "snr", "stderr", "loss")}
        if out["snr"] is not None and math.isinf(out["snr"]):
            out["snr"] = None  # JSON has no infinity; a variance of 0 says it
        if self.baseline_value is not None:
            out["baseline_value"] = self.baseline_value
            out["baseline_from"] = self.baseline_from
        if self.problem:
            out["problem"] = self.problem
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclass
class GradVar:
    train: str
    keys: int
    seed: int
    examples: int  # in the batch
    parameters: str  # "checkpoint" or "initial"
    checkpoint: str | None  # the checkpoint folder looked in
    checkpoint_step: int | None = None
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    restored: set[str] = field(default_factory=set, repr=False)  # stats from the checkpoint

    def record(self) -> dict:
        return {"train": self.train, "keys": self.keys, "seed": self.seed,
                "examples": self.examples, "parameters": self.parameters,
                "checkpoint": self.checkpoint, "checkpoint_step": self.checkpoint_step,
                "notes": self.notes, "rows": [r.record() for r in self.rows]}


def _gdl(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def keys_problem(keys) -> str | None:
    """Why `keys` is not a number of keys to measure with, or None."""
    if isinstance(keys, bool) or not isinstance(keys, int):
        return f"--keys {keys!r}: a whole number of keys is needed"
    if not 2 <= keys <= MAX_KEYS:
        return f"--keys {keys}: needs at least 2 keys (a variance) and at most {MAX_KEYS:,}"
    return None


# -- the nodes and their estimators ----------------------------------------------------
def stochastic_nodes(ir: IR, loss: int) -> list[tuple[tuple[int, ...], Node]]:
    """The sample nodes the scalar node `loss` depends on, in execution order: a path of
    node ids (the scans leading into a cell's body, then the sample) and its record."""
    above = _ancestors(ir, loss)
    return [(path, n) for path, n in _samples(ir, ()) if path[0] in above]


def _ancestors(ir: IR, nid: int, through_baselines: bool = True) -> set[int]:
    """`nid` and what it reads, transitively (optionally not through a sample's baseline)."""
    seen, todo = {nid}, [nid]
    while todo:
        n = node(ir, todo.pop())
        for src, arg in n.operands():
            if src in seen or (not through_baselines and n.op == "sample" and arg == "baseline"):
                continue
            seen.add(src)
            todo.append(src)
    return seen


def _samples(ir: IR, prefix: tuple[int, ...]):
    for nid in order(ir):
        n = node(ir, nid)
        if n.op == "sample":
            yield (*prefix, nid), n
        elif n.op == "scan":  # a cell's samples: the path goes through the scan
            yield from _samples(n.attrs["body"], (*prefix, nid))


def node_name(n: Node) -> str:
    """`a` in a train block, `g.a` for one drawn in graph `g` (its statistic's prefix)."""
    return f"{n.scope}.{n.attrs['name']}" if n.scope else n.attrs["name"]


def variants(n: Node) -> list[Variant]:
    """Each estimator of the node's family, in the table's order; `reinforce` without a
    baseline and, when the node declares one, with it."""
    declared = n.attrs["estimator"]
    if "moving_average" in n.attrs:
        baseline = f"moving_average({n.attrs['moving_average']})"
    else:
        baseline = "tensor" if "baseline" in n.args else None
    out = []
    for name in admitted(FAMILIES[n.attrs["family"]]):
        options = dict(n.attrs.get("options", {})) if name == declared else {}
        if name == "reinforce":
            out.append(Variant(name, options, None, declared == name and baseline is None))
            if baseline:
                out.append(Variant(name, options, baseline, declared == name))
        else:
            out.append(Variant(name, options, None, declared == name))
    return out


def with_variant(ir: IR, path: tuple[int, ...], v: Variant) -> IR:
    """A copy of `ir` (before the passes) in which the node at `path` uses `v`."""
    g = clone(ir)
    host = g
    for scan in path[:-1]:
        host = node(host, scan).attrs["body"]
    n = node(host, path[-1])
    n.attrs["estimator"] = v.estimator
    n.attrs["options"] = dict(v.options)
    if v.baseline is None and "baseline" in n.args:
        remove_operand(host, path[-1], "baseline")  # a statistic or network left unread
        n.attrs.pop("moving_average", None)
    return g


def measured_params(ir: IR, loss: int, trainable: list[str]) -> list[str]:
    """The parameters among `trainable` the loss reaches other than through a tensor
    baseline (a cell's parameters when it reaches the scan)."""
    names: set[str] = set()

    def collect(g: IR, ids) -> None:
        for nid in ids:
            n = node(g, nid)
            if n.op == "param":
                names.add(n.attrs["name"])
            elif n.op == "scan":
                collect(n.attrs["body"], list(n.attrs["body"].nodes))

    collect(ir, _ancestors(ir, loss, through_baselines=False))
    return [n for n in trainable if n in names]


# -- measuring ----------------------------------------------------------------------------
def _chunk_fn(ir: IR, loss: int, names: list[str], cost: int | None) -> Callable:
    """A compiled (params, stats, batch, keys[c], mask[c]) -> (mean[P], m2[P], sum of the
    losses, sum of the mean costs), over the keys where mask is 1."""
    surrogate = surrogate_of(ir, loss)

    def one(params, stats, batch, key):
        def objective(trainable):
            ctx = LowerCtx({**params, **trainable}, stats, key, train=True)
            values = run_ir(ir, ctx, batch)
            mean_cost = jnp.mean(values[cost]) if cost is not None else jnp.zeros(())
            return values[surrogate], (values[loss], mean_cost)

        grads, aux = jax.grad(objective, has_aux=True)({n: params[n] for n in names})
        flat = jnp.concatenate([jnp.ravel(grads[n]).astype(jnp.float32) for n in names])
        return flat, aux

    def chunk(params, stats, batch, keys, mask):
        flat, (losses, costs) = jax.vmap(one, in_axes=(None, None, None, 0))(
            params, stats, batch, keys)
        count = jnp.sum(mask)
        mean = jnp.sum(mask[:, None] * flat, axis=0) / count
        m2 = jnp.sum(mask[:, None] * jnp.square(flat - mean), axis=0)
        return mean, m2, jnp.sum(mask * losses), jnp.sum(mask * costs)

    return compile_fn(chunk)


def _cost_node(ir: IR, loss: int, path: tuple[int, ...], name: str) -> int | None:
    """The `cost` node the loss's surrogate reads for the sample at `path`: the one whose
    log-probability scores that sample (a cell's: read from its scan, by the name)."""
    s = surrogate_of(ir, loss)
    if s == loss:
        return None
    surrogate = node(ir, s)
    operands = {arg: src for src, arg in surrogate.operands()}
    for j, sample in enumerate(surrogate.attrs["samples"]):
        lp = node(ir, operands[f"logp.{j}"])
        scores = dict((a, i) for i, a in lp.operands()).get("x") == path[0] \
            if lp.op == "dist_log_prob" else (lp.inputs == [path[0]] and sample == name)
        if scores:
            return operands[f"cost.{j}"]
    return None


@dataclass
class _Moments:
    """Chan et al.'s pairwise update, in float64 on the host: chunks merge exactly."""

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def add(self, count: int, mean, m2) -> None:
        mean, m2 = np.asarray(mean, np.float64), np.asarray(m2, np.float64)
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + np.square(delta) * (self.count * count / total)
        self.count = total


def _run_variant(ir: IR, loss: int, names: list[str], cost: int | None, params, stats,
                 batch, keys, counts: list[int], chunk: int) -> tuple[_Moments, float, float]:
    fn = _chunk_fn(ir, loss, names, cost)
    moments, loss_sum, cost_sum = _Moments(), 0.0, 0.0
    for i, count in enumerate(counts):
        sub = keys[i * chunk:(i + 1) * chunk]
        mask = (jnp.arange(chunk) < count).astype(jnp.float32)
        mean, m2, losses, costs = fn(params, stats, batch, sub, mask)
        moments.add(count, mean, m2)
        loss_sum += float(losses)
        cost_sum += float(costs)
    total = moments.count
    return moments, loss_sum / total, cost_sum / total


def _fill(row: Row, moments: _Moments, names: list[str], params) -> None:
    n = moments.count
    per = moments.m2 / (n - 1)  # unbiased per-coordinate variances
    row.mean_norm = float(np.linalg.norm(moments.mean))
    row.variance = float(per.sum())
    row.snr = row.mean_norm / math.sqrt(row.variance) if row.variance > 0 else math.inf
    row.stderr = math.sqrt(row.variance / n)
    at = 0
    for name in names:
        size = int(np.size(params[name]))
        shape = np.shape(params[name])
        row.mean[name] = moments.mean[at:at + size].reshape(shape)
        row.variances[name] = per[at:at + size].reshape(shape)
        at += size


def _problem_text(err: GdlError) -> str:
    d: Diagnostic = err.diagnostics[0]
    return f"{d.span.short()}: {d.message}" if d.span else d.message


# -- the parameters ------------------------------------------------------------------------
def _restore(trainer: Trainer, folder: Path, result: GradVar) -> None:
    """The checkpoint's parameters (and the statistics it has) into `trainer`, if there is
    a checkpoint in `folder`."""
    if checkpoint_state(checkpoint_path(folder)) == "missing":
        result.notes.append(f"no checkpoint in {folder}: the parameters are the initial "
                            f"ones (seed {trainer.seed})")
        return
    try:
        ckpt = load_checkpoint(folder)
        params = restore_into(trainer.params, ckpt.params, subset=True)
    except CheckpointError as err:
        raise user_error(f"cannot use the checkpoint in {folder}: {err.message}",
                     hint=err.hint) from None
    trainer.params = {k: jnp.asarray(v) for k, v in params.items()}
    kept = [k for k in trainer.stats if k not in ckpt.stats]
    result.restored = {k for k in trainer.stats if k in ckpt.stats}
    trainer.stats = {k: jnp.asarray(ckpt.stats.get(k, v)) for k, v in trainer.stats.items()}
    result.parameters, result.checkpoint_step = "checkpoint", ckpt.step
    trained = ckpt.meta.get("train")
    if trained and trained != result.train:
        result.notes.append(f"the checkpoint was trained by `train {trained}`, not "
                            f"`{result.train}`")
    if kept:
        result.notes.append(f"the checkpoint has no {', '.join(kept)}; initial values used")


def _set_variables(trainer: Trainer, variables: Mapping) -> None:
    for part in ("params", "stats"):
        have = getattr(trainer, part)
        for name, value in dict(variables.get(part, {})).items():
            if name not in have:
                raise KeyError(f"variables[{part!r}] names `{name}`, which the train block "
                               f"does not have; it has {', '.join(have) or 'none'}")
            if tuple(np.shape(value)) != tuple(np.shape(have[name])):
                raise ValueError(f"`{name}` has shape {tuple(np.shape(value))}, but "
                                 f"{tuple(np.shape(have[name]))} is needed")
            have[name] = jnp.asarray(value, have[name].dtype)


# -- the whole measurement ----------------------------------------------------------------
def measure_gradvar(plan: TrainPlan, sources: Mapping[str, Source], *,
                    keys: int = DEFAULT_KEYS, seed: int | None = None,
                    checkpoint: str | Path | None = None, variables: Mapping | None = None,
                    chunk: int | None = None, only: list[str] | None = None,
                    progress: Callable[[Row], None] | None = None) -> GradVar:
    """Measure every estimator of every stochastic node below `plan`'s losses.

    keys: how many independent keys (at least 2); seed: the keys' seed (default the
    block's); checkpoint: a checkpoint folder whose parameters and statistics to use, when
    it holds one (else the initial parameters); variables: `{"params": .., "stats": ..}`
    set over either; chunk: keys per vmapped call (default: by the parameter count);
    only: measure just the rows whose estimator (its label, e.g. "reinforce +
    moving_average(0.9)") is listed; progress: called with each row as it is done.
    """
    problem = keys_problem(keys)
    if problem:
        raise user_error(problem)
    found = {i: stochastic_nodes(plan.ir, s.loss) for i, s in enumerate(plan.steps)}
    if not any(found.values()):
        raise user_error(f"the loss of `train {plan.name}` depends on no stochastic node, so "
                     "there is no gradient estimator to measure", plan.span,
                     "gradvar measures the estimators of `z ~ distribution by ESTIMATOR` "
                     "nodes below the loss")
    trainer = Trainer(plan, sources)  # the data, the initial parameters, each step's subset
    batch = next(iter(trainer.batch_stream(0)), (0, None))[1]
    if batch is None:
        raise user_error(f"`train {plan.name}` runs no step, so it has no first batch", plan.span)
    seed = trainer.seed if seed is None else int(seed)
    examples = plan.batch.batch if plan.batch else 0
    result = GradVar(plan.name, keys, seed, examples, "initial",
                     str(checkpoint) if checkpoint is not None else None)
    if checkpoint is not None:
        _restore(trainer, Path(checkpoint), result)
    if variables:
        _set_variables(trainer, variables)
        result.parameters = "given"
    params, stats = trainer.params, trainer.stats

    base = jax.random.key(seed)
    for i, step in enumerate(plan.steps):
        nodes = found[i]
        if not nodes:
            continue
        names = sorted(measured_params(plan.ir, step.loss, trainer.subsets[i]))
        size = sum(int(np.size(params[n])) for n in names)
        if not names:
            raise user_error(f"the loss of `train {plan.name}` reaches no trainable parameter, "
                         "so there is no gradient to measure", plan.span)
        per = chunk or max(1, min(MAX_CHUNK, keys, CHUNK_ENTRIES // max(size, 1)))
        counts = [min(per, keys - at) for at in range(0, keys, per)]
        key_ids = jnp.arange(len(counts) * per) % keys  # the last chunk is padded, masked
        key_array = jax.vmap(lambda k: jax.random.fold_in(base, k))(key_ids)
        step_name = "loss" if len(plan.steps) == 1 else f"{step.name}.loss"
        for path, n in nodes:
            mean_cost = None  # reinforce without a baseline measures it first
            for v in variants(n):
                if only is not None and v.label not in only:
                    continue
                row = Row(step_name, node_name(n), v.label, v.declared, keys)
                tic = time.perf_counter()
                use = stats
                try:
                    ir = run_passes(with_variant(plan.ir, path, v))
                    if v.baseline and v.baseline != "tensor":
                        use, row.baseline_value, row.baseline_from = _moving_average(
                            plan.ir, path, stats, result, mean_cost)
                    cost = _cost_node(ir, step.loss, path, n.attrs["name"])
                    moments, row.loss, mc = _run_variant(ir, step.loss, names, cost, params,
                                                         use, batch, key_array, counts, per)
                    if v.estimator == "reinforce" and v.baseline is None and cost is not None:
                        mean_cost = mc
                    _fill(row, moments, names, params)
                except GdlError as err:  # e.g. a support too large to enumerate
                    row.problem = _problem_text(err)
                row.seconds = time.perf_counter() - tic
                result.rows.append(row)
                if progress is not None:
                    progress(row)
    return result


def _moving_average(ir: IR, path: tuple[int, ...], stats: dict, result: GradVar,
                    mean_cost: float | None) -> tuple[dict, float, str]:
    """The statistics with the node's moving average as the row uses it: the checkpoint's,
    else the mean cost measured without the baseline (where the average settles)."""
    host = ir
    for scan in path[:-1]:
        host = node(host, scan).attrs["body"]
    n = node(host, path[-1])
    src = dict((arg, s) for s, arg in n.operands())["baseline"]
    name = node(host, src).attrs["name"]
    value = float(stats[name])
    if name in result.restored:
        return stats, value, "checkpoint"
    if mean_cost is None:  # the row without the baseline could not be measured
        return stats, value, "initial"
    return {**stats, name: jnp.asarray(mean_cost, jnp.float32)}, mean_cost, "mean cost"


# -- the table and the file -------------------------------------------------------------------
def _number(x: float | None, fmt: str) -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "inf"
    return "0" if x == 0 else format(x, fmt)


def table_text(result: GradVar) -> str:
    """The rows as plain aligned text, with a line on where the parameters came from and
    a footnote per baseline and per row that could not be measured."""
    steps = len({r.step for r in result.rows}) > 1
    head = (["step"] if steps else []) + ["node", "estimator", "|mean grad|", "variance",
                                          "snr", "std err"]
    lines = []
    for r in result.rows:
        cells = ([r.step] if steps else []) + [
            r.node, ("* " if r.declared else "  ") + r.estimator,
            _number(r.mean_norm, ".4g"), _number(r.variance, ".4g"), _number(r.snr, ".3g"),
            _number(r.stderr, ".2g")]
        lines.append(cells)
    widths = [max(len(c[i]) for c in [head, *lines]) for i in range(len(head))]
    left = len(head) - 4  # the text columns; the numbers align right

    def fmt(cells) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    where = {"checkpoint": f"the checkpoint in {result.checkpoint} "
                           f"(step {result.checkpoint_step})",
             "initial": "the initial ones" + (f" (no checkpoint in {result.checkpoint})"
                                               if result.checkpoint else ""),
             "given": "the ones given"}[result.parameters]
    batch = f"the first training batch ({result.examples} examples)" if result.examples \
        else "no data (the block reads none)"
    out = [f"train {result.train}: {result.keys} keys (seed {result.seed}) on {batch}; "
           f"parameters: {where}", "",
           fmt(head), *(fmt(c) for c in lines), ""]
    out.append("* the file's own estimator; variance = E|g - mean g|^2 summed over the "
               "parameters, snr = |mean grad| / sqrt(variance), std err = sqrt(variance / keys)")
    for r in result.rows:
        if r.baseline_value is not None:
            how = {"checkpoint": "the checkpoint's value",
                   "mean cost": "the mean cost without it, where the average settles",
                   "initial": "its initial value"}[r.baseline_from]
            out.append(f"{r.node} {r.estimator}: b = {r.baseline_value:.4g}, {how}")
        if r.problem:
            out.append(f"{r.node} {r.estimator}: n/a, {r.problem}")
    out.extend(f"note: {n}" for n in result.notes if not n.startswith("no checkpoint"))
    return "\n".join(out)


def write_gradvar(out: Path, result: GradVar) -> Path:
    """OUT/gradvar.json: the rows' numbers, the keys, the seed and the parameters' origin."""
    path = out / FILE
    text = json.dumps(result.record(), indent=1).encode()
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(text))
    except OSError as err:
        raise user_error(f"cannot write {path}: {err.strerror or err}") from None
    except OutputError as err:
        raise user_error(str(err)) from None
    return path
