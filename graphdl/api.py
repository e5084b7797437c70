"""The Python API: `load`, `loads`, `Model` and compiled graphs.

    model = graphdl.load("models/mlp.gdl", H=256)
    fn = model.compile("mlp")
    variables = fn.init(jax.random.key(0), x)   # {"params": {...}} (+ "stats")
    y = fn(variables, x)                          # eval mode
    y, stats = fn(variables, x, key=k, train=True)
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from graphdl.dims import FROM_NUMPY, TensorType
from graphdl.elaborate.check import Checked, build_graph_ir, check_program
from graphdl.elaborate.overrides import override_errors, value_text
from graphdl.elaborate.program import Program, unknown_override
from graphdl.elaborate.train import evaluation_for_batch
from graphdl.errors import CliError, Diagnostic, GdlError, UserError, did_you_mean
from graphdl.ir.graph import IR
from graphdl.ir.plan import TrainPlan
from graphdl.lower import LowerCtx, init_params, param_specs, run_ir
from graphdl.lower.compile import compile_fn
from graphdl.lower.context import NeedsKey
from graphdl.passes.pipeline import run_passes, surrogate_of
from graphdl.reading import FileRefused, read_gdl_text
from graphdl.runtime.checkpoint import CheckpointError, load_checkpoint, restore_into
from graphdl.runtime.data import SOURCES, DataError, Source, Vocabulary
from graphdl.runtime.export import exported_graph
from graphdl.runtime.gradvar import DEFAULT_KEYS, GradVar, measure_gradvar, write_gradvar
from graphdl.runtime.input_grads import parse_input_grads
from graphdl.runtime.sample import FilledInputs, SampleError, fill_inputs, input_specs
from graphdl.runtime.saved_vocab import SavedVocabError, run_vocabulary
from graphdl.runtime.train import (
    TrainResult,
    pick_plan,
    run_evaluation,
    run_training,
    with_overrides,
)
from graphdl.runtime.vectors import write_vectors
from graphdl.runtime.writing import OutputError


def load(path: str | Path, data_root: str | Path | None = None, *, rewrites: bool = True,
         **consts) -> Model:
    """Parse and check a .gdl file; constants override graph constants (`H=256`). With
    `data_root` (for untrusted files), every path the file names must lie inside it.
    `rewrites=False` skips the rewrite passes (as `graphdl --no-rewrites`)."""
    path = str(path)
    try:
        text = read_gdl_text(path)
    except FileRefused as err:
        raise OSError(f"{path} {err.reason}") from None
    return _checked_model(check_program(path, text, consts, SOURCES, data_root=data_root),
                          path, consts, rewrites)


def loads(source: str, name: str = "<string>", *, rewrites: bool = True, **consts) -> Model:
    """Like `load`, from source text."""
    return _checked_model(check_program(name, source, consts, SOURCES), name, consts, rewrites)


def _checked_model(checked: Checked, path: str, consts: dict, rewrites: bool = True) -> Model:
    for key in consts:
        problem = unknown_override(checked.program, key)
        if problem:
            raise TypeError(f"load(): {problem}")
    problems, rest = override_errors(checked.diagnostics)
    for key, message in problems:
        raise ValueError(f"{key}={value_text(key, consts[key])}: {message}")
    checked.diagnostics[:] = rest
    if not rewrites:  # run_passes reads the mark (graphdl/passes/pipeline.py: rewrites_on)
        for ir in checked.irs.values():
            mark_no_rewrites(ir)
        for plan in checked.trains:
            mark_no_rewrites(plan.ir)
            for ev in plan.evaluations:
                mark_no_rewrites(ev.ir)
    return Model(checked, path, rewrites)


def mark_no_rewrites(ir) -> None:
    """Mark an IR so that `run_passes` skips the rewrite passes on it."""
    if ir is not None:
        ir.graph["rewrites"] = False


def build_quietly(program: Program, name: str, types: dict[str, TensorType],
                  concrete: bool) -> tuple[IR, list[Diagnostic]]:
    """Graph `name`'s IR for these input types, with the errors of this build alone (the
    program's own diagnostics are kept as they were)."""
    diagnostics: list[Diagnostic] = []
    ir = build_graph_ir(program, name, types, diagnostics, concrete=concrete)
    return ir, diagnostics


