"""Train blocks: the training IR, its steps, settings and evaluations.

A train block becomes one IR whose inputs are the batch fields (`data.x`, `data.y`) and
whose outputs are each step's loss; every `evaluate` block becomes its own IR over the
evaluated split, with the train block's bindings rebuilt on that split's batch.
"""

from __future__ import annotations

import json

from graphdl.dims import TensorType, float_problem, int_problem
from graphdl.elaborate.binding import bind, signature
from graphdl.elaborate.build import Builder, Scope, new_builder
from graphdl.elaborate.calls import statement
from graphdl.elaborate.values import Const, Poison, Record, Setting, SplitRef, Tensor, describe
from graphdl.errors import Span, did_you_mean
from graphdl.ir.graph import node, nodes
from graphdl.ir.plan import (
    BatchPlan,
    CheckpointPlan,
    EarlyStopPlan,
    EvalPlan,
    OptimizerSpec,
    ScheduleSpec,
    StepPlan,
    TrainPlan,
)
from graphdl.ops.training import (
    DEFAULT_OPTIMIZER,
    MESH_AXES,
    OPTIMIZERS,
    REFUSED_PRECISIONS,
    STEP_SETTINGS,
    TRAIN_SETTINGS,
    int_range_problem,
)
from graphdl.parse import ast as A

UNITS = {"epoch": "epoch", "epochs": "epoch", "step": "step", "steps": "step"}


BATCH = signature("batch = 32, shuffle = false")


def batch_of(b: Builder, split_ref: SplitRef, args, kwargs, span, arg_spans, kw_spans,
             instance: str | None = None):
    """`digits.train(batch = 64, shuffle = true)` -> a record of input nodes (the forms
    table's call of a SplitRef; a split has no instance, so `instance` is unused)."""
    if b.scope.kind != "train":
        return b.error("data is read in a train block; graphs take it as arguments", span)
    bound = bind(b, f"{split_ref.source.name}.{split_ref.split}", BATCH, args, kwargs, span,
                 arg_spans, kw_spans)
    if bound is None:
        return Poison()
    batch, shuffle = bound["batch"], bound["shuffle"]
    if not (isinstance(batch, Const) and isinstance(batch.value, int) and batch.value > 0):
        return b.error("`batch` must be a positive integer", bound.span("batch"))
    problem = int_problem(batch.value, "`batch`", int32=True)
    if problem:
        return b.error(problem, bound.span("batch"))
    if not (isinstance(shuffle, Const) and isinstance(shuffle.value, bool)):
        return b.error("`shuffle` must be true or false", bound.span("shuffle"))
    return make_batch(b, split_ref, batch.value, shuffle.value, span)


def make_batch(b: Builder, split_ref: SplitRef, batch: int, shuffle: bool, span: Span):
    if b.g.graph.get("batches"):
        first = b.g.graph["batches"][0]
        return b.error(f"a train block reads one data split; this one already reads "
                       f"{first.source}.{first.split}", span,
                       hint="combine the sources into one npz, or train in two files")
    fields, inputs = {}, {}
    for name, f in split_ref.source.source.fields.items():
        t = TensorType.make(f.dtype, (batch, *f.shape))
        nid = b.node("input", [], [], {"name": f"data.{name}"}, t, span)
        b.g.graph["inputs"].append(nid)
        inputs[name] = nid
        fields[name] = Tensor(nid, t, f"`data.{name}` from {split_ref.source.name}.{split_ref.split}")
    b.g.graph.setdefault("batches", []).append(
        BatchPlan(split_ref.source.name, split_ref.split, batch, shuffle, inputs, span))
    return Record(fields)


def _int_setting(b, name, value, span, minimum=0, maximum=None):
    got = value.value if isinstance(value, Const) else None
    problem = int_range_problem(name, got, minimum, maximum)
    if problem is not None:
        shown = (f"{got!r}" if isinstance(got, (int, float)) and not isinstance(got, bool)
                 else json.dumps(got) if isinstance(got, str) else describe(value))
        b.error(f"{problem}, got {shown}", span)
        return None
    problem = int_problem(got, f"`{name}`")  # past an int64, no backend holds it
    if problem is not None:
        b.error(problem, span)
        return None
    return got


