"""`graphdl sample FILE --graph G`: draw from a trained graph and write a PNG of the draws.

The graph runs from the checkpoint of `--out` (default `runs/<file stem>/`), taking only
the parameters it uses, so a GAN's generator draws from the GAN's checkpoint. Its inputs
come from `--input` files, the first n examples of `--data SRC.SPLIT`, or N(0, 1) noise
(graphdl.runtime.sample); the samples go to OUT/samples_<G>.npy and a scatter or grid of
them to OUT/samples_<G>.png (graphdl.runtime.sample_plot); `--color FIELD` colours a
scatter by an integer field of the `--data` split (an autoencoder's codes by class), or
draws a class map's true map (a segmentation's mask) beside the predicted one.
Every misuse is exit 2.

JAX is imported inside `cmd_sample`, never when the parser is built.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from graphdl.cli.inputs import load_checked, parse_overrides, replayed_overrides
from graphdl.errors import CliError

DEFAULT_N = 64


def add_sample_command(sub) -> None:
    p = sub.add_parser("sample", help="draw from a trained graph (a generator) and write a "
                                      "PNG of the samples")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--graph", metavar="NAME", required=True, help="the graph to draw from")
    p.add_argument("--n", type=int, metavar="N",
                   help=f"how many samples: the leading dim of the noise inputs, or the "
                        f"examples taken from --data (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=0,
                   help="the key of the noise inputs and of the graph's own `~` draws")
    p.add_argument("--out", metavar="DIR",
                   help="the run folder with the checkpoint, where the samples are written "
                        "(default: runs/<file stem>/)")
    p.add_argument("--png", metavar="PATH", help="the plot (default OUT/samples_<graph>.png)")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="give an input instead of drawing it")
    p.add_argument("--data", metavar="SRC.SPLIT",
                   help="feed the inputs named like the split's fields with its first N "
                        "examples (a reconstruction: each input is drawn beside its output)")
    p.add_argument("--real", metavar="SRC.SPLIT",
                   help="under a 2-D scatter, draw the split's real points in another colour")
    p.add_argument("--color", metavar="FIELD",
                   help="colour a 2-D scatter by an integer field of the --data split "
                        "(e.g. the class y of each code), with a legend of its values; for "
                        "integer class maps [N, H, W], the field's true maps drawn beside them")
    p.add_argument("--shape", metavar="H,W", help="draw [N, D] samples as H x W images")
    p.add_argument("--set", action="append", metavar="K=V",
                   help="override a graph constant (the checkpoint's recorded overrides "
                        "are replayed without it)")
    p.set_defaults(func=cmd_sample)


def _image_shape(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise CliError(f"--shape {text}: expected H,W, two positive integers, e.g. "
                       "--shape 28,28") from None
    if h < 1 or w < 1:
        raise CliError(f"--shape {text}: expected H,W, two positive integers, e.g. "
                       "--shape 28,28")
    return h, w


def cmd_sample(args) -> int:
    from graphdl.api import Model  # lazy: JAX
    from graphdl.cli.commands import read_input_flags
    from graphdl.runtime.sample import SampleError, check_n
    from graphdl.runtime.sample_plot import LayoutError, choose_layout, plot_samples
    from graphdl.runtime.writing import OutputError

    n = DEFAULT_N if args.n is None else args.n
    try:
        check_n(n)
    except SampleError as err:
        raise CliError(str(err)) from None
    image = _image_shape(args.shape)  # before anything is compiled
    if args.color is not None and args.data is None:
        raise CliError(f"--color {args.color}: needs --data SRC.SPLIT, the split whose field "
                       "colours the points")
    out = Path(args.out or Path("runs") / Path(args.file).stem)
    overrides = replayed_overrides(parse_overrides(args.set), out, "sample")
    model = Model(load_checked(args.file, overrides, args.data_root), args.file)
    given = {key: x for key, (_, x) in read_input_flags(args.input).items()}
    real = _real_points(model, args.real) if args.real else None
    drawn = model.sample(args.graph, n, seed=args.seed, inputs=given, data=args.data, out=out)
    samples = drawn.output
    if args.n is not None and not drawn.inputs and samples.shape[:1] != (n,):
        print(f"note: `{args.graph}` takes no inputs; its {samples.shape[0]} samples come "
              "from its own draws (--n does not apply)", file=sys.stderr)
    try:
        layout = choose_layout(samples.shape, image, integer=samples.dtype.kind in "iub")
    except LayoutError as err:
        raise CliError(f"`{args.graph}` returns {samples.dtype}{list(samples.shape)}: "
                       f"{err}") from None
    if real is not None and layout.kind != "scatter":
        raise CliError(f"--real {args.real}: `{args.graph}` returns {list(samples.shape)}, "
                       "not 2-D points [N, 2]; --real is drawn under a scatter")
    if args.color is not None and layout.kind not in ("scatter", "classes"):
        raise CliError(f"--color {args.color}: `{args.graph}` returns {list(samples.shape)}, "
                       "not 2-D points [N, 2] nor integer class maps [N, H, W]; --color "
                       "colours a scatter or draws the true class maps")
    labels = None
    if args.color is not None and layout.kind == "classes":
        labels = _true_maps(model, args.data, args.color, samples)
    elif args.color is not None:
        labels = _color_labels(model, args.data, args.color, len(samples))
    paired = _paired_input(drawn, samples, layout.kind == "classes")
    class_names = _class_names(model, args.data) if layout.kind == "classes" else None
    for line in drawn.drawn:
        print(line)
    png = Path(args.png) if args.png else out / f"samples_{args.graph}.png"
    npy = out / f"samples_{args.graph}.npy"
    try:
        out.mkdir(parents=True, exist_ok=True)
        png.parent.mkdir(parents=True, exist_ok=True)
        _write_npy(npy, samples)
        title = f"{Path(args.file).name}: {args.graph}, {len(samples)} samples, seed {args.seed}"
        plot_samples(samples, layout, png, title=title, inputs=paired, real=real,
                     real_name=args.real or "real", labels=labels, label_name=args.color,
                     class_names=class_names)
    except (OutputError, OSError) as err:
        raise CliError(str(err)) from None
    print(f"wrote {npy} ({samples.dtype}{list(samples.shape)})")
    coloured = "" if labels is None else f", coloured by {args.color}" \
        if layout.kind == "scatter" else f", beside the true {args.color}"
    print(f"wrote {png} ({layout.describe(len(samples), paired is not None)}{coloured})")
    return 0


def _real_points(model, ref: str) -> np.ndarray:
    """The first float field of 2-D points [M, 2] of the split `ref` (`x` first)."""
    arrays = model.split_arrays(ref, "--real")
    order = sorted(arrays, key=lambda k: k != "x")
    for name in order:
        a = arrays[name]
        if a.ndim == 2 and a.shape[1] == 2 and a.dtype.kind == "f":
            return a
    fields = ", ".join(f"{k} {list(v.shape[1:])}" for k, v in arrays.items())
    raise CliError(f"--real {ref}: no field of 2-D points [2] to draw; its fields are {fields}")


def _color_labels(model, ref: str, name: str, n: int) -> np.ndarray:
    """The integer field `name` of the split `ref`, one value per point: its first `n`
    examples, the ones `--data` fed the graph."""
    arrays = model.split_arrays(ref, "--data")
    if name not in arrays:
        fields = ", ".join(arrays)
        raise CliError(f"--color {name}: the split {ref} has no field `{name}`; its fields "
                       f"are {fields}")
    field = np.asarray(arrays[name])
    if field.ndim != 1 or field.dtype.kind not in "iub":
        raise CliError(f"--color {name}: the field {ref}.{name} is {field.dtype}"
                       f"{list(field.shape[1:])} per example; --color takes an integer "
                       "field with one value per example (a class)")
    if len(field) < n:
        raise CliError(f"--color {name}: the split {ref} has {len(field)} examples, fewer than "
                       f"the {n} points")
    return field[:n]


def _true_maps(model, ref: str, name: str, samples: np.ndarray) -> np.ndarray:
    """The integer field `name` of the split `ref` with the class maps' shape: the true
    maps of the first examples, the ones `--data` fed the graph."""
    arrays = model.split_arrays(ref, "--data")
    if name not in arrays:
        raise CliError(f"--color {name}: the split {ref} has no field `{name}`; its fields "
                       f"are {', '.join(arrays)}")
    field = np.asarray(arrays[name])
    if field.shape[1:] != samples.shape[1:] or field.dtype.kind not in "iub":
        raise CliError(f"--color {name}: the field {ref}.{name} is {field.dtype}"
                       f"{list(field.shape[1:])} per example, but the class maps are "
                       f"{samples.dtype}{list(samples.shape[1:])}; it must be integer maps "
                       "of that shape (the true classes)")
    if len(field) < len(samples):
        raise CliError(f"--color {name}: the split {ref} has {len(field)} examples, fewer than "
                       f"the {len(samples)} maps")
    return field[:len(samples)]


def _class_names(model, ref: str | None) -> list[str] | None:
    """The class names a data source knows (`shapes` has them), for the legend."""
    source = model.sources.get((ref or "").partition(".")[0])
    names = source.static_info.get("class_names") if source is not None else None
    return list(names) if isinstance(names, (list, tuple)) else None


def _paired_input(drawn, samples: np.ndarray, maps: bool = False) -> np.ndarray | None:
    """The input given from --data or --input with the output's shape (a reconstruction
    is drawn beside its input), else None. Beside class maps [N, H, W], an image
    [N, H, W] or [N, H, W, 1 or 3] of the same size."""
    for name in drawn.given:
        x = drawn.inputs[name]
        if x.shape == samples.shape and not maps:
            return x
        if maps and x.shape[:3] == samples.shape and (x.ndim == 3 or x.ndim == 4
                                                       and x.shape[3] in (1, 3)):
            return x
    return None


def _write_npy(path: Path, array: np.ndarray) -> None:
    import io

    from graphdl.runtime.writing import atomic_write
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