def tensor_type(x) -> TensorType:
    dtype = FROM_NUMPY.get(str(jnp.result_type(x)))
    if dtype is None:
        raise TypeError(f"unsupported input dtype {jnp.result_type(x)}")
    return TensorType.make(dtype, tuple(np.shape(x)))


class Model:
    def __init__(self, checked: Checked, path: str, rewrites: bool = True):
        if checked.diagnostics:
            raise GdlError(checked.diagnostics, checked.program.sources)
        self.checked = checked
        self.program = checked.program
        self.path = path
        self.consts = dict(checked.program.overrides)  # what load(path, K=V) applied
        self.rewrites = rewrites  # False: run_passes skips the rewrite passes

    @property
    def graphs(self) -> list[str]:
        """The graphs (not cells: a cell runs only under scan)."""
        return [n for n, g in self.program.graphs.items() if g.kind == "graph"]

    def ir(self, name: str):
        """The IR of a graph (networkx, one `graphdl.ir.Node` per node), with symbolic dims."""
        self._require(name)
        return self.checked.irs[name]

    def _require(self, name: str) -> None:
        gdef = self.program.graphs.get(name)
        if gdef is not None and gdef.kind == "cell":
            raise KeyError(f"{name!r} is a cell (one time step); compile a graph that runs it "
                           f"with scan(xs, {name})")
        if gdef is None:
            raise KeyError(f"no graph named {name!r}; the graphs are {', '.join(self.graphs)}")

    def compile(self, name: str) -> CompiledGraph:
        self._require(name)
        return CompiledGraph(self, name)

    def value_and_grad(self, name: str):
        """A jitted (variables, *inputs, key=k) -> (loss, grads) for a scalar-valued graph."""
        fn = self.compile(name)

        def loss_fn(params, stats, inputs, key):
            ir, _ = fn.lowered(inputs)
            ctx = LowerCtx(params, stats, key, train=True)
            values = run_ir(ir, ctx, dict(zip(fn.arg_names, inputs)))
            out = ir.graph["outputs"][0]
            if jnp.ndim(values[out]) != 0:
                raise ValueError(f"{name} returns shape {jnp.shape(values[out])}, not a scalar loss")
            return values[surrogate_of(ir, out)]  # the loss, with score-function terms

        grad = compile_fn(jax.value_and_grad(loss_fn))

        def step(variables, *inputs, key=None):
            return grad(variables["params"], variables.get("stats", {}), inputs, key)
        return step

    @property
    def sources(self) -> dict[str, Source]:
        """The file's opened data sources by name, as the runtime takes them."""
        return {name: ref.source for name, ref in self.program.data.items()}

    def plan(self, train: str | None = None, overrides: dict | None = None) -> TrainPlan:
        """The train block `train` (default: the first) with `--set` overrides applied;
        overrides that `load` did not apply check the file again with them."""
        overrides = dict(overrides or {})
        model = self
        if any(k not in self.consts or self.consts[k] != v for k, v in overrides.items()):
            merged = {**self.consts, **overrides}
            text = self.program.sources[self.path]
            model = _checked_model(check_program(self.path, text, merged, SOURCES), self.path,
                                   merged, self.rewrites)
        return with_overrides(pick_plan(model.checked.trains, train, self.path), overrides)

    def resize_eval(self, plan: TrainPlan):
        """How the runtime gets an evaluation's IR for the split's last, partial batch:
        the front end builds it again (see graphdl.runtime.train.ResizeEval)."""
        build = functools.partial(evaluation_for_batch, self.program, plan.name)
        if self.rewrites:
            return build

        def unrewritten(ev, batch):
            resized = build(ev, batch)
            if resized is not None:
                mark_no_rewrites(resized.ir)
            return resized
        return unrewritten

    def _settings(self, caller: str, train: str | None, settings: dict) -> dict:
        """`epochs=5` as the override `train.epochs` (or `NAME.epochs` for block NAME),
        each key checked."""
        names = [p.name for p in self.checked.trains]
        settings = {k if k.split(".")[0] in (*names, "train") else f"{train or 'train'}.{k}": v
                    for k, v in settings.items()}
        for key in settings:
            problem = unknown_override(self.program, key)
            if problem:
                raise TypeError(f"{caller}(): {problem}")
        return settings

    def train(self, train: str | None = None, out: str | None = None, *, resume: bool = False,
              overwrite: bool = False, input_grads: str | None = None,
              devices: int | None = None, mesh: dict[str, int] | None = None, **settings):
        """Run the file's train block (`train` names one); settings override its own
        (`epochs=5`, `seed=1`). With `out`, write checkpoints and metrics there, like
        `graphdl run --out` (`resume`/`overwrite`/`input_grads`/`devices`/`mesh` as its
        flags; the gradient norms are also `result.input_grads`). `devices`: train
        data-parallel over that many devices (default: all); `mesh`: the axis sizes,
        `{"data": 2, "model": 2}` (default: the train block's `mesh`)."""
        settings = self._settings("train", train, settings)
        return train_model(self, train_name=train, out_dir=out, overrides=settings,
                           progress=False, resume=resume, overwrite=overwrite,
                           input_grads=input_grads, devices=devices, mesh=mesh)

    def gradvar(self, train: str | None = None, out: str | None = None, *,
                keys: int = DEFAULT_KEYS, seed: int | None = None,
                variables: dict | None = None, chunk: int | None = None,
                only: list[str] | None = None, **settings) -> GradVar:
        """Each gradient estimator's noise, measured (`graphdl gradvar`): for each
        stochastic node below the train block's loss and each estimator of its family,
        the mean, variance and SNR of the gradient over `keys` keys on the block's first
        batch. With `out` (a run folder), the parameters of its checkpoint when there is
        one, and OUT/gradvar.json written; `variables` (`{"params": ..., "stats": ...}`,
        any subset) are set over the parameters; `only` keeps the rows of these
        estimators (`["reinforce + moving_average(0.9)"]`, as the table writes them). Returns `result.rows` (one `Row` each:
        `node`, `estimator`, `mean_norm`, `variance`, `snr`, `stderr`, and per parameter
        `mean` and `variances`)."""
        settings = self._settings("gradvar", train, settings)
        plan = self.plan(train, settings)
        result = measure_gradvar(plan, self.sources, keys=keys, seed=seed,
                                 checkpoint=Path(out) / "checkpoint" if out else None,
                                 variables=variables, chunk=chunk, only=only)
        if out is not None:
            write_gradvar(Path(out), result)
        return result

    def sample(self, graph: str, n: int = 64, *, seed: int = 0,
               inputs: dict[str, np.ndarray] | None = None, data: str | None = None,
               out: str | Path | None = None, variables: dict | None = None) -> Samples:
        """Draw from graph `graph` with trained parameters (`graphdl sample`): the
        checkpoint in `out` (default `runs/<file stem>/`; only the parameters the graph
        uses), or `variables` (e.g. `model.train().variables`). Its inputs are `inputs`
        by name, else the first `n` examples of the split `data` ("digits.test") by field
        name, else N(0, 1) noise with the leading dim `n`; `~` in the graph draws with the
        key of `seed`. Raises CliError for what cannot be met (one line)."""
        if graph not in self.graphs:
            hint = did_you_mean(graph, self.graphs)
            raise CliError(f"--graph {graph}: no such graph; the graphs are "
                           f"{', '.join(self.graphs)}" + (f" ({hint})" if hint else ""))
        fn = self.compile(graph)
        given = {k: (f"--input {k}", np.asarray(v)) for k, v in (inputs or {}).items()}
        try:
            split = None if data is None else (data, self.split_arrays(data, "--data"))
            filled = fill_inputs(graph, input_specs(self.ir(graph)), n, seed=seed,
                                 given=given, data=split)
        except SampleError as err:
            raise CliError(str(err)) from None
        if variables is None:
            folder = Path(out) if out is not None else Path("runs") / Path(self.path).stem
            variables = checkpoint_variables(fn, filled.arrays, folder / "checkpoint",
                                             required=True, train_hint=self.path)
        output = fn(variables, *filled.arrays, key=jax.random.key(seed))
        if isinstance(output, tuple):
            raise CliError(f"`{graph}` returns {len(output)} outputs; sample draws one tensor "
                           "(return the samples alone)")
        return Samples(np.asarray(output), filled)

    def vocabulary(self, data: str, out: str | Path | None = None, side: str = "target",
                   flag: str = "--data") -> Vocabulary:
        """The vocabulary of the data source `data` as the run in `out` (default
        `runs/<file stem>/`) trained with it: the one saved beside its checkpoint, else
        the one the data give. `side`: "source" or "target" (of a parallel source)."""
        sources = self.sources
        if data not in sources:
            hint = did_you_mean(data, list(sources))
            raise CliError(f"{flag} {data}: {self.path} has no data source `{data}`; its data "
                           f"sources are {', '.join(sources) or 'none'}"
                           + (f" ({hint})" if hint else ""))
        try:
            found = run_vocabulary(sources[data], data, side, self._run_folder(out))
        except SavedVocabError as err:
            raise CliError(f"{flag} {data}: {err}") from None
        if found is None:
            raise CliError(f"{flag} {data}: {sources[data].describe} has no vocabulary; use a "
                           'text(...), parallel(...) or dataset("shakespeare") source')
        return found

    def vectors(self, param: str, data: str, out: str | Path | None = None,
                to: str | Path | None = None, side: str = "source") -> tuple[Path, int]:
        """Write the trained [V, D] parameter `param` of the checkpoint in `out` (default
        `runs/<file stem>/`) as word vectors, row i as the vector of token i of the
        vocabulary of `data` (`graphdl vectors`): to `to` (default OUT/vectors.txt), in
        the word2vec text format, or safetensors for a `.safetensors` name (see
        graphdl.runtime.vectors). Returns (the file, the rows written)."""
        folder = self._run_folder(out)
        checkpoint = folder / "checkpoint"
        if not (checkpoint / "checkpoint.safetensors").exists():
            raise CliError(f"no checkpoint in {checkpoint}; train first: graphdl run "
                           f"{self.path} --out {folder}")
        try:
            params = load_checkpoint(checkpoint).params
        except CheckpointError as err:
            raise CliError(f"cannot read the checkpoint in {checkpoint}: {err.message}") from None
        tables = [n for n, v in params.items() if np.ndim(v) == 2]
        if param not in params or np.ndim(params[param]) != 2:
            what = "no parameter" if param not in params else "no [V, D] parameter"
            hint = did_you_mean(param, tables)
            raise CliError(f"--param {param}: the checkpoint has {what} `{param}`; its "
                           f"[V, D] parameters are {', '.join(tables) or 'none'}"
                           + (f" ({hint})" if hint else ""))
        table = np.asarray(params[param], np.float32)
        vocab = self.vocabulary(data, folder, side)
        if len(vocab.tokens) != len(table):
            raise CliError(f"--data {data}: its vocabulary has {len(vocab.tokens):,} tokens, "
                           f"but {param} has {len(table):,} rows; give the data source the "
                           "table was trained with")
        path = Path(to) if to is not None else folder / "vectors.txt"
        try:
            written = write_vectors(path, vocab.tokens, table)
        except OutputError as err:
            raise CliError(str(err)) from None
        return path, written

    def _run_folder(self, out: str | Path | None) -> Path:
        return Path(out) if out is not None else Path("runs") / Path(self.path).stem

    def split_arrays(self, ref: str, flag: str) -> dict[str, np.ndarray]:
        """The arrays of a data split named `SRC.SPLIT` ("digits.test"), by field."""
        source, dot, split = ref.partition(".")
        sources = self.sources
        if not dot or source not in sources:
            known = ", ".join(f"{s}.{p}" for s, src in sources.items() for p in src.splits)
            hint = did_you_mean(source, list(sources)) if dot else None
            raise CliError(f"{flag} {ref}: expected SRC.SPLIT, a data source of {self.path} "
                           f"and one of its splits: {known or 'it has no data sources'}"
                           + (f" ({hint})" if hint else ""))
        if split not in sources[source].splits:
            raise CliError(f"{flag} {ref}: `{source}` has no split `{split}`; its splits are "
                           f"{', '.join(sources[source].splits)}")
        try:
            return sources[source].arrays(split)
        except DataError as err:
            raise CliError(f"{flag} {ref}: {err}") from None

    def export(self, name: str, shapes: list[str]):
        """(the `jax.export.Exported` of graph `name`, whether it takes a key); `shapes`
        as `graphdl export --input` gives them (`x=B,64`: B stays symbolic)."""
        if name not in self.graphs:
            raise CliError(f"--graph {name}: no such graph; the graphs are "
                           f"{', '.join(self.graphs)}")
        gdef = self.program.graphs[name]
        args = [(a.name, a.type.dtype, len(a.type.dims)) for a in gdef.args]

        def build_ir(types: dict[str, TensorType], concrete: bool):
            ir, problems = build_quietly(self.program, name, types, concrete)
            return ir, [d.message for d in problems]
        return exported_graph(name, args, shapes, build_ir)


