"""`graphdl vectors FILE --param NAME --data SRC`: a trained embedding table written as
word vectors, one per token of the data source's vocabulary (the one saved beside the
checkpoint), in the word2vec text format or safetensors; the file loads back with
`vectors(...)`. The work is `Model.vectors` (graphdl/api.py); JAX is imported inside
the command (see commands.py).
"""

from __future__ import annotations

from graphdl.cli.inputs import load_checked


def add_vectors_command(sub) -> None:
    p = sub.add_parser("vectors", help="write a trained [V, D] embedding table as word "
                                       "vectors (word2vec text, or safetensors)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--param", metavar="NAME", required=True,
                   help="the [V, D] parameter to write, by its checkpoint name (lm.E)")
    p.add_argument("--data", metavar="SRC", required=True,
                   help="the data source whose vocabulary names the rows")
    p.add_argument("--side", choices=["source", "target"], default="source",
                   help="which vocabulary of a parallel source (default: source)")
    p.add_argument("--out", metavar="DIR",
                   help="the run folder that holds the checkpoint (default: runs/<file stem>/)")
    p.add_argument("--to", metavar="PATH",
                   help="the file to write (default: OUT/vectors.txt); a name ending in "
                        ".safetensors writes that format")
    p.set_defaults(func=cmd_vectors)


def cmd_vectors(args) -> int:
    from graphdl.api import Model  # lazy: JAX
    model = Model(load_checked(args.file, {}, args.data_root), args.file)
    path, rows = model.vectors(args.param, args.data, out=args.out, to=args.to, side=args.side)
    table = len(model.vocabulary(args.data, args.out, args.side).tokens)
    left = f" ({table - rows:,} tokens with whitespace left out: the text format cannot " \
        "hold them; write .safetensors to keep them)" if rows != table else ""
    print(f"wrote {path}: {rows:,} vectors of `{args.param}`{left}")
    return 0
