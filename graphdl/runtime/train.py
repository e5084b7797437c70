"""Run a train plan: batches, jitted steps over parameter subsets, evaluation, checkpoints.

One iteration runs every `step` of the block in order; each step differentiates its own
loss with respect to its own parameters (`over generator`) with the parameters as the
previous step left them. The whole iteration is one compiled function.

The runtime reads a `TrainPlan` (plain data) and the opened data sources by name; it
knows nothing of the .gdl front end. The one thing only the front end can make, an
evaluation's IR for another batch size, comes in as a function (`ResizeEval`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.metadata
import json
import platform
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import safetensors

from graphdl.errors import GdlError, Span, user_error
from graphdl.ir.graph import node, order
from graphdl.ir.plan import EarlyStopPlan, EvalPlan, TrainPlan
from graphdl.lower import LowerCtx, init_params, run_ir
from graphdl.lower.compile import compile_fn
from graphdl.lower.init import frozen_names, param_specs
from graphdl.ops.math import ratio_of_sums
from graphdl.ops.training import OVERRIDABLE_SETTINGS
from graphdl.passes.pipeline import run_passes, surrogate_of
from graphdl.runtime.checkpoint import CheckpointError, checkpoint_path, source_hash
from graphdl.runtime.data import Source, batches, check_label_classes, num_batches
from graphdl.runtime.devices import (
    DATA,
    check_divides,
    check_shards,
    is_writer,
    local_copy,
    local_tree,
    make_mesh,
    mesh_shape,
    param_sharding,
    place,
    replicated,
    shard_batch,
)
from graphdl.runtime.eval_pad import masked_reductions, pad_batch
from graphdl.runtime.input_grads import FILES as INPUT_GRAD_FILES
from graphdl.runtime.input_grads import (
    InputGrads,
    check_input_grads,
    input_grad_fn,
    write_input_grads,
)
from graphdl.runtime.optim import make_optimizer
from graphdl.runtime.reporting import OUT_FILES, Reporter
from graphdl.runtime.saved_vocab import check_vocabularies, save_vocabularies
from graphdl.runtime.sharded_checkpoint import (
    SHARDED_DIR,
    folder_state,
    load_folder,
    save_folder,
    sharded_name,
)
from graphdl.runtime.vectors import fill_vectors
from graphdl.runtime.writing import OutputError, probe_writable, refuse_symlink

# An evaluation rebuilt for another batch size (the split's last, partial batch), for
# the evaluations that cannot be padded to the full batch and masked (runtime/eval_pad.py
# says which can: every shipped model's can).
#
# Why a function from the caller: an IR's shapes are concrete, so a batch of 16 needs
# its own IR, and a symbolic batch dim would need the lowering to take symbolic shapes;
# re-running the front end for the one extra size is what those numbers come from.
ResizeEval = Callable[[EvalPlan, int], "EvalPlan | None"]

# the files of --out a run writes besides its checkpoint (a new run refuses to replace them)
RUN_FILES = OUT_FILES + INPUT_GRAD_FILES


@dataclass
class TrainResult:
    variables: dict
    metrics: dict = field(default_factory=dict)  # last evaluation: {"test": {"accuracy": ..}}
    history: list = field(default_factory=list)  # every metrics.jsonl record
    steps: int = 0
    out_dir: Path | None = None
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run early
    checkpoint: Path | None = None  # where the last checkpoint went (a rescue path if --out failed)
    input_grads: dict[int, np.ndarray] | None = None  # --input-grads: step -> norm per position


def pick_plan(plans: Sequence[TrainPlan], name: str | None, where: str) -> TrainPlan:
    """The train block called `name` (the first when None) of the file `where`."""
    if not plans:
        raise user_error(f"{where} has no train block")
    if name is None:
        return plans[0]
    for p in plans:
        if p.name == name:
            return p
    raise user_error(f"no train block named `{name}`; the train blocks are "
                     f"{', '.join(p.name for p in plans)}")


def with_overrides(plan: TrainPlan, overrides: Mapping[str, object]) -> TrainPlan:
    """The plan with `--set` settings (`epochs`, `train.seed`, `gan.steps`) applied. The
    front end has checked them and built the plan with them already (an optimizer, a
    schedule or a batch size changes the IR, so only it can); here a length given
    replaces the file's other length (`epochs` drops the file's `steps`, and the other
    way round), and with neither a run is one epoch. Keys that name no such setting
    (graph constants, `train.optimizer.lr`) are the front end's alone."""
    changes: dict[str, object] = {}
    for key, value in overrides.items():
        short = key.split(".", 1)[1] if key.startswith(f"{plan.name}.") or key.startswith("train.") else key
        if short in OVERRIDABLE_SETTINGS:
            changes[short] = value
            if short in ("epochs", "steps"):  # the length given last replaces the file's
                changes["steps" if short == "epochs" else "epochs"] = None
    epochs = changes.get("epochs", plan.epochs)
    steps = changes.get("steps", plan.num_steps)
    if epochs is None and steps is None:
        changes["epochs"] = 1
    if "steps" in changes:
        changes["num_steps"] = changes.pop("steps")
    return dataclasses.replace(plan, **changes)


def _own(value, default):
    """A step's own setting, else the train block's."""
    return default if value is None else value


