"""The vocabulary a run trains with is saved beside its checkpoint
(OUT/checkpoint/vocab/SRC.json, graphdl/runtime/saved_vocab.py) and read back by every
later use of that checkpoint; and a `layer` instance used twice is one parameter set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from test_vectors import cli, user_error

import graphdl
from graphdl.cli.main import main
from graphdl.runtime.checkpoint import load_checkpoint
from graphdl.runtime.data import open_source
from graphdl.runtime.saved_vocab import vocab_difference

WORDS = "the king queen man woman lord lady land castle dog".split()
CORPUS = "\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(i % 10 + 3))
                   for i in range(40)) + "\n"
# the same amount of text over other words: every id of the old vocabulary changes meaning
OTHER = CORPUS.replace("king", "bishop").replace("queen", "rook").replace("lady", "pawn")

MODEL = """\
data corpus = text("corpus.txt", T = 4, vocab = 8)

graph lm[V = 8](x: i32[B, 4]) -> f32[B, 4, V] {
    layer emb = embedding(vocab = V, dim = 3)
    return dense(emb(x) + emb(x * 0), V)          # one table, used twice
}

graph echo(prompt: i32[P]) -> i32[P] {
    return prompt
}

train {
    data = corpus.train(batch = 4, shuffle = true)
    loss = mean(cross_entropy(lm(data.x), data.y))
    optimizer = adam(lr = 0.1)
    steps = 2
    evaluate on corpus.test {
        loss = mean(cross_entropy(lm(data.x), data.y))
    }
}
"""




@pytest.fixture(scope="module")
def trained_once(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    (folder / "corpus.txt").write_text(CORPUS)
    (folder / "m.gdl").write_text(MODEL)
    assert main(["run", str(folder / "m.gdl"), "--out", str(folder / "out"), "--quiet"]) == 0
    return folder


@pytest.fixture
def trained(trained_once, tmp_path, monkeypatch) -> Path:
    """A copy of a run of 2 steps (in ./out); the working directory is that copy's."""
    folder = tmp_path / "copy"
    shutil.copytree(trained_once, folder)
    monkeypatch.chdir(folder)
    return folder


def test_the_run_saves_its_vocabulary_beside_the_checkpoint(trained):
    saved = json.loads((trained / "out" / "checkpoint" / "vocab" / "corpus.json").read_text())
    source = open_source("text", ["corpus.txt"], {"T": 4, "vocab": 8}, trained)
    assert saved == {"vocab": source.info["vocab"], "level": "word", "lower": True}
    assert "king" in saved["vocab"]


def test_a_shared_layer_is_one_table_in_the_checkpoint(trained):
    params = load_checkpoint(trained / "out" / "checkpoint").params
    tables = [n for n in params if "emb" in n]
    assert tables == ["lm.emb.w"] and params["lm.emb.w"].shape == (8, 3)


def test_resume_and_eval_refuse_data_with_another_vocabulary(trained, capsys):
    (trained / "corpus.txt").write_text(OTHER)
    for flag in ("--resume", "--eval"):
        code, _, err = cli(capsys, "run", "m.gdl", "--out", "out", "--quiet", flag)
        lines = user_error(code, err)
        assert lines[0] == (
            f"m.gdl:1:15: error: data source `corpus`: {flag}: the data no longer give the "
            "vocabulary the checkpoint was trained with (out/checkpoint/vocab/corpus.json): "
            "its vocabulary has 8 tokens now and 8 in the saved one; they first differ at "
            "id 1")
        assert lines[-1] == ("  = hint: the trained ids would mean other words; restore the "
                             "data the run was trained on, or train afresh with --overwrite")
    (trained / "corpus.txt").write_text(CORPUS)  # the data it was trained on: resumes
    code, _, err = cli(capsys, "run", "m.gdl", "--out", "out", "--quiet", "--eval")
    assert code == 0, err


