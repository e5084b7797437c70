"""`graphdl translate FILE "a sentence"` and `graphdl translate FILE --split SRC.SPLIT`:
a trained encoder-decoder turns source sentences into target sentences.

The translating graph (`--graph`, default `translate`) takes the source token ids
`x: i32[B, P]` and, optionally, their lengths `n: i32[B]` (for `scan(..., lengths = n)`),
and returns target ids `i32[B, N]` (`generate(...).out`). It runs from the checkpoint of
`--out` (default `runs/<file stem>/`). The ids go through the vocabularies of the file's
`parallel` source (`--data`, default the file's one source with a vocabulary), read by
`source_vocabulary` of graphdl/cli/decode.py. `--beam K` sets the graph's constant `K`
(write `pick = beam(K)` in it). With a sentence, the translation is printed; with
`--split`, the first `--n` sentences of that split are translated in batches, their
corpus BLEU (graphdl/runtime/bleu.py) and a few examples are printed, and every
(source, reference, hypothesis) goes to OUT/translations_<graph>.tsv.

Every misuse is a one-line error with exit 2. JAX is imported inside `cmd_translate`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from graphdl.cli.decode import decoded_rows, source_vocabulary
from graphdl.cli.inputs import load_checked, parse_overrides, replayed_overrides
from graphdl.dims import numpy_name
from graphdl.errors import CliError, did_you_mean
from graphdl.parse import ast as A

DEFAULT_GRAPH = "translate"
BATCH = 256  # sentences per call in --split mode (the last batch is padded to it)
EXAMPLES = 5  # shown under the BLEU score
UNK, UNK_MARK = "<unk>", "\u2047"


def add_translate_command(sub) -> None:
    p = sub.add_parser("translate", help="translate a sentence, or a data split with its "
                                         "BLEU, with a trained encoder-decoder")
    p.add_argument("file", metavar="FILE")
    p.add_argument("sentence", metavar="SENTENCE", nargs="?",
                   help="the source sentence (or give --split)")
    p.add_argument("--graph", metavar="NAME",
                   help=f"the translating graph: source ids x: i32[B, P] (and optionally "
                        f"lengths n: i32[B]) in, target ids out (default `{DEFAULT_GRAPH}`)")
    p.add_argument("--data", metavar="SRC",
                   help="the parallel source whose vocabularies encode and decode (default: "
                        "the file's one source with a vocabulary)")
    p.add_argument("--out", metavar="DIR",
                   help="the run folder with the checkpoint, where --split writes "
                        "(default: runs/<file stem>/)")
    p.add_argument("--beam", type=int, metavar="K",
                   help="beam width: sets the graph's constant K (pick = beam(K))")
    p.add_argument("--split", metavar="SRC.SPLIT",
                   help="translate a split of the parallel source and print its BLEU")
    p.add_argument("--n", type=int, metavar="N",
                   help="--split: translate its first N sentences (default all)")
    p.add_argument("--set", action="append", metavar="K=V",
                   help="override a graph constant (the checkpoint's recorded overrides "
                        "are replayed without it)")
    p.set_defaults(func=cmd_translate)


def cmd_translate(args) -> int:
    import jax  # lazy: JAX

    from graphdl.api import checkpoint_variables
    from graphdl.runtime.bleu import corpus_bleu

    if (args.sentence is None) == (args.split is None):
        raise CliError("give a SENTENCE to translate, or --split SRC.SPLIT to translate a "
                       "held-out split and score it" if args.sentence is None else
                       "give a SENTENCE or --split SRC.SPLIT, not both")
    if args.n is not None and (args.split is None or args.n < 1):
        raise CliError(f"--n {args.n}: " + ("needs --split SRC.SPLIT" if args.split is None
                                            else "translate at least 1 sentence"))
    if args.beam is not None and args.beam < 1:
        raise CliError(f"--beam {args.beam}: a beam keeps at least 1 hypothesis")
    graph = args.graph or DEFAULT_GRAPH
    out = Path(args.out or Path("runs") / Path(args.file).stem)
    overrides = replayed_overrides(parse_overrides(args.set), out, "translate")
    model = _load(args, overrides, graph)
    if args.beam is not None:
        if "K" not in [c.name for c in model.program.graphs[graph].consts]:
            raise CliError(f"--beam {args.beam}: `{graph}` has no constant K to set; declare "
                           f"`graph {graph}[K = 1](...)` and decode with pick = beam(K)")
        model = _load(args, {**overrides, f"{graph}.K": args.beam}, graph)
    token_arg, with_lengths = _signature(model, graph)
    data = _data_source(model, args.data)
    # the vocabularies saved beside the checkpoint: the ids the model was trained with
    src_vocab = source_vocabulary(model, data, "source", out, flag="--data")
    tgt_vocab = source_vocabulary(model, data, "target", out, flag="--data")

    fn = model.compile(graph)
    width = token_arg.type.dims[1]
    fixed = width.value if isinstance(width, A.Num) else None
    key = jax.random.key(0)
    variables = None

    def run(x: np.ndarray, n: np.ndarray) -> list[str]:
        nonlocal variables
        inputs = [x.astype(numpy_name(token_arg.type.dtype))]
        if with_lengths:
            inputs.append(n.astype(np.int32))
        if variables is None:
            variables = checkpoint_variables(fn, inputs, out / "checkpoint", required=True,
                                             train_hint=args.file)
        return decoded_rows(fn(variables, *inputs, key=key), tgt_vocab, graph, data)

    if args.sentence is not None:
        ids, unknown = src_vocab.encode(args.sentence)
        if len(ids) == 0:
            raise CliError(f"{args.sentence!r} holds no words to translate")
        if fixed is not None and len(ids) > fixed:
            raise CliError(f"the sentence has {len(ids)} tokens, but `{graph}` reads at most "
                           f"{fixed} ({_shown(token_arg)}); give a shorter sentence")
        if unknown:
            every = "all" if unknown == len(ids) else f"{unknown}"
            print(f"note: {every} of its {len(ids)} tokens are not in the source vocabulary "
                  f"of `{data}` and read as <unk>", file=sys.stderr)
        x = np.zeros((1, fixed or len(ids)), np.int32)
        x[0, : len(ids)] = ids
        print(run(x, np.array([len(ids)]))[0])
        return 0

    arrays = model.split_arrays(args.split, "--split")
    source_name, _, split = args.split.partition(".")
    if source_name != data:
        raise CliError(f"--split {args.split}: the vocabularies are `{data}`'s; give a split "
                       f"of `{data}` (or --data {source_name})")
    sentences = model.sources[data].info.get("sentences", {}).get(split)
    if sentences is None or "x" not in arrays:
        raise CliError(f"--split {args.split}: `{data}` is not a parallel(...) source; "
                       "--split scores a split of sentence pairs")
    x_all = np.asarray(arrays["x"])
    lengths = np.asarray(arrays.get("lengths", (x_all != 0).sum(1)))
    count = len(x_all) if args.n is None else min(args.n, len(x_all))
    if fixed is not None and x_all.shape[1] != fixed:
        raise CliError(f"--split {args.split}: its sentences are padded to {x_all.shape[1]} "
                       f"tokens, but `{graph}` reads {_shown(token_arg)}")
    hypotheses: list[str] = []
    for start in range(0, count, BATCH):
        stop = min(start + BATCH, count)
        x = np.zeros((BATCH, x_all.shape[1]), np.int32)  # one shape: one compilation
        n = np.ones((BATCH,), np.int32)
        x[: stop - start], n[: stop - start] = x_all[start:stop], lengths[start:stop]
        hypotheses += run(x, n)[: stop - start]
    pairs = sentences[:count]
    score = corpus_bleu([scored_text(h) for h in hypotheses], [ref for _, ref in pairs])
    beam = f", beam {args.beam}" if args.beam else ""
    print(f"{args.split}: {count} sentences, `{graph}`{beam}: {score}")
    for (src, ref), hyp in list(zip(pairs, hypotheses))[:EXAMPLES]:
        print(f"  source:     {src}\n  reference:  {ref}\n  hypothesis: {hyp}")
    _write(out, graph, args, pairs, hypotheses, score)
    return 0


def scored_text(hypothesis: str) -> str:
    """A hypothesis as BLEU reads it: 13a would cut "<unk>" into "< unk >", three tokens
    for one word the model did not know; it is one token that matches nothing ("⁇", as
    sentencepiece shows an unknown piece)."""
    return " ".join(UNK_MARK if w == UNK else w for w in hypothesis.split(" "))


def _load(args, overrides: dict, graph: str):
    from graphdl.api import Model
    model = Model(load_checked(args.file, overrides, args.data_root), args.file)
    if graph not in model.graphs:
        hint = did_you_mean(graph, model.graphs)
        raise CliError(f"--graph {graph}: {args.file} has no graph `{graph}`; its graphs are "
                       f"{', '.join(model.graphs)}" + (f" ({hint})" if hint else ""))
    return model


def _signature(model, graph: str):
    """The token argument of `graph` and whether it takes lengths as well."""
    gdef = model.program.graphs[graph]
    args = list(gdef.args)

    def integer(a, rank: int) -> bool:
        return (numpy_name(a.type.dtype).startswith(("int", "uint"))
                and len(a.type.dims) == rank)

    if not args or len(args) > 2 or not integer(args[0], 2) or (
            len(args) == 2 and not integer(args[1], 1)):
        shown = ", ".join(_shown(a) for a in args) or "no arguments"
        raise CliError(f"--graph {graph}: `{graph}` takes ({shown}), but a translating graph "
                       "takes the source ids and optionally their lengths: "
                       "(x: i32[B, P]) or (x: i32[B, P], n: i32[B])")
    return args[0], len(args) == 2


def _shown(arg) -> str:
    dims = ", ".join(str(d.value) if isinstance(d, A.Num) else getattr(d, "id", "?")
                     for d in arg.type.dims)
    return f"{arg.name}: {arg.type.dtype}[{dims}]"


def _data_source(model, name: str | None) -> str:
    if name is not None:
        return name
    with_vocab = [n for n, s in model.sources.items() if s.info_needs_load]
    if len(with_vocab) != 1:
        found = ", ".join(with_vocab) or "none"
        raise CliError(f"{model.path}: choose the parallel source with --data SRC (sources "
                       f"with a vocabulary: {found})")
    return with_vocab[0]


def _write(out: Path, graph: str, args, pairs, hypotheses, score) -> None:
    from graphdl.runtime.writing import OutputError, atomic_write
    lines = ["source\treference\thypothesis\n"] + [
        f"{src}\t{ref}\t{hyp}\n" for (src, ref), hyp in zip(pairs, hypotheses)]
    text = "".join(lines).encode("utf-8")
    summary = {"split": args.split, "graph": graph, "beam": args.beam, "sentences": len(pairs),
               "bleu": score.score, "precisions": list(score.precisions),
               "brevity_penalty": score.brevity_penalty, "hyp_len": score.hyp_len,
               "ref_len": score.ref_len, "signature": "nrefs:1|case:mixed|eff:no|tok:13a|"
                                                      "smooth:exp (graphdl.runtime.bleu)"}
    name = graph + (f"_beam{args.beam}" if args.beam else "")
    tsv, js = out / f"translations_{name}.tsv", out / f"bleu_{name}.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(tsv, lambda f: f.write(text))
        atomic_write(js, lambda f: f.write(json.dumps(summary, indent=1).encode()))
    except (OutputError, OSError) as err:
        raise CliError(str(err)) from None
    print(f"wrote {tsv}, {js}")
