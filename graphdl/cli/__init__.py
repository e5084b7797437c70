"""The `graphdl` command line: check, show, run, bench, export, gradvar."""

from graphdl.cli.main import main

__all__ = ["main"]
