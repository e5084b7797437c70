"""Run a train plan: batches, jitted steps over parameter subsets, evaluation, checkpoints.

One iteration runs every `step` of the block in order; each step differentiates its own
loss with respect to its own parameters (`over generator`) with the parameters as the
previous step left them. The whole iteration is one compiled function.

The runtime reads a `TrainPlan` (plain data) and the opened data sources by name; it
knows nothing of the .gdl front end. The one thing only the front end can make, an
evaluation's IR for another batch size, comes in as a function (`ResizeEval`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import safetensors

from graphdl.errors import GdlError, Span, UserError
from graphdl.ir.plan import EarlyStopPlan, EvalPlan, TrainPlan
from graphdl.lower import LowerCtx, init_params, run_ir
from graphdl.lower.compile import compile_fn
from graphdl.lower.init import frozen_names
from graphdl.ops.training import OVERRIDABLE_SETTINGS
from graphdl.passes.pipeline import run_passes, surrogate_of
from graphdl.runtime.checkpoint import (
    CheckpointError,
    checkpoint_path,
    is_graphdl_checkpoint,
    load_checkpoint,
    restore_into,
    save_checkpoint,
    source_hash,
)
from graphdl.runtime.data import Source, batches, num_batches
from graphdl.runtime.optim import make_optimizer
from graphdl.runtime.reporting import Reporter

# An evaluation rebuilt for another batch size (the split's last, partial batch).
#
# Why a function from the caller: an IR's shapes are concrete, so a batch of 16 needs
# its own IR. Padding the last batch to the full size and masking would need every
# metric to be a mean over examples (a metric is any scalar the block computes), and a
# symbolic batch dim would need the lowering to take symbolic shapes; re-running the
# front end for the one extra size is what the numbers have always come from.
ResizeEval = Callable[[EvalPlan, int], "EvalPlan | None"]


@dataclass
class TrainResult:
    variables: dict
    metrics: dict = field(default_factory=dict)  # last evaluation: {"test": {"accuracy": ..}}
    history: list = field(default_factory=list)  # every metrics.jsonl record
    steps: int = 0
    out_dir: Path | None = None


def user_error(message: str, span: Span | None = None, hint: str | None = None) -> GdlError:
    return GdlError([UserError(message, span, hint).diagnostic])


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
                 resize_eval: ResizeEval | None = None):
        self.plan, self.sources, self.resize_eval = plan, sources, resize_eval
        self.batch_plan = plan.batch
        if plan.batch is not None:
            self.train_arrays = sources[plan.batch.source].arrays(plan.batch.split)
            n = len(next(iter(self.train_arrays.values())))
            self.per_epoch = num_batches(n, plan.batch.batch, drop_last=True)
            if self.per_epoch == 0:
                raise user_error(f"the {plan.batch.split} split has {n} examples, fewer than one "
                                 f"batch of {plan.batch.batch}", plan.span)
        else:
            self.train_arrays, self.per_epoch = {}, 1
        if plan.num_steps is not None:
            self.total_steps = int(plan.num_steps)
        else:
            self.total_steps = int(plan.epochs or 1) * self.per_epoch
        self.seed = int(plan.seed or 0)
        irs = [plan.ir] + [e.ir for e in plan.evaluations]
        self.params, self.stats = init_params(irs, jax.random.key(self.seed))
        frozen = frozen_names(irs)
        self.subsets = [self._subset(s.over, frozen) for s in plan.steps]
        self.optimizers = [
            make_optimizer(s.optimizer, _own(s.schedule, plan.schedule), self.total_steps,
                           _own(s.clip_grad_norm, plan.clip_grad_norm),
                           _own(s.weight_decay, plan.weight_decay))
            for s in plan.steps]
        self.opt_states = [tx.init({k: self.params[k] for k in sub})
                           for tx, sub in zip(self.optimizers, self.subsets)]
        # params, stats and optimizer states are donated: XLA updates them in place. Every
        # caller replaces its copies with the iteration's outputs at once (run_training,
        # bench), and evaluation and checkpoints read the current ones, never old ones.
        self.ir = run_passes(plan.ir)  # the IR the steps run: after the pass pipeline
        self.iteration = compile_fn(self._iteration, donate_argnums=(0, 1, 2))
        self.early = (None, 0)  # early stopping: best metric so far, evaluations without gain
        self._eval_fns: dict = {}

    def _subset(self, over, frozen) -> list[str]:
        names = [n for n in self.params if n not in frozen]
        if over:
            names = [n for n in names if any(n == g or n.startswith(g + ".") for g in over)]
        return names

    def _inputs(self, batch: dict) -> dict:
        return {f"data.{k}": v for k, v in batch.items()}

    def _iteration(self, params, stats, opt_states, batch, key):
        ir = self.ir
        losses, new_opt_states = [], []
        for step, sub, tx, opt_state in zip(self.plan.steps, self.subsets, self.optimizers,
                                            opt_states):

            def loss_fn(trainable, params=params, stats=stats, step=step):
                ctx = LowerCtx({**params, **trainable}, stats, key, train=True)
                values = run_ir(ir, ctx, batch)
                # the gradient of the surrogate (the loss plus score-function terms, 0 in
                # value); the loss itself is reported
                return values[surrogate_of(ir, step.loss)], (values[step.loss], ctx.new_stats)

            trainable = {n: params[n] for n in sub}
            (_, (loss, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
            updates, opt_state = tx.update(grads, opt_state, trainable)
            params = {**params, **optax.apply_updates(trainable, updates)}
            stats = {**stats, **new_stats}
            losses.append(loss)
            new_opt_states.append(opt_state)
        return params, stats, new_opt_states, jnp.stack(losses)

    # -- evaluation -------------------------------------------------------------
    def _eval_fn(self, ev: EvalPlan, size: int):
        key = (id(ev), size)
        if key not in self._eval_fns:
            plan = ev if size == ev.batch.batch else self._resized(ev, size)
            ir = run_passes(plan.ir)

            def fn(params, stats, batch, plan=plan, ir=ir):
                ctx = LowerCtx(params, stats, jax.random.key(0), train=False)
                values = run_ir(ir, ctx, batch)
                return {m: values[nid] for m, nid in plan.metrics.items()}
            self._eval_fns[key] = compile_fn(fn)
        return self._eval_fns[key]

    def _resized(self, ev: EvalPlan, size: int) -> EvalPlan:
        plan = self.resize_eval(ev, size) if self.resize_eval is not None else None
        if plan is None:
            raise ValueError(f"the evaluation on {ev.source}.{ev.split} needs its IR for a "
                             f"last batch of {size}; pass resize_eval")
        return plan

    def evaluate(self, ev: EvalPlan) -> dict[str, float]:
        arrays = self.sources[ev.source].arrays(ev.split)
        n = len(next(iter(arrays.values())))
        totals: dict[str, float] = {m: 0.0 for m in ev.metrics}
        for batch in batches(arrays, ev.batch.batch, shuffle=False, seed=0, epoch=0, drop_last=False):
            size = len(next(iter(batch.values())))
            out = self._eval_fn(ev, size)(self.params, self.stats, self._inputs(batch))
            for m, v in out.items():
                totals[m] += float(v) * size
        return {m: v / n for m, v in totals.items()}

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
                yield epoch, self._inputs(batch)
                step += 1


def _metric_improved(best, value, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def run_training(plan: TrainPlan, sources: Mapping[str, Source], *,
                 source_text: str | None = None, resize_eval: ResizeEval | None = None,
                 out_dir: str | Path | None = None, progress: bool = True, resume: bool = False,
                 max_steps: int | None = None, quiet: bool = False,
                 overwrite: bool = False) -> TrainResult:
    """Train `plan` (overrides already applied) on `sources` (data source name -> opened
    source). `source_text`: the .gdl text, whose hash the checkpoint in `out_dir` keeps."""
    out = Path(out_dir) if out_dir else None
    if out is not None:  # before any work: never train for nothing, never clobber
        check_out_dir(out, resume, overwrite, source_text)
    trainer = Trainer(plan, sources, resize_eval)
    start = 0
    if resume and out is not None:
        start = restore(trainer, out)
    reporter = Reporter(out, trainer.total_steps, plan, progress=progress, quiet=quiet,
                        resume_step=start if resume and out is not None else None)
    key0 = jax.random.key(trainer.seed + 1)
    log_every = max(1, min(50, trainer.total_steps // 100 or 1))
    stop = plan.early_stop
    best, bad_evals = trainer.early  # restored on --resume
    result = TrainResult({}, out_dir=out)
    step = start
    limit = trainer.total_steps if max_steps is None else min(trainer.total_steps, start + max_steps)
    tic, seen = time.perf_counter(), 0
    batch_size = plan.batch.batch if plan.batch else 1
    last_epoch = start // trainer.per_epoch
    evaluated: dict = {}  # id(evaluate block) -> the step it last ran at
    ckpt_every, ckpt_unit = (plan.checkpoint.every, plan.checkpoint.unit) if plan.checkpoint \
        else (0, None)
    stopped = False

    def at_boundary(unit: str, epoch: int) -> bool:
        """Checkpoint and evaluate after an epoch or a step; True when early stopping fires."""
        count = epoch if unit == "epoch" else step
        if ckpt_unit == unit and count % ckpt_every == 0:
            save(trainer, out, step, epoch, source_text)
        ran = _evaluate_due(trainer, reporter, result, epoch, step, unit, evaluated)
        return bool(ran) and early_stop_due(ran)

    def early_stop_due(ran: dict) -> bool:
        nonlocal best, bad_evals
        best, bad_evals, done = _early(stop, ran, best, bad_evals)
        trainer.early = (best, bad_evals)  # saved with the checkpoints
        if done:
            reporter.note(f"early stop: {stop.metric} did not improve for "
                          f"{stop.patience} evaluations")
        return done

    try:
        for epoch, batch in trainer.batch_stream(start):
            if step >= limit:
                break
            if epoch != last_epoch:  # `epoch` epochs are complete, after `step` steps
                last_epoch = epoch
                if at_boundary("epoch", epoch):
                    stopped = True
                    break
            key = jax.random.fold_in(key0, step)
            trainer.params, trainer.stats, trainer.opt_states, losses = trainer.iteration(
                trainer.params, trainer.stats, trainer.opt_states, batch, key)
            step += 1
            seen += batch_size
            if step % log_every == 0 or step == limit:
                values = np.asarray(losses)  # the only device sync: every log_every steps
                if not np.all(np.isfinite(values)):
                    raise user_error(f"the loss became {values.tolist()} at step {step}", plan.span,
                                     "lower the learning rate or add clip_grad_norm = 1.0")
                rate = seen / max(time.perf_counter() - tic, 1e-9)
                reporter.train(step, epoch, dict(zip([s.name for s in plan.steps], values.tolist())), rate)
            if at_boundary("step", epoch):
                stopped = True
                break
        final_epoch = (step - 1) // trainer.per_epoch + 1 if step else 0
        if step == trainer.total_steps or max_steps is not None or stopped:
            _evaluate_due(trainer, reporter, result, final_epoch, step, "end", evaluated)
        save(trainer, out, step, final_epoch, source_text)
    finally:
        reporter.close()
    result.variables = {"params": trainer.params, **({"stats": trainer.stats} if trainer.stats else {})}
    result.steps = step
    result.history = reporter.history
    reporter.summary(result.metrics)
    return result


def run_evaluation(plan: TrainPlan, sources: Mapping[str, Source], out_dir: str | Path, *,
                   resize_eval: ResizeEval | None = None, quiet: bool = False) -> TrainResult:
    """`graphdl run FILE --eval`: the plan's evaluations on the checkpoint in `out_dir`."""
    if not plan.evaluations:
        raise user_error(f"--eval: the train block `{plan.name}` has no `evaluate` block", plan.span)
    out = Path(out_dir)
    check_out_dir(out, resume=True, overwrite=False)
    trainer = Trainer(plan, sources, resize_eval)
    step = restore(trainer, out)
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