class Samples:
    """What `Model.sample` drew: `output` (the graph's samples, [N, ...]) and `inputs`
    (the arrays it was fed, by name), with `given` (input name -> where it came from:
    `--input z`, `--data digits.test`) and `drawn` (the noise, e.g.
    `"z: f32[64, 2] ~ normal(0, 1)"`)."""

    def __init__(self, output: np.ndarray, filled: FilledInputs):
        self.output = output
        self.inputs = dict(zip(filled.names, filled.arrays))
        self.given = filled.given
        self.drawn = filled.drawn


def checkpoint_variables(fn: CompiledGraph, inputs, checkpoint: Path, *, required: bool,
                         train_hint: str = "FILE") -> dict:
    """The variables graph `fn` uses, from the checkpoint folder `checkpoint`: one graph
    of a trained model takes the parameters it uses (a GAN's generator runs from the GAN's
    checkpoint), and each of those must be there. Without a checkpoint: fresh parameters,
    or, when `required` and the graph has parameters, an error saying to train first."""
    variables = fn.init(jax.random.key(0), *inputs)
    if not (checkpoint / "checkpoint.safetensors").exists():
        if required and variables["params"]:
            raise GdlError([UserError(
                f"no checkpoint in {checkpoint}; `{fn.name}` needs the trained parameters",
                hint=f"train first: graphdl run {train_hint} --out {checkpoint.parent} "
                     "(or give --out the run folder that holds the checkpoint)").diagnostic])
        return variables
    try:
        loaded = load_checkpoint(checkpoint)
        restored = {"params": restore_into(variables["params"], loaded.params, subset=True)}
        if "stats" in variables:
            restored["stats"] = restore_into(variables["stats"], loaded.stats, subset=True)
    except CheckpointError as err:
        raise GdlError([UserError(f"cannot use the checkpoint in {checkpoint} for "
                                  f"`{fn.name}`: {err.message}", hint=err.hint).diagnostic]) \
            from None
    return restored


