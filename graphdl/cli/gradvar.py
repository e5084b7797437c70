"""`graphdl gradvar FILE`: the mean, variance and SNR of each gradient estimator's estimate.

The measuring is graphdl/runtime/gradvar.py's; this reads the flags, prints the table and
says where the json went. JAX is imported inside the command (see commands.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from graphdl.cli.inputs import load_checked, parse_overrides, replayed_overrides
from graphdl.errors import CliError


def add_gradvar_command(sub) -> None:
    p = sub.add_parser("gradvar", help="the mean, variance and SNR of each gradient "
                                       "estimator of each stochastic node, over N keys")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--train", metavar="NAME", help="which train block (default: the first)")
    p.add_argument("--keys", type=int, default=1000, metavar="N",
                   help="how many independent keys (default 1000)")
    p.add_argument("--out", metavar="DIR",
                   help="the run folder: its checkpoint's parameters when it has one, and "
                        "where gradvar.json goes (default: runs/<file stem>/)")
    p.add_argument("--set", action="append", metavar="K=V", help="override a constant or setting")
    p.add_argument("--seed", type=int, metavar="N",
                   help="the seed of the keys (default: the train block's)")
    p.set_defaults(func=cmd_gradvar)


def cmd_gradvar(args) -> int:
    from graphdl.api import Model  # lazy: JAX
    from graphdl.runtime.gradvar import (
        keys_problem,
        measure_gradvar,
        table_text,
        write_gradvar,
    )

    problem = keys_problem(args.keys)  # before anything is read
    if problem:
        raise CliError(problem)
    out = Path(args.out or Path("runs") / Path(args.file).stem)
    # the checkpoint's own overrides (a --set H=256 run has H=256 shapes), as --eval does
    overrides = replayed_overrides(parse_overrides(args.set), out, "gradvar")
    model = Model(load_checked(args.file, overrides, args.data_root), args.file)
    plan = model.plan(args.train, overrides)
    result = measure_gradvar(plan, model.sources, keys=args.keys, seed=args.seed,
                             checkpoint=out / "checkpoint",
                             progress=lambda row: print(f"  {row.node} {row.estimator}: "
                                                        f"{row.seconds:.1f} s", file=sys.stderr))
    print(table_text(result))
    path = write_gradvar(out, result)
    print(f"wrote {path}")
    return 0