def _shared_statements(b: Builder, body: list, data_override: Record | None) -> dict:
    """Run a train block's bindings (not steps or evaluations); returns its settings."""
    settings: dict = {}
    for st in body:
        if isinstance(st, (A.Step, A.Evaluate, A.Checkpoint)):
            continue
        if isinstance(st, A.Over):
            b.error("`over` belongs inside a `step` block", st.span)
            continue
        if isinstance(st, A.ExprStmt) and _is_call_of(st.value, "early_stop"):
            settings["early_stop"] = _early_stop(b, st.value)
            continue
        if isinstance(st, A.ExprStmt):
            value = b.expr(st.value)
            if isinstance(value, Setting) and value.name == "early_stop":
                settings["early_stop"] = value
            elif not isinstance(value, Poison):
                b.error("this expression's value is not used", st.span,
                        hint="bind it to a name, or use a setting like early_stop(accuracy)")
            continue
        if data_override is not None and isinstance(st, A.Assign) and len(st.targets) == 1 \
                and _reads_a_split(b, st.value):
            b.bind(st.targets[0], data_override, st.span)  # evaluate: the batch is the eval split's
            continue
        if isinstance(st, (A.State, A.Param, A.Layer, A.Return)):
            keyword = {A.State: "state", A.Param: "param", A.Layer: "layer", A.Return: "return"}[type(st)]
            where = "inside a cell" if keyword == "state" else "in a graph or cell body"
            b.error(f"`{keyword}` is only allowed {where}", st.span)
            continue
        if isinstance(st, A.Assign) and st.targets == ["early_stop"]:
            b.error("early_stop is a statement, not a setting to assign", st.span,
                    hint="write `early_stop(accuracy, patience = 5)` with a metric of an "
                         "evaluate block")
            continue
        statement(b, st)
        if isinstance(st, A.Assign) and len(st.targets) == 1:
            name = st.targets[0]
            value = b.scope.values.get(name)
            if name == "mesh" and isinstance(value, Record):
                settings[name] = (value, st.span)
            elif isinstance(value, (Const, Setting)):
                if name in TRAIN_SETTINGS:
                    settings[name] = (value, st.span)
                elif did_you_mean(name, TRAIN_SETTINGS):
                    b.error(f"unknown setting `{name}`", st.span,
                            did_you_mean(name, TRAIN_SETTINGS))
            elif name in TRAIN_SETTINGS and \
                    TRAIN_SETTINGS[name].kind in ("int", "choice", "optimizer", "schedule"):
                b.error(f"`{name}` must be a constant setting, got {describe(value)}", st.span)
    return settings


def names_used(statements: list) -> set[str]:
    """Every name read anywhere in these statements."""
    found: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, A.Name):
            found.add(node.id)
        if isinstance(node, A.Node) or isinstance(node, (list, tuple)):
            children = node if isinstance(node, (list, tuple)) else vars(node).values()
            for child in children:
                if isinstance(child, (A.Node, list, tuple)):
                    visit(child)
    visit(statements)
    return found


def _reads_a_split(b: Builder, node) -> bool:
    """`digits.train(batch = 64)`: a call of a data source's split."""
    return (isinstance(node, A.Call) and isinstance(node.func, A.Field)
            and isinstance(node.func.value, A.Name) and node.func.value.id in b.program.data)


def _is_call_of(node, name: str) -> bool:
    return isinstance(node, A.Call) and isinstance(node.func, A.Name) and node.func.id == name


# the signature of SETTINGS_FORMS["early_stop"] in specials.py, bound here to the syntax:
# the metric is named, not computed (it is an output of an evaluate block)
EARLY_STOP = signature('metric: any, patience = 5, mode = "max"')


def _early_stop(b: Builder, call: A.Call) -> dict | None:
    """`early_stop(accuracy, patience = 5, mode = "max")`: the metric is named, not computed."""
    bound = bind(b, "early_stop", EARLY_STOP, call.args, {k.name: k.value for k in call.kwargs},
                 call.span, [a.span for a in call.args], {k.name: k.span for k in call.kwargs})
    if bound is None:
        return None
    metric = bound["metric"]
    if not isinstance(metric, A.Name):
        b.error("early_stop needs the name of a metric first, e.g. early_stop(accuracy)",
                bound.span("metric"))
        return None
    out = {"metric": metric.id, "patience": 5, "mode": "max", "span": call.span}
    for name in ("patience", "mode"):
        node = bound[name]
        if isinstance(node, Const):  # not given: the default
            continue
        value = b.expr(node)
        if not isinstance(value, Const):
            b.error(f"`{name}` of early_stop must be a constant", node.span)
            continue
        out[name] = value.value
    if out["mode"] not in ("max", "min"):
        b.error('early_stop mode must be "max" or "min"', call.span)
    return out