def test_decode_and_prompt_use_the_saved_vocabulary_after_the_data_changed(trained, capsys):
    (trained / "corpus.txt").write_text(OTHER)  # "king" and "lady" are no longer in it
    code, out, err = cli(capsys, "run", "m.gdl", "--graph", "echo", "--out", "out",
                         "--decode", "corpus", "--prompt", "king lady man")
    assert code == 0, err
    assert out == "king lady man\n"
    # without the saved vocabulary the data's own one reads them as <unk>
    (trained / "out" / "checkpoint" / "vocab" / "corpus.json").unlink()
    code, out, err = cli(capsys, "run", "m.gdl", "--graph", "echo", "--out", "out",
                         "--decode", "corpus", "--prompt", "king lady man")
    assert code == 0, err
    assert out == "<unk> <unk> man\n"


def test_the_python_api_reads_the_saved_vocabulary(trained):
    (trained / "corpus.txt").write_text(OTHER)
    model = graphdl.load(trained / "m.gdl")
    saved = json.loads((trained / "out" / "checkpoint" / "vocab" / "corpus.json").read_text())
    assert model.vocabulary("corpus", "out").tokens == tuple(saved["vocab"])
    assert "king" not in model.vocabulary("corpus", trained / "nowhere").tokens


def test_a_damaged_saved_vocabulary_is_an_error(trained, capsys):
    (trained / "out" / "checkpoint" / "vocab" / "corpus.json").write_text("{not json")
    code, _, err = cli(capsys, "run", "m.gdl", "--graph", "echo", "--out", "out",
                       "--decode", "corpus", "--prompt", "king")
    assert user_error(code, err)[0] == (
        "error: --decode corpus: cannot read the saved vocabulary "
        "out/checkpoint/vocab/corpus.json: not a JSON file")


def test_overwrite_removes_the_vocabularies_of_the_run_it_replaces(trained, capsys):
    stale = trained / "out" / "checkpoint" / "vocab" / "gone.json"
    stale.write_text(json.dumps({"vocab": ["<unk>"]}))
    code, _, err = cli(capsys, "run", "m.gdl", "--out", "out", "--quiet", "--overwrite")
    assert code == 0, err
    assert not stale.exists() and (stale.parent / "corpus.json").exists()


def test_vocab_difference_names_sizes_and_the_first_differing_id():
    a = {"vocab": ["<unk>", "a", "b", "c"], "level": "word", "lower": True}
    assert vocab_difference(a, dict(a)) is None
    assert vocab_difference({**a, "vocab": ["<unk>", "a", "b"]}, a) == (
        "its vocabulary has 3 tokens now and 4 in the saved one; they first differ at id 3")
    assert vocab_difference({**a, "lower": False}, a) == (
        "it is tokenized differently now (lower = False, saved True)")
    pair = {"src_vocab": ["x"], "tgt_vocab": ["y", "z"]}
    assert vocab_difference({**pair, "tgt_vocab": ["y", "w"]}, pair) == (
        "its target-language vocabulary has 2 tokens now and 2 in the saved one; they first "
        "differ at id 1")


def test_a_shared_layer_gets_the_gradient_of_both_uses():
    # issue 10, item 5; the front end's side (one parameter set in the IR) is
    # tests/test_shapes.py::test_layer_sharing_gives_one_parameter_set
    model = graphdl.loads("""\
graph two(a: i32[N], b: i32[N]) -> f32[] {
    layer emb = embedding(vocab = 4, dim = 3)
    return sum(emb(a)) + 2.0 * sum(emb(b))
}
""")
    a, b = np.array([0, 0], np.int32), np.array([1, 3], np.int32)
    variables = model.compile("two").init(jax.random.key(0), a, b)
    assert list(variables["params"]) == ["two.emb.w"]
    _, grads = model.value_and_grad("two")(variables, a, b)
    # d/dW of sum(W[a]) + 2 sum(W[b]): row 0 is counted twice by a, rows 1 and 3 twice by b
    expected = np.zeros((4, 3), np.float32)
    np.add.at(expected, a, 1.0)
    np.add.at(expected, b, 2.0)
    assert np.array_equal(np.asarray(grads["two.emb.w"]), expected)
