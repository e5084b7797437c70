"""`graphdl run`, `bench` and `export` (and `gradvar`, in gradvar.py): the commands that
compile and execute.

This module is imported for every command (it adds these to the parser), so what pulls
in JAX (graphdl.api, graphdl.runtime) is imported inside the commands that run: `graphdl
check` never imports JAX.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import numpy as np

from graphdl.cli.decode import (
    add_decode_args,
    decoded_rows,
    prompt_input,
    run_folder,
    source_vocabulary,
    write_decoded,
)
from graphdl.cli.gradvar import add_gradvar_command
from graphdl.cli.inputs import file_errors, load_checked, parse_overrides, replayed_overrides
from graphdl.dims import numpy_name
from graphdl.errors import CliError, GdlError, UserError
from graphdl.parse import ast as A
from graphdl.reading import open_regular
from graphdl.runtime.data import npy_size_problem


def add_runtime_commands(sub) -> None:
    p = sub.add_parser("run", help="train a file's train block, or evaluate its main graph")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--train", metavar="NAME", help="which train block (default: the first)")
    p.add_argument("--graph", metavar="NAME",
                   help="evaluate this graph (with --out's checkpoint) instead of training")
    p.add_argument("--set", action="append", metavar="K=V", help="override a constant or setting")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input array")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/<file stem>/)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh, replacing the checkpoint, metrics.jsonl and loss.png "
                        "of an earlier run in --out")
    p.add_argument("--steps", type=int, metavar="N", help="stop after N training steps")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files to OUT/tensorboard (tensorboardX)")
    p.add_argument("--input-grads", metavar="FIELD[:AXIS]",
                   help="write OUT/input_grads.png: the norm of d loss / d data.FIELD at each "
                        "position of AXIS (default 1), at the start and the end of training")
    p.add_argument("--eval", action="store_true", help="evaluate only (eval mode)")
    p.add_argument("--stochastic", choices=["sample", "mean"], default="sample")
    p.add_argument("--seed", type=int, default=0, help="the key for evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--devices", type=int, metavar="N",
                   help="train data-parallel over N devices, each batch split over them "
                        "(default: all; on a CPU, XLA_FLAGS=--xla_force_host_platform_"
                        "device_count=N simulates N)")
    p.add_argument("--mesh", metavar="AXIS=N,...",
                   help="the device mesh, e.g. data=2,model=2 (default: the train block's "
                        "`mesh`, else --devices along data)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="run as one of several processes (jax.distributed); process 0's "
                        "address (default: $JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, metavar="P",
                   help="how many processes the run has (default: $JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, metavar="I",
                   help="this process's number, 0 to P-1; process 0 writes the outputs "
                        "(default: $JAX_PROCESS_ID)")
    add_decode_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="front-end, compile and steady-state step times")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--train", metavar="NAME")
    p.add_argument("--set", action="append", metavar="K=V")
    p.add_argument("--steps", type=int, default=50, metavar="N")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="write a graph as StableHLO (jax.export)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--graph", metavar="NAME", required=True)
    p.add_argument("--input", action="append", metavar="NAME=SHAPE", default=[],
                   help="each input's shape, e.g. x=B,64 (a name keeps that dim symbolic)")
    p.add_argument("--out", metavar="FILE")
    p.set_defaults(func=cmd_export)

    add_gradvar_command(sub)


def _model(args):
    from graphdl.api import Model  # lazy: JAX
    overrides = parse_overrides(getattr(args, "set", None))
    replay = [f for f in ("eval", "resume") if getattr(args, f, False)]
    if replay:  # the overrides the checkpoint was trained with
        out = args.out or str(Path("runs") / Path(args.file).stem)
        overrides = replayed_overrides(overrides, out, f"--{replay[0]}")
    checked = load_checked(args.file, overrides, args.data_root)
    return Model(checked, args.file), overrides


def _start_devices(args) -> tuple[object, dict | None]:
    """Join the other processes of the run, if any (before JAX touches a device), and
    read --mesh. Returns (the processes or None, the mesh's axis sizes or None)."""
    from graphdl.runtime.devices import parse_mesh, processes_from, start_processes  # lazy: JAX
    mesh = parse_mesh(args.mesh) if args.mesh is not None else None
    if args.devices is not None and args.devices < 1:
        raise CliError(f"--devices {args.devices}: a run needs at least 1 device")
    processes = processes_from(args.coordinator, args.num_processes, args.process_id)
    if processes is not None:
        start_processes(processes)
    return processes, mesh


def cmd_run(args) -> int:
    if args.steps is not None and args.steps <= 0:  # before anything is read or written
        raise CliError(f"--steps {args.steps}: a run needs at least 1 step")
    processes, mesh = _start_devices(args)
    model, overrides = _model(args)
    one_graph = any(v is not None for v in (args.graph, args.input, args.prompt, args.decode))
    if model.checked.trains and not one_graph:
        from graphdl.api import evaluate_model, train_model  # lazy: JAX
        out = args.out or str(Path("runs") / Path(args.file).stem)
        if args.eval:
            result = evaluate_model(model, args.train, out, overrides, quiet=args.quiet)
            print(f"evaluated the checkpoint in {out}/checkpoint (step {result.steps})")
            return 0
        result = train_model(model, args.train, out, overrides, progress=not args.quiet,
                             resume=args.resume, max_steps=args.steps, quiet=args.quiet,
                             overwrite=args.overwrite, tensorboard=args.tensorboard,
                             input_grads=args.input_grads, devices=args.devices, mesh=mesh)
        if processes is not None and processes.index != 0:
            print(f"process {processes.index} of {processes.count}: trained "
                  f"{result.steps} steps (process 0 writes the outputs)", file=sys.stderr)
            return 0
        if result.interrupted is not None:
            return _interrupted(args, out, result)
        grads = f", {out}/input_grads.png" if result.input_grads else ""
        print(f"trained {result.steps} steps; wrote {out}/checkpoint, {out}/metrics.jsonl, "
              f"{out}/loss.png{grads}")
        return 0
    return evaluate_graph(model, args)


def _interrupted(args, out: str, result) -> int:
    """Stopped by SIGINT/SIGTERM at a step boundary: say where it saved and how to go on;
    the status is the shell's for that signal (130 for Ctrl-C, 143 for SIGTERM)."""
    name = signal.Signals(result.interrupted).name
    saved = f"saved {result.checkpoint}" if result.checkpoint else "no checkpoint was saved"
    again = " ".join(["graphdl run", args.file, *(["--out", out] if args.out else []),
                      *(["--train", args.train] if args.train else []),
                      *(f"--set {s}" for s in args.set or []), "--resume"])
    print(f"interrupted ({name}) at step {result.steps}; {saved}\n"
          f"continue with: {again}", file=sys.stderr)
    return 128 + result.interrupted


def _pick_graph(model, name):
    graphs = model.graphs
    if name:
        if name not in graphs:
            raise GdlError([UserError(f"--graph {name}: no such graph; the graphs are "
                                      f"{', '.join(graphs)}").diagnostic])
        return name
    if "main" in graphs:
        return "main"
    if len(graphs) == 1:
        return graphs[0]
    raise GdlError([UserError(f"{model.path} has several graphs ({', '.join(graphs)}); "
                              "choose one with --graph NAME").diagnostic])


NPY_MAGIC = b"\x93NUMPY"


def read_npy(key: str, path: str):
    """One --input array: a plain .npy file (no pickles), or a one-line CliError."""
    where = f"--input {key}={path}"
    with file_errors(where, ".npy", prefix="cannot read it ("), open_regular(path) as f:
        head = f.read(len(NPY_MAGIC))  # a FIFO or a device is refused, never read
    if head != NPY_MAGIC:
        kind = " (an .npz archive: save one array with numpy.save)" if head[:2] == b"PK" else ""
        raise CliError(f"{where}: not a .npy file{kind}",)
    problem = npy_size_problem(Path(path))  # before np.load allocates what a header claims
    if problem:
        raise CliError(f"{where}: {problem}")
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise CliError(f"{where}: holds Python objects (a pickled object array), not "
                           "numbers") from None
        raise CliError(f"{where}: not a valid .npy file ({err})") from None
    except OSError as err:
        raise CliError(f"{where}: not a valid .npy file ({err})") from None
    if x.dtype.kind not in "biuf":
        raise CliError(f"{where} has dtype {x.dtype}, which is not a number type")
    return x


def read_input_flags(items: list[str] | None, unknown=None) -> dict[str, tuple[str, np.ndarray]]:
    """The `--input NAME=FILE.npy` flags, read: NAME -> (FILE, array), in the order given.
    `unknown(NAME)` says why a name is not an input (or None when it is one)."""
    given: dict[str, tuple[str, np.ndarray]] = {}
    for item in items or []:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise CliError(f"--input {item}: expected NAME=FILE.npy")
        problem = unknown(key) if unknown is not None else None
        if problem:
            raise CliError(problem)
        if key in given:
            raise CliError(f"--input {key} is given twice")
        given[key] = (path, read_npy(key, path))
    return given


def _read_inputs(model, name, items) -> list:
    """The --input arrays of graph `name`, checked against its declared argument types.

    Rank, dtype, integer dims and the agreement of a symbolic dim (B) across the inputs
    are checked here, each a one-line error naming the file; anything subtler is left
    to the compiler's own diagnostic.
    """
    gdef = model.program.graphs[name]
    arg_names = [a.name for a in gdef.args]
    given = read_input_flags(items, lambda key: None if key in arg_names else (
        f"--input {key}: `{name}` has no input `{key}`; its inputs are {', '.join(arg_names)}"))
    missing = [n for n in arg_names if n not in given]
    if missing:
        raise CliError(f"`{name}` needs --input for {', '.join(missing)}, e.g. "
                       f"--input {missing[0]}=FILE.npy")
    consts = {c.name for c in gdef.consts}
    bound: dict[str, tuple[int, str]] = {}  # symbolic dim -> (size, where it was bound)
    out = []
    for a in gdef.args:
        path, x = given[a.name]
        want = a.type
        where = f"--input {a.name}={path}"
        declared = (f"`{name}` takes {a.name}: {model.program.snippet(want.span).strip('`')} "
                    f"({a.span})")
        if x.ndim != len(want.dims):
            raise CliError(f"{where} has shape {x.shape}, but {declared}")
        for axis, (size, dim) in enumerate(zip(x.shape, want.dims)):
            if isinstance(dim, A.Num) and isinstance(dim.value, int) and size != dim.value:
                raise CliError(f"{where} has shape {x.shape}, but {declared}: axis {axis} "
                               f"must be {dim.value}")
            if isinstance(dim, A.Name) and dim.id not in consts:
                if dim.id in bound and bound[dim.id][0] != size:
                    first, src = bound[dim.id]
                    raise CliError(f"{where} has shape {x.shape}, but {declared}, and "
                                   f"{dim.id} is {first} from {src}")
                bound.setdefault(dim.id, (size, where))
        dt = numpy_name(want.dtype)
        same_kind = (x.dtype.kind == "f" and dt.startswith(("float", "bfloat"))) or \
            (x.dtype.kind in "iu" and dt.startswith("int")) or (x.dtype.kind == "b" and dt == "bool")
        if not same_kind:
            raise CliError(f"{where} has dtype {x.dtype}, but {declared}")
        out.append(x.astype(dt) if dt != "bfloat16" else x.astype("float32"))
    return out


def cmd_run_eval_outputs(out_dir: Path, result) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = result if isinstance(result, tuple) else (result,)
    paths = []
    for i, r in enumerate(results):
        path = out_dir / (f"output_{i}.npy" if len(results) > 1 else "output.npy")
        np.save(path, np.asarray(r))
        paths.append(str(path))
    return paths


def evaluate_graph(model, args) -> int:
    import jax  # lazy: `graphdl check` never imports JAX
    name = _pick_graph(model, args.graph)
    # the vocabulary first: a bad --decode fails before anything compiles
    vocab = source_vocabulary(model, args.decode, "target", run_folder(model, args)) \
        if args.decode else None
    inputs = prompt_input(model, name, args) if args.prompt is not None else \
        _read_inputs(model, name, args.input)
    from graphdl.api import checkpoint_variables  # lazy: JAX
    fn = model.compile(name)
    ckpt = Path(args.out or Path("runs") / Path(args.file).stem) / "checkpoint"
    variables = checkpoint_variables(fn, inputs, ckpt, required=False)
    if not (ckpt / "checkpoint.safetensors").exists() and variables["params"] \
            and not args.quiet:
        print(f"note: no checkpoint in {ckpt}; `{name}` runs with freshly initialised "
              "parameters", file=sys.stderr)
    result = fn(variables, *inputs, key=jax.random.key(args.seed), stochastic=args.stochastic)
    out_dir = Path(args.out or Path("runs") / Path(args.file).stem)
    paths = cmd_run_eval_outputs(out_dir, result)
    if vocab is not None:
        paths.append(write_decoded(decoded_rows(result, vocab, name, args.decode), out_dir))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr if vocab is not None else sys.stdout)
    return 0


def cmd_bench(args) -> int:
    from graphdl.api import Model  # lazy: JAX
    from graphdl.runtime.bench import bench_plan
    overrides = parse_overrides(args.set)
    t0 = time.perf_counter()  # the front end alone, as `graphdl check` runs it
    checked = load_checked(args.file, overrides, args.data_root)
    front = time.perf_counter() - t0
    model = Model(checked, args.file)
    bench_plan(model.plan(args.train, overrides), model.sources, front, args.steps)
    return 0


def cmd_export(args) -> int:
    from graphdl.runtime.export import mlir_text  # lazy: JAX
    model, _ = _model(args)
    out = args.out or f"{Path(args.file).stem}.{args.graph}.mlir"
    exported, _ = model.export(args.graph, args.input)
    Path(out).write_bytes(mlir_text(exported))
    print(f"wrote {out}", file=sys.stdout)
    return 0