def _check_loss(b: Builder, value, span: Span) -> int | None:
    if isinstance(value, Poison):
        return None
    if not isinstance(value, Tensor):
        b.error(f"`loss` must be a scalar tensor, got {describe(value)}", span)
        return None
    if value.type.shape != () or not value.type.is_float():
        b.error(f"a train `loss` must be a scalar, but this is {value.type}", span,
                hint="reduce it explicitly, e.g. `loss = mean(...)`")
        return None
    return value.node


def build_train(program, tdef: A.TrainDef, diagnostics: list) -> TrainPlan | None:
    name = tdef.name or "train"
    b = new_builder(program, name, diagnostics)
    with b.in_scope(Scope("", "train")):
        settings = _shared_statements(b, tdef.body, None)
        steps: list[StepPlan] = []
        for st in tdef.body:
            if isinstance(st, A.Step):
                steps.append(_step(b, st))
        loss_value = b.scope.values.get("loss")
        if not steps:
            if "loss" not in b.scope.values:
                b.error("this train block has no `loss`", tdef.span,
                        hint="add `loss = mean(...)` and an `optimizer`, or `step` blocks")
            else:
                loss = _check_loss(b, loss_value, b.scope.where["loss"])
                if loss is not None:
                    opt, at = settings.get("optimizer", (None, tdef.span))
                    steps.append(StepPlan("train", loss, _optimizer(b, opt, at)))
        elif "loss" in b.scope.values and not isinstance(loss_value, Poison):
            b.error("with `step` blocks, each step has its own `loss`", b.scope.where["loss"])
        checkpoint = None
        for st in tdef.body:
            if isinstance(st, A.Checkpoint):
                every = b.expr(st.every)
                n = _int_setting(b, "checkpoint every", every, st.every.span, 1)
                if st.unit not in UNITS:
                    b.error(f"unknown unit `{st.unit}`", st.span, did_you_mean(st.unit, UNITS)
                            or "write `checkpoint every N steps` or `every N epochs`")
                elif n is not None:
                    checkpoint = CheckpointPlan(n, UNITS[st.unit])
        given = {key: _setting_value(b, key, *settings[key]) for key in settings
                 if key in TRAIN_SETTINGS
                 and TRAIN_SETTINGS[key].kind in ("int", "float", "choice", "schedule")}
        if "mesh" in settings:
            given["mesh"] = _mesh(b, *settings["mesh"])
        if given.get("precision") is not None:  # the precision pass reads it off the IR
            b.g.graph["precision"] = given["precision"]
    for _k, s in enumerate(steps):
        b.g.graph["outputs"].append(s.loss)
    batches = b.g.graph.get("batches", [])
    evaluations = [e for e in (_evaluate(program, tdef, st, diagnostics)
                               for st in tdef.body if isinstance(st, A.Evaluate)) if e]
    stop = _early_stop_plan(b, settings.get("early_stop"))
    if stop and not any(stop.metric in e.metrics for e in evaluations):
        known = [m for e in evaluations for m in e.metrics]
        b.error(f"early_stop watches `{stop.metric}`, but no evaluate block computes it",
                stop.span, did_you_mean(stop.metric, known) or
                "add it to an `evaluate on ... { }` block")
    if not batches and steps and "steps" not in settings:
        b.error("this train block reads no data, so it needs `steps = N`", tdef.span,
                hint="add `data = source.train(batch = 64, shuffle = true)` or `steps = 1000`")
    return TrainPlan(name, b.g, batches[0] if batches else None, steps, tdef.span,
                     epochs=given.get("epochs"), num_steps=given.get("steps"),
                     seed=given.get("seed"), clip_grad_norm=given.get("clip_grad_norm"),
                     weight_decay=given.get("weight_decay"), schedule=given.get("schedule"),
                     evaluations=evaluations, checkpoint=checkpoint, early_stop=stop,
                     mesh=given.get("mesh"), precision=given.get("precision"))


def _default_optimizer() -> OptimizerSpec:
    """No `optimizer` given: the default one with every keyword at its default."""
    sig = signature(OPTIMIZERS[DEFAULT_OPTIMIZER].signature)
    return OptimizerSpec(DEFAULT_OPTIMIZER, {a.name: a.default for a in sig})


def _optimizer(b: Builder, value, span: Span) -> OptimizerSpec:
    if isinstance(value, Setting) and value.kind == "optimizer":
        return OptimizerSpec(value.name, dict(value.kwargs))
    if value is not None:  # after the error the plan is never run; any optimizer will do
        b.error(f"`optimizer` must be an optimizer like adam(lr = 1e-3), got {describe(value)}",
                span)
    return _default_optimizer()


