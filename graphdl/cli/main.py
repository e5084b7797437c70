"""The `graphdl` command: check, show, run, bench, export, gradvar, sample, vectors, translate.

User errors print as compiler diagnostics and exit 2; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys

from graphdl.cli.commands import add_runtime_commands
from graphdl.cli.inputs import (
    add_data_root,
    load_checked,
    override_problem,
    parse_overrides,
    read_source,
)
from graphdl.cli.sample import add_sample_command
from graphdl.cli.show import show
from graphdl.cli.translate import add_translate_command
from graphdl.cli.vectors import add_vectors_command
from graphdl.elaborate.check import check_program
from graphdl.elaborate.overrides import override_errors
from graphdl.errors import CliError, GdlError, render_all
from graphdl.passes.pipeline import PASS_NAMES, run_passes
from graphdl.runtime.data import SOURCES

EXIT_OK, EXIT_RUNTIME, EXIT_USER = 0, 1, 2


def cmd_check(args) -> int:
    status = EXIT_OK
    for path in args.files:
        overrides = parse_overrides(args.set)
        checked = check_program(path, read_source(path), overrides, SOURCES,
                                data_root=args.data_root)
        problem = override_problem(checked, overrides)
        _, diagnostics = override_errors(checked.diagnostics)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            status = EXIT_USER
        if not diagnostics and not problem:
            diagnostics = pass_diagnostics(checked)
        if diagnostics:
            print(render_all(diagnostics, checked.program.sources), file=sys.stderr)
            status = EXIT_USER
        elif not problem:
            n = len(checked.irs)
            print(f"{path}: ok ({n} graph{'s' if n != 1 else ''}, "
                  f"{len(checked.trains)} train block{'s' if len(checked.trains) != 1 else ''})")
    return status


def pass_diagnostics(checked) -> list:
    """The errors the IR passes find (the surrogate pass's need the loss: an `enumerate`
    support too large, two enumerated nodes in one term, ...; the precision pass's: a dtype
    the bf16 policy would break), from running the pipeline on every graph and train
    block of a file that checked clean."""
    found = []
    irs = list(checked.irs.values()) + [plan.ir for plan in checked.trains]
    for ir in irs:
        try:
            run_passes(ir)
        except GdlError as err:
            found += [d for d in err.diagnostics if d not in found]
    return found


def cmd_show(args) -> int:
    checked = load_checked(args.file, parse_overrides(args.set), args.data_root)
    return show(checked, args)


def version_text() -> str:
    """`graphdl 0.1.0 (jax 0.4.35)`: from the installed distributions' metadata, so that
    no command imports JAX to say it (the package's `__version__` when not installed)."""
    from importlib import metadata

    import graphdl
    try:
        ours = metadata.version("graphdl")
    except metadata.PackageNotFoundError:
        ours = graphdl.__version__
    try:
        jax = f"jax {metadata.version('jax')}"
    except metadata.PackageNotFoundError:
        jax = "jax not installed"
    return f"graphdl {ours} ({jax})"


class VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphdl", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)  # `sample --n` is not `--no-rewrites`
    parser.add_argument("--version", action=VersionAction,
                        help="print graphdl's version and JAX's, and exit")
    parser.add_argument("--debug", action="store_true", help="show internal tracebacks")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="compile everything afresh: do not read or write the persistent "
                             "compilation cache ($GRAPHDL_CACHE/xla, else ~/.cache/graphdl/xla)")
    parser.add_argument("--no-rewrites", action="store_true",
                        help="skip the rewrite passes (fuse_dense, pool_reshape, "
                             "conv_lowering, scan_remat): every op lowered as written")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="parse and type-check .gdl files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--set", action="append", metavar="K=V",
                   help="override a graph constant or a train setting (see `graphdl run -h`)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("show", help="print a graph's nodes with their shapes, and its parameters")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--graph", metavar="NAME", help="the graph to show (default: all)")
    p.add_argument("--params", action="store_true", help="list parameters with their shapes")
    p.add_argument("--ir", action="store_true", help="print the IR text form")
    p.add_argument("--after", metavar="PASS", choices=PASS_NAMES,
                   help="print the IR after this pass of the pipeline "
                        f"({', '.join(PASS_NAMES)}); implies --ir")
    p.add_argument("--train", metavar="NAME",
                   help="show a train block's IR (and its evaluations') instead of the graphs")
    p.add_argument("--format", choices=["text", "dot", "svg", "png"], default="text")
    p.add_argument("--out", metavar="FILE",
                   help="where to write the drawing (dot: default stdout; svg/png: NAME.FORMAT)")
    p.add_argument("--set", action="append", metavar="K=V",
                   help="override a graph constant or a train setting (see `graphdl run -h`)")
    p.set_defaults(func=cmd_show)

    add_runtime_commands(sub)
    add_sample_command(sub)
    add_vectors_command(sub)
    add_translate_command(sub)
    for command in sub.choices.values():  # every command
        add_data_root(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.no_compile_cache:  # read by graphdl/lower/compile.py (CACHE_SWITCH) at the first compile
        os.environ["GRAPHDL_COMPILE_CACHE"] = "off"
    if args.no_rewrites:  # read by graphdl/passes/pipeline.py (REWRITES_SWITCH) at each run_passes
        os.environ["GRAPHDL_REWRITES"] = "off"
    try:
        return args.func(args)
    except GdlError as err:
        print(render_all(err.diagnostics, err.sources), file=sys.stderr)
        return EXIT_USER
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:  # `graphdl show ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an internal error: say so plainly, traceback on --debug
        if args.debug:
            raise
        print(f"internal error: {type(err).__name__}: {err}\n"
              "this is a bug in graphdl; rerun with --debug for the traceback", file=sys.stderr)
        return EXIT_RUNTIME




if __name__ == "__main__":
    sys.exit(main())