class Trainer:
    """Holds the compiled iteration and evaluation functions of one train plan."""

    def __init__(self, plan: TrainPlan, sources: Mapping[str, Source],
                 resize_eval: ResizeEval | None = None, *, pretrained: bool = True,
                 main_file: tuple[str, str] | None = None,
                 mesh: jax.sharding.Mesh | None = None):
        """`pretrained`: fill the `vectors(...)` parameters from their files (not when a
        checkpoint will replace them); `main_file`: (path, text) of the .gdl file, so
        that an error of that fill shows its `param` line; `mesh`: the devices the
        iteration runs on (runtime/devices.py), None for one device."""
        self.plan, self.sources, self.resize_eval = plan, sources, resize_eval
        self.batch_plan = plan.batch
        self.mesh = mesh
        if plan.batch is not None:
            check_divides(plan.batch.batch, mesh, plan.batch.span or plan.span)
            self.train_arrays = sources[plan.batch.source].arrays(plan.batch.split)
            n = len(next(iter(self.train_arrays.values())))
            self.per_epoch = num_batches(n, plan.batch.batch, drop_last=True)
            if self.per_epoch == 0:
                raise user_error(f"the {plan.batch.split} split has {n} examples, fewer than one "
                                 f"batch of {plan.batch.batch}", plan.span)
        else:
            self.train_arrays, self.per_epoch = {}, 1
        check_label_classes(plan, sources)  # labels past the logits' classes: no NaN run
        if plan.num_steps is not None:
            self.total_steps = int(plan.num_steps)
        else:
            self.total_steps = int(plan.epochs or 1) * self.per_epoch
        self.seed = int(plan.seed or 0)
        irs = [plan.ir] + [e.ir for e in plan.evaluations]
        # the seed, not jax.random.key(seed): the key is made inside the init program
        self.params, self.stats = init_params(
            irs, self.seed if _int32(self.seed) else jax.random.key(self.seed))
        specs = param_specs(irs)
        # the token sources whose vocabularies are saved beside the checkpoint
        self.vocab_sources = list(dict.fromkeys(
            [*([plan.batch.source] if plan.batch else []), *(e.source for e in plan.evaluations),
             *(s["init"][2] for s in specs.values() if s["init"][0] == "vectors")]))
        self.vocab_written: Path | None = None  # the folder they were written to
        self.resumed = False  # restored from a checkpoint (its vocabularies stay)
        self.notes: list[str] = []  # said when the run starts: how many vectors were found
        if pretrained:
            self.notes = fill_vectors(self.params, specs, sources, main_file)
            self.params = {k: jnp.asarray(v) for k, v in self.params.items()}
        frozen = frozen_names(irs)
        self.subsets = [self._subset(s.over, frozen) for s in plan.steps]
        self.optimizers = [
            make_optimizer(s.optimizer, _own(s.schedule, plan.schedule), self.total_steps,
                           _own(s.clip_grad_norm, plan.clip_grad_norm),
                           _own(s.weight_decay, plan.weight_decay))
            for s in plan.steps]
        self.opt_states = _init_opt_states(self.optimizers, self.subsets, self.params)
        # params, stats and optimizer states are donated: XLA updates them in place. Every
        # caller replaces its copies with the iteration's outputs at once (run_training,
        # bench), and evaluation and checkpoints read the current ones, never old ones.
        self.ir = run_passes(plan.ir)  # the IR the steps run: after the pass pipeline
        if mesh is None:
            self.iteration = compile_fn(self._iteration, donate_argnums=(0, 1, 2))
        else:
            self.iteration = self._on_mesh(specs)
        self.early = (None, 0)  # early stopping: best metric so far, evaluations without gain
        self._eval_fns: dict = {}
        self._eval_masked: dict = {}  # id(evaluation) -> (its IR, the masked nodes or None)

    def _on_mesh(self, specs: dict) -> Callable:
        """The state placed on the mesh (parameters split as their `shard [...]` says,
        the rest replicated) and the iteration compiled for it: each batch split over
        `data`, the state keeping its shardings from step to step."""
        mesh = self.mesh
        shards = {n: specs[n].get("shard") for n in self.params if n in specs}
        check_shards(mesh, {n: (specs[n]["type"], s, specs[n]["span"])
                            for n, s in shards.items() if s})
        params = {n: param_sharding(mesh, shards.get(n)) for n in self.params}
        stats = {n: replicated(mesh) for n in self.stats}
        opts = _opt_state_shardings(self.opt_states, params,
                                     {n: v.shape for n, v in self.params.items()},
                                     replicated(mesh))
        self.shardings = (params, stats, opts)
        self.place_state()
        whole = jax.sharding.PartitionSpec()
        jitted = compile_fn(self._iteration, donate_argnums=(0, 1, 2), mesh=mesh,
                            in_shardings=(params, stats, opts,
                                          jax.sharding.PartitionSpec(DATA), whole),
                            out_shardings=(params, stats, opts, whole))
        key_sharding = replicated(mesh)
        # XLA's CPU collectives hang when many steps are queued: wait for each one there
        wait = mesh.devices.flat[0].platform == "cpu"

        def iteration(params, stats, opt_states, batch, key):
            out = jitted(params, stats, opt_states, batch, place(key, key_sharding))
            if wait:
                jax.block_until_ready(out[3])
            # the losses as this process's own copy: what reads them runs here alone
            return (*out[:3], local_copy(out[3]))
        return iteration

    def place_state(self) -> None:
        """Put the parameters, statistics and optimizer state on the mesh (after they
        were made or restored on one device)."""
        params, stats, opts = self.shardings
        self.params = {n: place(v, params[n]) for n, v in self.params.items()}
        self.stats = {n: place(v, stats[n]) for n, v in self.stats.items()}
        self.opt_states = jax.tree_util.tree_map(place, self.opt_states, opts)

    def local_variables(self) -> tuple[dict, dict]:
        """The parameters and statistics on one device of this process (evaluation and
        checkpoints run there; every process calls this together on a mesh)."""
        if self.mesh is None:
            return self.params, self.stats
        return local_tree(self.params), local_tree(self.stats)

    def _subset(self, over, frozen) -> list[str]:
        names = [n for n in self.params if n not in frozen]
        if over:
            names = [n for n in names if any(n == g or n.startswith(g + ".") for g in over)]
        return names

    def _inputs(self, batch: dict) -> dict:
        return {f"data.{k}": v for k, v in batch.items()}

    def _iteration(self, params, stats, opt_states, batch, key):
        losses, new_opt_states = [], []
        for i, opt_state in enumerate(opt_states):
            params, stats, opt_state, loss = self._apply_step(i, params, stats, opt_state,
                                                              batch, key)
            losses.append(loss)
            new_opt_states.append(opt_state)
        return params, stats, new_opt_states, jnp.stack(losses)

    def _apply_step(self, i: int, params, stats, opt_state, batch, key):
        """The `i`-th `step` of the block: its loss, gradient and update (jitted inside
        the iteration; eager when a non-finite loss is traced back to its op)."""
        ir, step, sub, tx = self.ir, self.plan.steps[i], self.subsets[i], self.optimizers[i]

        def loss_fn(trainable):
            ctx = LowerCtx({**params, **trainable}, stats, key, train=True)
            values = run_ir(ir, ctx, batch)
            # the gradient of the surrogate (the loss plus score-function terms, 0 in
            # value); the loss itself is reported
            return values[surrogate_of(ir, step.loss)], (values[step.loss], ctx.new_stats)

        trainable = {n: params[n] for n in sub}
        (_, (loss, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        params = {**params, **optax.apply_updates(trainable, updates)}
        return params, {**stats, **new_stats}, opt_state, loss

    def explain_nonfinite(self, params, stats, opt_states, batch, key) -> tuple[str, Span | None]:
        """Rerun one iteration eagerly, node by node, and name what first went non-finite:
        a parameter already non-finite before it, or the first op whose value is."""
        for i, opt_state in enumerate(opt_states):
            bad = [n for n, v in params.items() if not _finite(v)]
            if bad:
                return (f"the parameter {bad[0]} was already non-finite before it (the "
                        "previous update overflowed)", None)
            ctx = LowerCtx(params, stats, key, train=True)
            values = run_ir(self.ir, ctx, batch)
            for nid in order(self.ir):
                value = values.get(nid)
                if isinstance(value, jax.Array) and not _finite(value):
                    n = node(self.ir, nid)
                    return f"{n.op}() first produced a non-finite value in it", n.span
            params, stats, opt_state, _ = self._apply_step(i, params, stats, opt_state,
                                                           batch, key)
        return "no single op produced it in an eager rerun", None

    # -- evaluation -------------------------------------------------------------
    def _eval_fn(self, ev: EvalPlan, size: int):
        """The compiled evaluation of a batch of `size` examples, and the size to pad the
        batch to: the full one when the evaluation can be padded (runtime/eval_pad.py),
        else None (a partial batch gets a program of its own, from the front end's IR
        for that size, as before)."""
        full = ev.batch.batch
        if id(ev) not in self._eval_masked:  # the full-size IR, and which reductions to mask
            ir = run_passes(ev.ir)
            reads = [*ev.metrics.values(), *(i for pair in ev.ratios.values() for i in pair)]
            masked = masked_reductions(ir, full, reads)
            self._eval_masked[id(ev)] = (ir, None if masked is None
                                         else frozenset(id(node(ir, i)) for i in masked))
        ir, masked = self._eval_masked[id(ev)]
        takes = full if masked is not None else size
        key = (id(ev), takes)
        if key not in self._eval_fns:
            plan = ev if takes == full else self._resized(ev, takes)
            ir = ir if takes == full else run_passes(plan.ir)

            def fn(params, stats, batch, key, mask, plan=plan, ir=ir):
                ctx = LowerCtx(params, stats, key, train=False)
                if mask is not None:
                    ctx.example_mask, ctx.masked = mask, masked
                values = run_ir(ir, ctx, batch)
                out = {m: values[nid] for m, nid in plan.metrics.items() if m not in plan.ratios}
                sums = {m: (values[a], values[b]) for m, (a, b) in plan.ratios.items()}
                return out, sums
            self._eval_fns[key] = compile_fn(fn)
        return self._eval_fns[key], (full if masked is not None else None)

    def _resized(self, ev: EvalPlan, size: int) -> EvalPlan:
        plan = self.resize_eval(ev, size) if self.resize_eval is not None else None
        if plan is None:
            raise ValueError(f"the evaluation on {ev.source}.{ev.split} needs its IR for a "
                             f"last batch of {size}; pass resize_eval")
        return plan

    def evaluate(self, ev: EvalPlan) -> dict[str, float]:
        """Each metric's example-weighted mean over the split; a `ratio_of_sums` metric is
        the ratio of its numerator and denominator summed over the split's batches."""
        arrays = self.sources[ev.source].arrays(ev.split)
        n = len(next(iter(arrays.values())))
        totals: dict[str, float] = {m: 0.0 for m in ev.metrics if m not in ev.ratios}
        sums: dict[str, list] = {}  # ratio metric -> [sum of num, sum of den]
        # each batch its own key (fixed, so an evaluation is reproducible): with one key
        # for all, every batch of one size would draw the same noise for its rows
        params, stats = self.local_variables()  # evaluation runs on one device
        for index, batch in enumerate(batches(arrays, ev.batch.batch, shuffle=False, seed=0,
                                              epoch=0, drop_last=False)):
            size = len(next(iter(batch.values())))
            fn, pad_to = self._eval_fn(ev, size)
            mask = None
            if pad_to is not None:  # every batch through the one program, masked
                batch, mask = pad_batch(batch, pad_to)
            out, parts = fn(params, stats, self._inputs(batch), step_key(0, index), mask)
            for m, v in out.items():
                totals[m] += float(v) * size
            for m, pair in parts.items():
                pair = [np.asarray(p, np.float64) for p in pair]
                if m in sums:
                    _check_ratio_shapes(ev, m, sums[m], pair, size)
                    pair = [a + b for a, b in zip(sums[m], pair)]
                sums[m] = pair
        values = {m: v / n for m, v in totals.items()}
        values.update({m: float(ratio_of_sums(*pair)) for m, pair in sums.items()})
        return {m: values[m] for m in ev.metrics}  # in the block's order

    def batch_stream(self, start_step: int):
        """Training batches from `start_step` on: deterministic in (seed, epoch)."""
        step = start_step
        while step < self.total_steps:
            epoch, skip = divmod(step, self.per_epoch)
            if self.batch_plan is None:
                yield epoch, {}
                step += 1
                continue
            stream = batches(self.train_arrays, self.batch_plan.batch, shuffle=self.batch_plan.shuffle,
                             seed=self.seed, epoch=epoch, drop_last=True)
            for i, batch in enumerate(stream):
                if i < skip:
                    continue
                if step >= self.total_steps:
                    return
                inputs = self._inputs(batch)
                yield epoch, inputs if self.mesh is None else shard_batch(self.mesh, inputs)
                step += 1


def _opt_state_shardings(opt_states, shardings: dict, shapes: dict, whole):
    """Each optimizer-state leaf's sharding: a parameter's moment (a leaf under that
    parameter's name, of its shape) is split like the parameter; counters are whole."""
    def pick(path, leaf):
        name = next((k.key for k in reversed(path) if isinstance(k, jax.tree_util.DictKey)),
                    None)
        if name in shardings and getattr(leaf, "shape", None) == shapes[name]:
            return shardings[name]
        return whole
    return jax.tree_util.tree_map_with_path(pick, opt_states)


def step_key(seed: int, index: int):
    """`jax.random.fold_in(jax.random.key(seed), index)` as one compiled program (made op
    by op, the key and its fold_in were four small programs to trace at a run's start)."""
    if not (_int32(seed) and _int32(index)):  # past a traced int32: made op by op
        return jax.random.fold_in(jax.random.key(seed), index)
    return _step_key_fn()(seed, index)


def _int32(value: int) -> bool:
    return -2**31 <= value < 2**31


@functools.cache
def _step_key_fn():
    return compile_fn(_fold_in_seed)


def _fold_in_seed(seed, index):
    return jax.random.fold_in(jax.random.key(seed), index)


def _init_opt_states(optimizers, subsets, params) -> list:
    """Each step's optimizer state, made by one jitted function: made op by op, every
    zeros of a new shape was its own small XLA program (a dozen for a CNN's Adam, each
    traced and looked up in the compilation cache at start)."""
    def init(params):
        return [tx.init({k: params[k] for k in sub}) for tx, sub in zip(optimizers, subsets)]
    return compile_fn(init)(params)


def _check_ratio_shapes(ev: EvalPlan, metric: str, sums: list, part: list, size: int) -> None:
    """A ratio's sums add up batch by batch, so its num and den must keep their shapes; a
    shape that follows the batch size (f32[B, C] for f32[C]) cannot be summed."""
    for what, total, new in zip(("numerator", "denominator"), sums, part):
        if total.shape != new.shape:
            span = node(ev.ir, ev.metrics[metric]).span
            raise user_error(
                f"metric `{metric}`: the {what} of ratio_of_sums has shape "
                f"{list(total.shape)} on one batch and {list(new.shape)} on a batch of {size}",
                span, hint="sum it over the batch axis (axis 0) so that batches add up")


def _finite(value) -> bool:
    """True for non-float arrays, and for float arrays without inf or nan. Checked on the
    host: on the device every new shape was a small program to compile (a checkpoint
    checks every parameter; it copies them to the host anyway)."""
    value = np.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.inexact):  # jnp's: bfloat16 is not numpy's
        return True
    if value.dtype.kind not in "fc":  # bfloat16 and the other ml_dtypes floats
        value = value.astype(np.float32)
    return bool(np.all(np.isfinite(value)))


def _metric_improved(best, value, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


# How many steps an eager rerun replays to find the op behind a non-finite loss; past this,
# the error names the step only (the replay would cost as much as the training did).
MAX_REPLAY = 5000


class _Stop:
    """SIGINT/SIGTERM during training: remember the signal, stop at the next step boundary
    (after a checkpoint); a second signal stops at once, as Ctrl-C always did."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():  # only there can we
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def check_lengths(plan: TrainPlan, max_steps: int | None, writes: bool = True) -> None:
    """A run of 0 or fewer steps is a mistake; say so before anything is written. (The
    one exception: `steps = 0` without an output folder, the Python API's way to get the
    parameters training starts from; it writes nothing, so it can overwrite nothing.)"""
    if max_steps is not None and max_steps <= 0:
        raise user_error(f"--steps {max_steps}: a run needs at least 1 step",
                         hint="leave --steps out to train the file's full length")
    for name, value in (("epochs", plan.epochs), ("steps", plan.num_steps)):
        least = 0 if name == "steps" and not writes else 1
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < least):
            raise user_error(f"{name} = {value}: a train block needs at least 1 "
                             f"{'epoch' if name == 'epochs' else 'step'} (a whole number)",
                             plan.span)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run_header(plan: TrainPlan, trainer: Trainer, overrides: Mapping | None,
               resumed_from: int | None) -> dict:
    """What a run ran on: the first record of metrics.jsonl and the checkpoint's `run`."""
    device = jax.devices()[0]
    header = {"step": resumed_from or 0, "epoch": (resumed_from or 0) // trainer.per_epoch,
              "split": "header", "graphdl": _version("graphdl"),
              "jax": jax.__version__, "python": platform.python_version(),
              "platform": f"{platform.system()} {platform.machine()}",
              "backend": device.platform, "device": getattr(device, "device_kind", str(device)),
              "train_block": plan.name, "seed": trainer.seed, "total_steps": trainer.total_steps,
              "steps_per_epoch": trainer.per_epoch, "overrides": dict(overrides or {})}
    if trainer.mesh is not None:  # a one-device run's header is as it always was
        header["mesh"] = dict(trainer.mesh.shape)
        header["processes"] = jax.process_count()
    if resumed_from is not None:
        header["resumed_from"] = resumed_from
    return header


class _Run:
    """The state of one run_training call that its helpers share."""

    def __init__(self, trainer: Trainer, out: Path | None, source_text: str | None,
                 reporter: Reporter, header: dict):
        self.trainer, self.out, self.source_text = trainer, out, source_text
        self.reporter, self.header = reporter, header
        # (step, losses) since the last check: read back at the next log line or boundary,
        # so the steps never wait for the device (and no extra program is compiled)
        self.unchecked: list[tuple[int, jax.Array]] = []
        self.saved: Path | None = None
        self.checkpoint_to = out  # OUT in every process of a run (`out` is process 0's alone)
        self.best: tuple | None = None  # (step, value, params, stats): early stopping keeps it


    def first_bad(self) -> int:
        """The first step since the last call whose loss is not finite, else 0."""
        unchecked, self.unchecked = self.unchecked, []
        for step, losses in unchecked:
            if not np.all(np.isfinite(np.asarray(losses))):
                return step
        return 0


def run_training(plan: TrainPlan, sources: Mapping[str, Source], *,
                 source_text: str | None = None, resize_eval: ResizeEval | None = None,
                 out_dir: str | Path | None = None, progress: bool = True, resume: bool = False,
                 max_steps: int | None = None, quiet: bool = False,
                 overwrite: bool = False, overrides: Mapping | None = None,
                 tensorboard: bool = False, input_grads: InputGrads | None = None,
                 devices: int | None = None, mesh: Mapping[str, int] | None = None
                 ) -> TrainResult:
    """Train `plan` (overrides already applied) on `sources` (data source name -> opened
    source). `source_text`: the .gdl text, whose hash the checkpoint in `out_dir` keeps;
    `overrides`: the `--set` settings given, recorded in the run's header;
    `input_grads`: also measure the loss's gradient with respect to a data field at the
    start and the end (runtime/input_grads.py); `devices`: how many devices the run is
    data-parallel over (default: all of them), `mesh`: the mesh's axis sizes
    ({"data": 2, "model": 2}, `--mesh`; default: the train block's `mesh`). In a run over
    several processes (`jax.distributed`) only process 0 writes to `out_dir` and shows
    progress; every process computes the same steps.

    SIGINT/SIGTERM stop the run at the next step boundary with a checkpoint saved
    (`result.interrupted` is the signal); a non-finite loss is an error naming its step
    (and op, found by an eager rerun), and a non-finite checkpoint is never written.
    """
    check_lengths(plan, max_steps, writes=bool(out_dir))
    shape = mesh_shape(devices, mesh or plan.mesh, plan.span,
                       plan.batch.batch if plan.batch is not None else None)
    on_mesh = make_mesh(shape)
    read_from = Path(out_dir) if out_dir and resume else None  # every process resumes
    # every process takes part in a checkpoint (orbax writes each one's shards)
    checkpoint_to = Path(out_dir) if out_dir else None
    if not is_writer():  # process 0 writes and shows; the others compute alone
        out_dir, progress, quiet, tensorboard = None, False, True, False
    if tensorboard:
        try:
            Reporter.check_tensorboard()
        except OutputError as err:
            raise user_error(str(err)) from None
    out = Path(out_dir) if out_dir else None
    if out is not None:  # before any work: never train for nothing, never clobber
        check_out_dir(out, resume, overwrite, source_text)
    main_file = (plan.span.file, source_text) if source_text is not None and plan.span else None
    trainer = Trainer(plan, sources, resize_eval, pretrained=read_from is None,
                      main_file=main_file, mesh=on_mesh)
    start = 0
    if read_from is not None:
        start = restore(trainer, read_from)
        check_vocabularies(read_from, sources, trainer.vocab_sources, "--resume")
        if trainer.mesh is not None:
            trainer.place_state()
    grads = _InputGradProbe(trainer, input_grads) if input_grads else None
    if grads is not None:
        grads.measure(start)
    # a host copy of where this run starts: an eager replay traces a non-finite loss from it
    snapshot = jax.device_get((*trainer.local_variables(), local_tree(trainer.opt_states)))
    header = run_header(plan, trainer, overrides, start if resume and out is not None else None)
    try:
        reporter = Reporter(out, trainer.total_steps, plan, progress=progress, quiet=quiet,
                            resume_step=start if resume and out is not None else None,
                            header=header, tensorboard=tensorboard)
    except OutputError as err:
        raise user_error(str(err)) from None
    for note in trainer.notes:
        reporter.note(note)
    run = _Run(trainer, out, source_text, reporter, header)
    run.checkpoint_to = checkpoint_to
    result = TrainResult({}, out_dir=out)
    try:
        with _Stop() as stop:
            step = _train_loop(run, result, start, max_steps, stop, snapshot)
    except OutputError as err:
        raise user_error(str(err)) from None
    finally:
        try:
            reporter.close()
        except OutputError as err:
            reporter.note(f"warning: {err}")
    result.variables = {"params": trainer.params, **({"stats": trainer.stats} if trainer.stats else {})}
    result.steps = step
    result.history = reporter.history
    result.interrupted = stop.signum
    result.checkpoint = run.saved
    if grads is not None:
        grads.measure(step)
        result.input_grads = grads.curves
        if out is not None:
            try:
                write_input_grads(out, input_grads, grads.loss_name, grads.curves)
            except OutputError as err:
                raise user_error(str(err)) from None
    if stop.signum is None:
        reporter.summary(result.metrics)
    return result


class _InputGradProbe:
    """--input-grads: the gradient norms per position on the run's first batch, measured
    with the parameters of the steps it is asked at (the first `step`'s loss)."""

    def __init__(self, trainer: Trainer, spec: InputGrads):
        self.trainer = trainer
        self.batch = next(iter(trainer.batch_stream(0)), (0, {}))[1]
        axis = check_input_grads(spec, self.batch, trainer.plan.span)
        first = trainer.plan.steps[0]
        self.loss_name = "loss" if len(trainer.plan.steps) == 1 else f"{first.name}.loss"
        self.fn = input_grad_fn(trainer.ir, first.loss, spec.field, axis)
        self.curves: dict[int, np.ndarray] = {}

    def measure(self, step: int) -> None:
        t = self.trainer
        self.curves[step] = np.asarray(self.fn(t.params, t.stats, self.batch, jax.random.key(0)))


def _train_loop(run: _Run, result: TrainResult, start: int, max_steps: int | None,
                stop: _Stop, snapshot) -> int:
    """The steps from `start`; returns the step it ended at (saved in the checkpoint)."""
    trainer, reporter, plan = run.trainer, run.reporter, run.trainer.plan
    key_seed = trainer.seed + 1  # step i's key is step_key(key_seed, i)
    log_every = max(1, min(50, trainer.total_steps // 100 or 1))
    early = plan.early_stop
    best, bad_evals = trainer.early  # restored on --resume
    step = start
    limit = trainer.total_steps if max_steps is None else min(trainer.total_steps, start + max_steps)
    tic, seen = time.perf_counter(), 0
    batch_size = plan.batch.batch if plan.batch else 1
    last_epoch = start // trainer.per_epoch
    evaluated: dict = {}  # id(evaluate block) -> the step it last ran at
    ckpt_every, ckpt_unit = (plan.checkpoint.every, plan.checkpoint.unit) if plan.checkpoint \
        else (0, None)
    stopped = False

    def check_finite() -> None:
        """Read back the losses since the last check: the first non-finite one is an error."""
        bad = run.first_bad()
        if bad:
            _raise_nonfinite(run, bad, start, key_seed, snapshot)

    def at_boundary(unit: str, epoch: int) -> bool:
        """Checkpoint and evaluate after an epoch or a step; True when early stopping fires."""
        count = epoch if unit == "epoch" else step
        if ckpt_unit == unit and count % ckpt_every == 0:
            check_finite()
            _save_checked(run, step)
        ran = _evaluate_due(trainer, reporter, result, step // trainer.per_epoch, step, unit,
                            evaluated)
        return bool(ran) and early_stop_due(ran)

    def early_stop_due(ran: dict) -> bool:
        nonlocal best, bad_evals
        before = best
        best, bad_evals, done = _early(early, ran, best, bad_evals)
        trainer.early = (best, bad_evals)  # saved with the checkpoints
        if best is not None and (before is None or best != before or run.best is None) \
                and bad_evals == 0:
            # keep-best: a copy, as the next iteration donates (consumes) these buffers
            run.best = (step, best, jax.tree_util.tree_map(jnp.copy, trainer.params),
                        jax.tree_util.tree_map(jnp.copy, trainer.stats))
        if done:
            note = (f"early stop: {early.metric} did not improve for "
                    f"{early.patience} evaluations")
            if run.best is not None:
                best_step, value, trainer.params, trainer.stats = run.best
                note += (f"; restored the weights of step {best_step} "
                         f"({early.metric} {value:.4f})")
                # the final evaluation must see these weights, also for the blocks that
                # have just run at this step on the ones it replaced
                evaluated.clear()
            reporter.note(note)
        return done

    for epoch, batch in trainer.batch_stream(start):
        if step >= limit or stop.signum is not None:
            break
        if epoch != last_epoch:  # `epoch` epochs are complete, after `step` steps
            last_epoch = epoch
            if at_boundary("epoch", epoch):
                stopped = True
                break
        key = step_key(key_seed, step)
        trainer.params, trainer.stats, trainer.opt_states, losses = trainer.iteration(
            trainer.params, trainer.stats, trainer.opt_states, batch, key)
        step += 1
        run.unchecked.append((step, losses))
        if step == start + 1:  # the first step compiled: throughput counts from here
            jax.block_until_ready(losses)
            tic, seen = time.perf_counter(), 0
        else:
            seen += batch_size
        if step % log_every == 0 or step == limit:
            values = np.asarray(losses)  # the device sync: every log_every steps
            check_finite()
            rate = seen / max(time.perf_counter() - tic, 1e-9) if seen else None
            reporter.train(step, step // trainer.per_epoch,
                           dict(zip([s.name for s in plan.steps], values.tolist())), rate)
        if at_boundary("step", epoch):
            stopped = True
            break
    check_finite()
    if stop.signum is not None:
        _save_checked(run, step, final=True)
        return step
    if step == trainer.total_steps or max_steps is not None or stopped:
        _evaluate_due(trainer, reporter, result, step // trainer.per_epoch, step, "end",
                      evaluated)
    _save_checked(run, step, final=True)
    return step


def _raise_nonfinite(run: _Run, bad: int, start: int, key_seed: int, snapshot) -> None:
    """The loss of step `bad` is not finite: name the step, and the op when an eager
    replay from the run's start (deterministic in seed and step) can find it."""
    trainer, plan = run.trainer, run.trainer.plan
    span, where = plan.span, ""
    if bad - start <= MAX_REPLAY:
        params, stats, opt_states = jax.tree_util.tree_map(jnp.asarray, snapshot)
        for index, (_, batch) in enumerate(trainer.batch_stream(start), start):
            key = step_key(key_seed, index)
            if index == bad - 1:
                what, op_span = trainer.explain_nonfinite(params, stats, opt_states, batch, key)
                where, span = f": {what}", op_span or plan.span
                break
            params, stats, opt_states, _ = trainer.iteration(params, stats, opt_states,
                                                             batch, key)
    saved = f"; the last checkpoint ({run.saved}) is from before it" if run.saved else ""
    raise user_error(f"the loss is not finite (nan or inf) at step {bad}{where}{saved}", span,
                     "lower the learning rate or add clip_grad_norm = 1.0")


def _save_checked(run: _Run, step: int, final: bool = False) -> None:
    """Save the checkpoint unless a parameter is not finite (the last good one stays).
    A failed final save goes to a rescue folder, so trained weights are never lost.
    Every process of a run calls it: the finite check gathers and the save is written
    by all of them (runtime/sharded_checkpoint.py)."""
    out = run.checkpoint_to
    if out is None:
        return
    view = _checkpoint_view(run.trainer)  # this process's whole copies (a collective)
    leaves = jax.tree_util.tree_leaves((view.params, view.stats))
    if not all(_finite(v) for v in leaves):
        run.reporter.note(f"not saving the checkpoint of step {step}: a parameter is not "
                          "finite; the last good checkpoint stays")
        return
    trainer = run.trainer
    try:
        save(trainer, out, step, step // trainer.per_epoch, run.source_text,
             header=run.header)
        run.saved = out / "checkpoint"
    except GdlError as err:
        if not final:
            raise
        rescue = Path(tempfile.mkdtemp(prefix="graphdl-rescue-"))
        # the portable file alone: each process has its own temporary folder
        save(trainer, rescue, step, step // trainer.per_epoch, run.source_text,
             header=run.header, sharded=False)
        raise user_error(f"{err.diagnostics[0].message}; the trained weights were saved to "
                         f"{rescue / 'checkpoint'} instead",
                         hint=f"copy that folder to {out / 'checkpoint'} and resume with "
                              "--resume") from None


def _checkpoint_view(trainer: Trainer) -> Trainer:
    """On a mesh, a copy of the trainer whose parameters, statistics and optimizer state
    are this process's whole copies (gathered from the other processes where a `shard`
    split them): what the finite check before a save reads."""
    if trainer.mesh is None:
        return trainer
    view = copy.copy(trainer)
    view.params, view.stats = trainer.local_variables()
    view.opt_states = local_tree(trainer.opt_states)
    return view


def run_evaluation(plan: TrainPlan, sources: Mapping[str, Source], out_dir: str | Path, *,
                   resize_eval: ResizeEval | None = None, quiet: bool = False) -> TrainResult:
    """`graphdl run FILE --eval`: the plan's evaluations on the checkpoint in `out_dir`."""
    if not plan.evaluations:
        raise user_error(f"--eval: the train block `{plan.name}` has no `evaluate` block", plan.span)
    out = Path(out_dir)
    check_out_dir(out, resume=True, overwrite=False, write=False)
    trainer = Trainer(plan, sources, resize_eval, pretrained=False)  # the checkpoint's
    step = restore(trainer, out, optimizer=False)  # evaluation never uses the optimizer
    check_vocabularies(out, sources, trainer.vocab_sources, "--eval")
    result = TrainResult({}, out_dir=out, steps=step)
    for ev in plan.evaluations:
        result.metrics.setdefault(ev.split, {}).update(trainer.evaluate(ev))
    result.variables = {"params": trainer.params, **({"stats": trainer.stats} if trainer.stats else {})}
    Reporter(None, trainer.total_steps, plan, progress=False, quiet=quiet).summary(result.metrics)
    return result


def _evaluate_due(trainer, reporter, result, epoch, step, when, evaluated=None) -> dict:
    """Run the evaluate blocks due `when` ("epoch": at an epoch boundary, "step": after a
    step, "end": all of them), each at most once per step."""
    ran: dict = {}  # split -> the metrics just computed
    evaluated = {} if evaluated is None else evaluated
    for ev in trainer.plan.evaluations:
        due = when == "end" or (when == "epoch" and ev.unit == "epoch" and epoch % ev.every == 0) \
            or (when == "step" and ev.unit == "step" and step % ev.every == 0)
        if due and evaluated.get(id(ev)) != step:
            evaluated[id(ev)] = step
            values = trainer.evaluate(ev)
            # merged: several evaluate blocks may share a split, each with its own metrics
            result.metrics.setdefault(ev.split, {}).update(values)
            reporter.evaluation(step, epoch, ev.split, values)
            ran.setdefault(ev.split, {}).update(values)
    return ran


def _early(stop: EarlyStopPlan | None, ran: dict, best, bad: int):
    """Early stopping on the metric just evaluated: the val split's, else any split's."""
    if not stop:
        return best, bad, False
    metric = stop.metric
    values = [ran[s][metric] for s in ("val", *ran) if s in ran and metric in ran[s]]
    if not values:  # the evaluations that ran did not compute it: nothing to count
        return best, bad, False
    value = values[0]
    if _metric_improved(best, value, stop.mode):
        return value, 0, False
    bad += 1
    return best, bad, bad >= int(stop.patience)


def check_out_dir(out: Path, resume: bool, overwrite: bool, source: str | None = None,
                  write: bool = True) -> None:
    """A run writes OUT/checkpoint, OUT/metrics.jsonl and OUT/loss.png; it never replaces
    those of a run it did not start from unless the user says so.

    A graphdl checkpoint there is continued with `resume` or replaced with `overwrite`;
    without either the run is refused (running a 10-step smoke test over a finished run
    must not lose it), and the same for a metrics.jsonl or loss.png without a checkpoint.
    A damaged graphdl checkpoint may be replaced with `overwrite`; a file there that is
    not a graphdl checkpoint never is. Then, when the run will `write`, the folders are
    probed for writability, so a read-only --out fails now, not after training.
    """
    if out.exists() and not out.is_dir():
        raise user_error(f"--out {out} is a file, not a folder")
    folder = out / "checkpoint"
    if folder.exists() and not folder.is_dir():
        raise user_error(f"{folder} is a file; graphdl keeps its checkpoint in a folder of "
                         "that name", hint="choose another --out, or move the file away")
    file = checkpoint_path(folder)
    try:
        for path in (file, folder / SHARDED_DIR, *(out / name for name in RUN_FILES)):
            refuse_symlink(path)
    except OutputError as err:
        raise user_error(str(err)) from None
    _check_checkpoint(out, file, resume, overwrite, source)
    if write:
        try:
            probe_writable(out)
            probe_writable(folder)
        except OutputError as err:
            raise user_error(f"{err}; nothing was trained",
                             hint="choose a writable --out") from None


def _check_checkpoint(out: Path, file: Path, resume: bool, overwrite: bool,
                      source: str | None) -> None:
    state = folder_state(file.parent)  # the sharded checkpoint the file names, too
    if state == "missing":
        if resume:
            raise user_error(f"there is no checkpoint in {file.parent} to continue from or "
                             "evaluate", hint="train first: run without --resume or --eval")
        others = [name for name in RUN_FILES if (out / name).exists()]
        if others and not overwrite:
            raise user_error(f"{out} holds {' and '.join(others)} of another run; a new run "
                             "would replace them",
                             hint="replace them with --overwrite, or choose another --out")
        return
    if state == "foreign":
        raise user_error(f"{file} is not a graphdl checkpoint; graphdl will not overwrite it",
                         hint="choose another --out, or move the file away")
    if state == "damaged":
        if overwrite and not resume:
            return
        name = sharded_name(file.parent)
        what = f"{file} is" if name is None else \
            f"{file.parent / SHARDED_DIR / name}, named by {file.name}, is missing or"
        raise user_error(f"{what} a damaged graphdl checkpoint (truncated or corrupt)",
                         hint="--overwrite replaces it with a fresh run; or choose another "
                              "--out")
    if resume or overwrite:
        return
    with safetensors.safe_open(str(file), framework="np") as f:
        meta = f.metadata() or {}
    of = "of this file" if source is not None and meta.get("source_hash") == source_hash(source) \
        else "of another .gdl source"
    raise user_error(f"{file.parent} holds a checkpoint (step {meta.get('step', '?')}) {of}; "
                     "a new run would replace it",
                     hint="continue it with --resume, replace it with --overwrite, or choose "
                          "another --out")


def save(trainer: Trainer, out: Path | None, step: int, epoch: int,
         source_text: str | None, header: dict | None = None,
         sharded: bool | None = None) -> None:
    """Save the checkpoint into OUT/checkpoint. Every process of a run calls it: a
    multi-process run (or `sharded`) also writes the orbax checkpoint, all processes
    taking part, and process 0 writes the vocabularies and the safetensors file
    (runtime/sharded_checkpoint.py)."""
    if out is None:
        return
    plan = trainer.plan
    settings = {n: plan.setting(n) for n in OVERRIDABLE_SETTINGS if plan.setting(n) is not None}
    meta = {"train": plan.name, "early_stop": json.dumps(list(trainer.early)),
            "settings": json.dumps(settings)}
    if header is not None:
        meta["run"] = json.dumps(header)
        # read back by `--eval` and `--resume`, which replay the run's `--set` overrides
        meta["overrides"] = json.dumps(header.get("overrides", {}))
    where = out / "checkpoint"
    if trainer.vocab_written != out and jax.process_index() == 0:
        # before the checkpoint: never one without its vocabulary
        try:
            save_vocabularies(out, trainer.sources, trainer.vocab_sources,
                              fresh=not trainer.resumed)
        except OutputError as err:
            raise user_error(f"cannot save the vocabularies: {err}") from None
        trainer.vocab_written = out
    try:
        save_folder(where, params=trainer.params, stats=trainer.stats,
                    opt_state=trainer.opt_states, step=step, epoch=epoch,
                    source=source_text or "", meta=meta, sharded=sharded)
    except CheckpointError as err:
        raise user_error(f"cannot save the checkpoint: {err.message}", hint=err.hint) from None
    except OSError as err:  # read-only folder, full disk: say where, never a traceback
        raise user_error(f"cannot save the checkpoint to {where}: {err.strerror or err}",
                         hint="free some space or make the folder writable") from None


def restore(trainer: Trainer, out: Path, optimizer: bool = True) -> int:
    """Load the checkpoint in OUT into `trainer`; `optimizer=False` (evaluation) loads the
    parameters and statistics only. The arrays go where the trainer's are (their
    shardings), from the sharded checkpoint when the folder has one, else from the file."""
    try:
        ckpt = load_folder(out / "checkpoint", params=trainer.params, stats=trainer.stats,
                           opt_state=trainer.opt_states if optimizer else None)
    except CheckpointError as err:
        hint = err.hint
        if "damaged" in err.message:
            hint = "--overwrite replaces it with a fresh run; or restore it from a backup"
        raise user_error(f"cannot resume from {out / 'checkpoint'}: {err.message}",
                         hint=hint) from None
    trainer.params = ckpt.params
    trainer.stats = ckpt.stats
    trainer.resumed = True
    if optimizer:
        trainer.opt_states = ckpt.opt_state
    if "early_stop" in ckpt.meta:
        best, bad = json.loads(ckpt.meta["early_stop"])
        trainer.early = (best, int(bad))
    return ckpt.step