def train_model(model: Model, train_name: str | None = None, out_dir: str | Path | None = None,
                overrides: dict | None = None, progress: bool = True, resume: bool = False,
                max_steps: int | None = None, quiet: bool = False,
                overwrite: bool = False, tensorboard: bool = False,
                input_grads: str | None = None, devices: int | None = None,
                mesh: dict[str, int] | None = None) -> TrainResult:
    """Run a train block of `model` (`graphdl run`): the runtime's run_training, given the
    plan, the data and the source text it needs. `input_grads`: `"FIELD"` or
    `"FIELD:AXIS"`, as `--input-grads`; `devices`, `mesh`: as `--devices`, `--mesh`."""
    plan = model.plan(train_name, overrides)
    probe = None
    if input_grads is not None:
        try:
            probe = parse_input_grads(input_grads)
        except ValueError as err:
            raise CliError(str(err)) from None
    # the overrides are recorded with the checkpoint (replayed by --eval and --resume)
    return run_training(plan, model.sources, source_text=model.program.sources[model.path],
                        resize_eval=model.resize_eval(plan), out_dir=out_dir,
                        progress=progress, resume=resume, max_steps=max_steps, quiet=quiet,
                        overwrite=overwrite, overrides=overrides, tensorboard=tensorboard,
                        input_grads=probe, devices=devices, mesh=mesh)