def _setting_value(b: Builder, name: str, value, span: Span):
    """A train setting's value as the plan holds it (None after an error)."""
    kind = TRAIN_SETTINGS[name].kind
    if kind == "int":
        return _int_setting(b, name, value, span, TRAIN_SETTINGS[name].minimum,
                            TRAIN_SETTINGS[name].maximum)
    if kind == "choice":
        return _choice_setting(b, name, value, span)
    if kind == "schedule":
        if isinstance(value, Setting) and value.kind == "schedule":
            return ScheduleSpec(value.name, dict(value.kwargs))
        b.error(f"`{name}` must be a schedule like cosine(lr = 1e-3), got {describe(value)}", span)
        return None
    if isinstance(value, Const) and isinstance(value.value, (int, float)) \
            and not isinstance(value.value, bool):
        problem = float_problem(value.value, f"`{name}`")
        if problem:
            b.error(problem, span)
            return None
        return value.value
    b.error(f"`{name}` must be a number, got {describe(value)}", span)
    return None


def _mesh(b: Builder, value, span: Span) -> dict[str, int] | None:
    """`mesh = {data = 2, model = 2}`: each mesh axis's number of devices."""
    example = "mesh = {data = 2, model = 2}"
    if not isinstance(value, Record):
        b.error(f"`mesh` must be a record of axis sizes like {example}, got "
                f"{describe(value)}", span)
        return None
    shape = {}
    for axis, size in value.fields.items():
        if axis not in MESH_AXES:
            b.error(f"unknown mesh axis `{axis}`; the mesh axes are {', '.join(MESH_AXES)}",
                    span, did_you_mean(axis, MESH_AXES))
            return None
        n = _int_setting(b, f"mesh.{axis}", size, span, 1)
        if n is None:
            return None
        shape[axis] = n
    return shape


def _choice_setting(b: Builder, name: str, value, span: Span) -> str | None:
    """A string setting (`precision = "bf16"`): one of its table entry's choices."""
    choices = TRAIN_SETTINGS[name].choices
    got = value.value if isinstance(value, Const) else None
    if isinstance(got, str) and got in choices:
        return got
    words = ", ".join(f'"{c}"' for c in choices)
    if not isinstance(got, str):
        b.error(f"`{name}` must be a string, one of {words}; got {describe(value)}", span)
    elif name == "precision" and got in REFUSED_PRECISIONS:
        b.error(f'precision "{got}" is not offered: {REFUSED_PRECISIONS[got]}', span,
                hint='write precision = "bf16" (or "f32", the default)')
    else:
        b.error(f'unknown {name} "{got}"; the choices are {words}', span,
                did_you_mean(got, choices) or _narrowest(name, got, choices)
                or f"write one of {words}")
    return None


def _narrowest(name: str, got: str, choices: tuple[str, ...]) -> str | None:
    """`fp8`, `float8_e4m3`: a float narrower than any offered -> the narrowest offered."""
    bits = "".join(c for c in got if c.isdigit())
    if name == "precision" and got[:1] in "fb" and bits and int(bits[:2]) < 16:
        return f"did you mean `{choices[-1]}`? it is the narrowest precision offered"
    return None


def _early_stop_plan(b: Builder, stop) -> EarlyStopPlan | None:
    if isinstance(stop, Setting):  # early_stop(...) reached other than as a statement
        b.error("early_stop needs the name of a metric first, e.g. early_stop(accuracy)",
                stop.span)
        return None
    if not stop:
        return None
    return EarlyStopPlan(stop["metric"], stop["patience"], stop["mode"], stop["span"])


def _step(b: Builder, st: A.Step) -> StepPlan:
    saved = dict(b.scope.values)
    over = None
    for s in st.body:
        if isinstance(s, A.Over):
            over = s.names
            for n in s.names:
                if n not in b.program.graphs and n not in b.program.std_graphs:
                    b.error(f"`over {n}`: no graph named `{n}` in this file", s.span,
                            did_you_mean(n, b.program.graphs))
        elif isinstance(s, (A.Step, A.Evaluate)):
            b.error("steps and evaluations cannot be nested in a step", s.span)
        else:
            statement(b, s)
    loss = None
    if "loss" in b.scope.values and b.scope.values["loss"] is not saved.get("loss"):
        loss = _check_loss(b, b.scope.values["loss"], b.scope.where["loss"])
    else:
        b.error(f"step `{st.name}` has no `loss`", st.span)
    opt = _optimizer(b, b.scope.values.get("optimizer"), st.span)
    own = {}
    for name in STEP_SETTINGS:
        value = b.scope.values.get(name)
        if name in b.scope.values and value is not saved.get(name):
            own[name] = _setting_value(b, name, value, b.scope.where.get(name, st.span))
    for s in st.body:
        if isinstance(s, A.Assign) and s.targets[0] in TRAIN_SETTINGS \
                and not TRAIN_SETTINGS[s.targets[0]].in_step:
            b.error(f"`{s.targets[0]}` is a setting of the whole train block, not of a step",
                    s.span, hint="move it out of the `step` block")
    b.scope.values = saved
    return StepPlan(st.name, loss if loss is not None else -1, opt, over, **own)