def check_out_dir(out: Path, resume: bool, overwrite: bool, source: str | None = None) -> None:
    """A run writes its checkpoint to OUT/checkpoint; never clobber one it has no claim to.

    A file there that is not a graphdl checkpoint is never overwritten. A graphdl
    checkpoint is continued with `resume`; one of the same .gdl source is replaced by a
    fresh run (running a file again: another seed, another train block), but one of a
    different source (another model, or an edited file) only with `overwrite`.
    """
    if out.exists() and not out.is_dir():
        raise user_error(f"--out {out} is a file, not a folder")
    folder = out / "checkpoint"
    if folder.exists() and not folder.is_dir():
        raise user_error(f"{folder} is a file; graphdl keeps its checkpoint in a folder of "
                         "that name", hint="choose another --out, or move the file away")
    file = checkpoint_path(folder)
    if not file.exists():
        if resume:
            raise user_error(f"there is no checkpoint in {folder} to continue from or evaluate",
                             hint="train first: run without --resume or --eval")
        return
    if not is_graphdl_checkpoint(file):
        raise user_error(f"{file} is not a graphdl checkpoint; graphdl will not overwrite it",
                         hint="choose another --out, or move the file away")
    if resume or overwrite:
        return
    with safetensors.safe_open(str(file), framework="np") as f:
        meta = f.metadata() or {}
    if source is not None and meta.get("source_hash") == source_hash(source):
        return
    raise user_error(f"{folder} holds a checkpoint (step {meta.get('step', '?')}) of another "
                     ".gdl source; a new run would overwrite it",
                     hint="continue it with --resume, replace it with --overwrite, or choose "
                          "another --out")


