"""`graphdl run --graph NAME --decode DATA [--prompt TEXT]`: token ids in and out as text.

A language model's sampler returns token ids; `--decode DATA` turns them into text with
the vocabulary of the file's data source `DATA` (the one the model was trained on, so the
ids mean the same), prints one sample per row and writes OUT/output.txt. `--prompt TEXT`
goes the other way: TEXT, tokenized like that source's data, becomes the graph's one
integer argument. Every misuse is a one-line CliError (exit 2) that says what to do.

Nothing here imports JAX. The vocabulary is the one the training run saved beside its
checkpoint (OUT/checkpoint/vocab/DATA.json), else read from the source (loading its data).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from graphdl.dims import numpy_name
from graphdl.errors import CliError, did_you_mean
from graphdl.runtime.data import Vocabulary
from graphdl.runtime.saved_vocab import SavedVocabError, run_vocabulary

#: Sources that have a vocabulary, for the hint of a source without one.
_WITH_VOCABULARY = 'text(...), parallel(...) or dataset("shakespeare")'


def add_decode_args(parser) -> None:
    parser.add_argument("--decode", metavar="DATA",
                        help="print the graph's output (token ids) as text through the "
                             "vocabulary of the file's data source DATA; also OUT/output.txt")
    parser.add_argument("--prompt", metavar="TEXT",
                        help="encode TEXT with --decode's vocabulary as the graph's one "
                             "integer input")


def source_vocabulary(model, name: str, side: str, out_dir: str | Path | None = None,
                      flag: str = "--decode") -> Vocabulary:
    """The vocabulary of the data source `name` of the file (`--decode NAME`): the one
    saved beside the checkpoint in the run folder `out_dir` when the run saved it (the
    ids the model was trained with, whatever the data file says now), else the one its
    data give. `side`: 'source' (what a prompt is read with) or 'target' (what the
    graph's ids are written with); `flag` starts the messages."""
    sources = model.sources
    if name not in sources:
        known = ", ".join(sources) or "none"
        hint = did_you_mean(name, list(sources))
        raise CliError(f"{flag} {name}: {model.path} has no data source `{name}`; its data "
                       f"sources are {known}" + (f" ({hint})" if hint else ""))
    try:
        found = run_vocabulary(sources[name], name, side, Path(out_dir) if out_dir else None)
    except SavedVocabError as err:
        raise CliError(f"{flag} {name}: {err}") from None
    if found is None:
        verb = "decode with" if flag == "--decode" else "use"
        raise CliError(f"{flag} {name}: {sources[name].describe} has no vocabulary; {verb} a "
                       f"{_WITH_VOCABULARY} source")
    return found


def prompt_input(model, graph: str, args) -> list[np.ndarray]:
    """`--prompt TEXT` as the graph's one integer input, [P] or [1, P] by its rank."""
    if args.input:
        raise CliError("--prompt and --input both give the graph's input; give one of them")
    if not args.decode:
        raise CliError("--prompt needs --decode DATA, the data source whose vocabulary "
                       "encodes it")
    gdef = model.program.graphs[graph]
    integer = [a for a in gdef.args if numpy_name(a.type.dtype).startswith(("int", "uint"))]
    if len(gdef.args) != 1 or not integer:
        shown = ", ".join(f"{a.name}: {a.type.dtype}" for a in gdef.args) or "no arguments"
        raise CliError(f"--prompt: `{graph}` takes {shown}, but a prompt is its one integer "
                       "argument, e.g. (prompt: i32[P])")
    arg = integer[0]
    if len(arg.type.dims) not in (1, 2):
        raise CliError(f"--prompt: `{graph}` takes {arg.name} of rank {len(arg.type.dims)}, but "
                       "a prompt is a sequence: i32[P], or i32[1, P]")
    if not args.prompt:
        raise CliError("--prompt is empty; give at least one token")
    ids, unknown = source_vocabulary(model, args.decode, "source",
                                     run_folder(model, args)).encode(args.prompt)
    if len(ids) == 0:
        raise CliError(f"--prompt {args.prompt!r} holds no tokens")
    if unknown:
        print(f"note: --prompt: {unknown} of its {len(ids)} tokens are not in the vocabulary "
              f"of `{args.decode}` and read as <unk>", file=sys.stderr)
    shape = (len(ids),) if len(arg.type.dims) == 1 else (1, len(ids))
    return [ids.reshape(shape).astype(numpy_name(arg.type.dtype))]


def run_folder(model, args) -> Path:
    """The run folder a command reads its checkpoint from: --out, else runs/<file stem>."""
    return Path(args.out or Path("runs") / Path(model.path).stem)


def decoded_rows(result, vocab: Vocabulary, graph: str, data: str) -> list[str]:
    """The graph's output as text: one string per row of an integer [N] or [B, N]."""
    if isinstance(result, tuple):
        raise CliError(f"--decode {data}: `{graph}` returns {len(result)} outputs; return the "
                       "token ids alone to decode them")
    ids = np.asarray(result)
    if ids.dtype.kind not in "iu":
        raise CliError(f"--decode {data}: `{graph}` returns {ids.dtype} values, not token ids; "
                       "return the ids (generate(...).out, or argmax of the logits)")
    if ids.ndim not in (1, 2):
        raise CliError(f"--decode {data}: `{graph}` returns ids of shape {ids.shape}; decode "
                       "takes one sequence [N] or a batch of them [B, N]")
    size = len(vocab.tokens)
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise CliError(f"--decode {data}: `{graph}` returns the id {bad}, but the vocabulary "
                       f"of `{data}` has {size} tokens (0 to {size - 1}); make the model's "
                       f"vocabulary size match the source's (vocab = {size})")
    return [vocab.decode(row) for row in np.atleast_2d(ids)]


def write_decoded(rows: list[str], out_dir: Path) -> str:
    """Print the rows (one per line, or each under a header when they hold newlines) and
    write the same text to OUT/output.txt; returns its path."""
    if any("\n" in row for row in rows):
        text = "".join(f"--- sample {i} ---\n{row}\n" for i, row in enumerate(rows))
    else:
        text = "".join(f"{row}\n" for row in rows)
    print(text, end="")
    path = out_dir / "output.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)