def evaluate_model(model: Model, train_name: str | None = None, out_dir: str | Path = "",
                   overrides: dict | None = None, quiet: bool = False) -> TrainResult:
    """`graphdl run --eval`: a train block's evaluations on the checkpoint in `out_dir`."""
    plan = model.plan(train_name, overrides)
    return run_evaluation(plan, model.sources, out_dir, resize_eval=model.resize_eval(plan),
                          quiet=quiet)


class CompiledGraph:
    """A graph compiled for each input signature it is called with (cached)."""

    def __init__(self, model: Model, name: str):
        self.model, self.name = model, name
        gdef = model.program.graphs[name]
        self.arg_names = [a.name for a in gdef.args]
        self._cache: dict = {}
        self._specs: dict = {}  # id(ir) -> its parameters and statistics

    def lowered(self, inputs):
        sig = tuple(tensor_type(x) for x in inputs)
        if sig not in self._cache:
            if len(inputs) != len(self.arg_names):
                raise TypeError(f"{self.name} takes {len(self.arg_names)} inputs "
                                f"({', '.join(self.arg_names)}), got {len(inputs)}")
            program = self.model.program
            ir, diagnostics = build_quietly(program, self.name, dict(zip(self.arg_names, sig)),
                                            concrete=True)
            if diagnostics:
                raise GdlError(diagnostics, program.sources)
            ir = run_passes(ir, rewrites=None if self.model.rewrites else False)
            self._cache[sig] = (ir, compile_fn(self._run, static_argnames=("train", "stochastic")))
        return self._cache[sig]

    def _run(self, params, stats, inputs, key, train=False, stochastic="sample"):
        ir, _ = self.lowered(inputs)
        ctx = LowerCtx(params, stats, key, train, stochastic)
        values = run_ir(ir, ctx, dict(zip(self.arg_names, inputs)))
        outs = [values[o] for o in ir.graph["outputs"]]
        return (outs[0] if len(outs) == 1 else tuple(outs)), {**stats, **ctx.new_stats}

    def init(self, key, *inputs) -> dict:
        """Initial variables for these input shapes: {"params": ..., "stats": ...}."""
        ir, _ = self.lowered(inputs)
        if key is None or not hasattr(key, "dtype") or (
                not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and np.shape(key) != (2,)):
            if any(s["kind"] == "param" for s in param_specs([ir]).values()):
                raise TypeError(f"{self.name}.init needs a random key first: "
                                f"init(jax.random.key(0), {', '.join(self.arg_names)}); got {key!r}")
            key = jax.random.key(0)  # nothing random to draw
        params, stats = init_params([ir], key)
        return {"params": params, "stats": stats} if stats else {"params": params}

    def _check_variables(self, ir, variables) -> None:
        """Missing or misshapen parameters, named (extra entries are fine: a train block's
        variables hold every graph's parameters)."""
        if not isinstance(variables, dict) or "params" not in variables:
            got = (f"a dict with keys {', '.join(map(str, list(variables)[:4]))}"
                   if isinstance(variables, dict) else type(variables).__name__)
            raise TypeError(f"{self.name}: the first argument is the variables dict "
                            f"{{\"params\": ..., \"stats\": ...}} that init() returns, got {got}")
        if id(ir) not in self._specs:
            self._specs[id(ir)] = param_specs([ir])
        problems = []
        for name, spec in self._specs[id(ir)].items():
            part = "params" if spec["kind"] == "param" else "stats"
            have = variables.get(part, {})
            if name not in have:
                problems.append(f"variables[\"{part}\"] has no `{name}` ({spec['type']})")
            elif tuple(np.shape(have[name])) != spec["type"].concrete():
                problems.append(f"`{name}` has shape {tuple(np.shape(have[name]))}, but "
                                f"{spec['type']} is needed")
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise GdlError([UserError(
                f"{self.name}: " + "; ".join(problems[:3]) + more,
                hint="variables come from init(key, *inputs) or model.train(...).variables, "
                     "for inputs of these shapes").diagnostic])

    def __call__(self, variables, *inputs, key=None, train: bool = False,
                 stochastic: str = "sample"):
        ir, jitted = self.lowered(inputs)
        self._check_variables(ir, variables)
        stats = variables.get("stats", {})
        try:
            out, new_stats = jitted(variables["params"], stats, tuple(inputs), key,
                                    train=train, stochastic=stochastic)
        except NeedsKey:
            raise GdlError([UserError(f"{self.name} draws random numbers in this mode "
                                      "(dropout, augmentation or a sample); pass key=...").diagnostic]) from None
        return (out, new_stats) if train else out