def save(trainer: Trainer, out: Path | None, step: int, epoch: int,
         source_text: str | None) -> None:
    if out is None:
        return
    plan = trainer.plan
    settings = {n: plan.setting(n) for n in OVERRIDABLE_SETTINGS if plan.setting(n) is not None}
    try:
        save_checkpoint(out / "checkpoint", params=trainer.params, stats=trainer.stats,
                        opt_state=trainer.opt_states, step=step, epoch=epoch, source=source_text,
                        meta={"train": plan.name,
                              "early_stop": json.dumps(list(trainer.early)),
                              "settings": json.dumps(settings)})
    except CheckpointError as err:
        raise user_error(f"cannot save the checkpoint: {err.message}", hint=err.hint) from None


def restore(trainer: Trainer, out: Path) -> int:
    try:
        ckpt = load_checkpoint(out / "checkpoint", opt_state_template=trainer.opt_states)
        params = restore_into(trainer.params, ckpt.params)
        stats = restore_into(trainer.stats, ckpt.stats) if trainer.stats else {}
    except CheckpointError as err:
        raise user_error(f"cannot resume from {out / 'checkpoint'}: {err.message}",
                         hint=err.hint) from None
    trainer.params = {k: jnp.asarray(v) for k, v in params.items()}
    trainer.stats = {k: jnp.asarray(v) for k, v in stats.items()}
    trainer.opt_states = jax.tree_util.tree_map(jnp.asarray, ckpt.opt_state)
    if "early_stop" in ckpt.meta:
        best, bad = json.loads(ckpt.meta["early_stop"])
        trainer.early = (best, int(bad))
    return ckpt.step