EVAL_BATCH = 256


def _evaluate(program, tdef: A.TrainDef, st: A.Evaluate, diagnostics,
              batch: int = EVAL_BATCH) -> EvalPlan | None:
    b = new_builder(program, f"evaluate {program.snippet(st.source.span).strip('`')}", diagnostics)
    with b.in_scope(Scope("", "train")):
        target = b.expr(st.source)
        if isinstance(target, Poison):
            return None
        if not isinstance(target, SplitRef):
            b.error(f"`evaluate on` needs a data split like digits.test, got {describe(target)}",
                    st.source.span)
            return None
        data = make_batch(b, target, batch, False, st.span)
        settings = _shared_statements(b, tdef.body, data)
        precision = settings.get("precision", (None,))[0]
        if isinstance(precision, Const) and precision.value in TRAIN_SETTINGS["precision"].choices:
            b.g.graph["precision"] = precision.value  # the model evaluates as it trains
        metrics = {}
        first_own = b.g.graph["next_id"]  # the nodes of the block's own lines come after
        for i, s in enumerate(st.body):
            statement(b, s)
            if not isinstance(s, A.Assign):
                continue
            used_later = names_used(st.body[i + 1:])
            for t in s.targets:
                v = b.scope.values.get(t)
                if not isinstance(v, Tensor) or t in used_later:
                    continue  # an intermediate binding, not a metric
                if v.type.shape != ():
                    b.error(f"metric `{t}` must be a scalar, but it is {v.type}", s.span,
                            hint="reduce it, e.g. with mean(...); a binding used by a later "
                                 "line of the block is an intermediate and may have any shape")
                else:
                    metrics[t] = v.node
        every, unit = 1, "epoch"
        if st.every is not None:
            every = _int_setting(b, "every", b.expr(st.every), st.every.span, 1) or 1
            if st.unit not in UNITS:
                b.error(f"unknown unit `{st.unit}`", st.span, did_you_mean(st.unit, UNITS))
            unit = UNITS.get(st.unit, "epoch")
        ratios = _ratio_metrics(b, metrics, first_own)
    b.g.graph["outputs"] = list(metrics.values()) + [i for r in ratios.values() for i in r]
    batches = b.g.graph.get("batches", [])
    return EvalPlan(target.source.name, target.split, every, unit, b.g,
                    batches[0] if batches else None, metrics, st.span, ratios)


def _ratio_metrics(b, metrics: dict[str, int], first_own: int) -> dict[str, tuple[int, int]]:
    """The metrics that are a `ratio_of_sums(num, den)`: name -> (num, den) node ids.

    Their sums run over the whole split only when the metric *is* the ratio; inside a
    larger expression (`1 - ratio_of_sums(...)`) it would be a per-batch ratio averaged over
    batches, which is the mistake the form exists to avoid, so that is an error."""
    ratios = {}
    for name, nid in metrics.items():
        n = node(b.g, nid)
        if n.op == "ratio_of_sums":
            ratios[name] = (n.inputs[0], n.inputs[1])
    for nid, n in nodes(b.g):
        if n.op == "ratio_of_sums" and nid >= first_own and nid not in metrics.values():
            b.error("ratio_of_sums(...) must be the whole right-hand side of a metric: its "
                    "sums run over the split only there", n.span,
                    hint="bind it to a metric of its own, e.g. iou = ratio_of_sums(hits, union)")
    return ratios


def evaluation_for_batch(program, train_name: str, ev: EvalPlan, batch: int) -> EvalPlan | None:
    """`ev` built again for batches of `batch` examples (the last, partial batch of its
    split): the IR's shapes are concrete, so another batch size is another IR."""
    for tdef in program.trains:
        if (tdef.name or "train") != train_name:
            continue
        for st in tdef.body:
            if isinstance(st, A.Evaluate) and st.span == ev.span:
                return _evaluate(program, tdef, st, [], batch)
    return None
