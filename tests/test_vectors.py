"""Embedding tables from word-vector files: `param E: f32[V, D] = vectors(FILE, corpus)`
(graphdl/elaborate/calls.py, graphdl/runtime/vectors.py) and `graphdl vectors`, which
writes a trained table back in the same formats."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from graphdl.cli.main import main
from graphdl.runtime.checkpoint import load_checkpoint
from graphdl.runtime.data import open_source
from graphdl.runtime.vectors import (
    VectorFileError,
    WordVectors,
    match_rows,
    read_vectors,
    write_vectors,
)

# 40 lines over 10 words, the same every run: the vocabulary of `text(..., vocab = 8)` is
# <unk> and the 7 most frequent words.
WORDS = "the king queen man woman lord lady land castle dog".split()
CORPUS = "\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(i % 10 + 3))
                   for i in range(40)) + "\n"

MODEL = """\
data corpus = text("corpus.txt", T = 4, vocab = 8)

graph lm[V = 8, D = 3](x: i32[B, 4]) -> f32[B, 4, V] {{
    param E: f32[V, D] = {init}
    return dense(E[x], V)
}}

train {{
    data = corpus.train(batch = 4, shuffle = true)
    loss = mean(cross_entropy(lm(data.x), data.y))
    optimizer = adam(lr = 0.1)
    steps = 3
}}
"""


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def user_error(code: int, err: str) -> list[str]:
    """Exit 2, no traceback; the lines of stderr."""
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    return err.splitlines()


def vocab_of_corpus(tmp_path: Path) -> list[str]:
    src = open_source("text", [str(tmp_path / "corpus.txt")], {"T": 4, "vocab": 8}, tmp_path)
    return list(src.info["vocab"])


def word2vec_text(tokens, matrix, header: bool = True) -> str:
    lines = [f"{len(tokens)} {matrix.shape[1]}"] if header else []
    lines += [t + " " + " ".join(str(v) for v in row) for t, row in zip(tokens, matrix)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "corpus.txt").write_text(CORPUS)
    return tmp_path


def write_model(folder: Path, init: str, name: str = "m.gdl") -> Path:
    path = folder / name
    path.write_text(MODEL.format(init=init))
    return path


# ---------------------------------------------------------------- the file formats


def test_word2vec_text_glove_and_safetensors_read_the_same_vectors(tmp_path):
    tokens = ("a", "b", "c")
    matrix = np.arange(6, dtype=np.float32).reshape(3, 2) / 7
    (tmp_path / "w.txt").write_text(word2vec_text(tokens, matrix))
    (tmp_path / "g.txt").write_text(word2vec_text(tokens, matrix, header=False))
    (tmp_path / "w.safetensors").write_bytes(safetensors.numpy.save(
        {"vectors": matrix}, metadata={"tokens": json.dumps(list(tokens))}))
    for name in ("w.txt", "g.txt", "w.safetensors"):
        got = read_vectors(tmp_path / name)
        assert got.tokens == tokens, name
        assert got.matrix.dtype == np.float32 and np.array_equal(got.matrix, matrix), name


@pytest.mark.parametrize("name", ["out.txt", "out.safetensors"])
def test_written_vectors_read_back_bit_for_bit(tmp_path, name):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(4, 5)).astype(np.float32) * np.float32(1e-3)
    tokens = ("x", "y", "z", "ü")
    assert write_vectors(tmp_path / name, tokens, matrix) == 4
    got = read_vectors(tmp_path / name)
    assert got.tokens == tokens and np.array_equal(got.matrix, matrix)


def test_the_text_format_leaves_out_tokens_with_whitespace(tmp_path):
    matrix = np.eye(3, dtype=np.float32)
    assert write_vectors(tmp_path / "c.txt", (" ", "a", "\n"), matrix) == 1
    got = read_vectors(tmp_path / "c.txt")
    assert got.tokens == ("a",) and np.array_equal(got.matrix, matrix[1:2])


MALFORMED = [
    ("3 x\n", "w.txt:1: the header `N D` must be two whole numbers (how many vectors, and "
     "their length)"),
    ("0 4\n", "w.txt:1: the header says 0 vectors of 4 numbers; a vectors file holds at "
     "least one"),
    ("2 3\na 1 2 3\nb 1 2\n", "w.txt:3: expected a token and 3 numbers, found 2 values after "
     "the token"),
    ("2 3\na 1 2 3\nb 1 secret 3\n", "w.txt:3: value 2 is not a number"),
    ("2 3\na 1 2 3\nb 1 nan 3\n", "w.txt:3: value 2 is not a finite number (or too large for "
     "f32)"),
    ("3 2\na 1 2\nb 3 4\n", "w.txt has 2 vectors after its header, but the header says 3"),
    ("", "w.txt is empty"),
    ("2 2\na 1 2\n\nb 3 4\n", "w.txt:3: an empty line"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_a_malformed_text_file_names_the_line_not_its_content(tmp_path, text, message):
    (tmp_path / "w.txt").write_text(text)
    with pytest.raises(VectorFileError) as err:
        read_vectors(tmp_path / "w.txt")
    assert err.value.message == message
    assert "secret" not in err.value.message


def test_a_binary_file_is_not_utf8_text(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"2 3\n\xff\xfe\x00\x01")
    with pytest.raises(VectorFileError) as err:
        read_vectors(tmp_path / "w.bin")
    assert err.value.message == "w.bin:2: not UTF-8 text"
    assert "binary word2vec" in err.value.hint


def test_malformed_safetensors_files(tmp_path):
    def save(name, tensors, metadata=None):
        (tmp_path / name).write_bytes(safetensors.numpy.save(tensors, metadata=metadata))
        with pytest.raises(VectorFileError) as err:
            read_vectors(tmp_path / name)
        return err.value.message
    m = np.zeros((2, 3), np.float32)
    assert save("a.safetensors", {"w": m}) == "a.safetensors has no tensor 'vectors'; it has w"
    assert save("b.safetensors", {"vectors": m}) == (
        "b.safetensors has no JSON list of tokens in its metadata key 'tokens'")
    assert save("c.safetensors", {"vectors": m}, {"tokens": '["a"]'}) == (
        "c.safetensors has 1 tokens but 2 vectors")
    assert save("d.safetensors", {"vectors": np.zeros(3, np.float32)}, {"tokens": "[]"}) == (
        "the tensor 'vectors' of d.safetensors is float32 of shape (3,), not a non-empty "
        "float [N, D]")
    (tmp_path / "e.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VectorFileError, match=r"e.safetensors is not a safetensors file"):
        read_vectors(tmp_path / "e.safetensors")


def test_rows_match_by_token_and_a_lowercasing_source_takes_the_files_capitals():
    vectors = WordVectors(("King", "king", "Queen", "the"), np.zeros((4, 1), np.float32))
    assert match_rows(["<unk>", "king", "queen", "the"], vectors, lower=True).tolist() == \
        [-1, 1, 2, 3]
    assert match_rows(["<unk>", "king", "queen", "the"], vectors, lower=False).tolist() == \
        [-1, 1, -1, 3]


# ---------------------------------------------------------------- the initializer


def test_found_tokens_take_the_files_rows_and_the_others_start_random(folder, capsys):
    vocab = vocab_of_corpus(folder)
    rng = np.random.default_rng(1)
    known = [t for t in vocab if t != "<unk>"][:5] + ["unseen", "words"]
    matrix = rng.normal(size=(len(known), 3)).astype(np.float32)
    (folder / "w2v.txt").write_text(word2vec_text(known, matrix))
    path = write_model(folder, 'vectors("w2v.txt", corpus) frozen')
    code, out, err = cli(capsys, "run", path, "--out", folder / "out", "--steps", "1")
    assert code == 0, err
    assert "lm.E: 5 of 8 tokens found in w2v.txt (3 start random)" in out + err
    table = load_checkpoint(folder / "out" / "checkpoint").params["lm.E"]
    for i, token in enumerate(vocab):
        if token in known:
            assert np.array_equal(table[i], matrix[known.index(token)]), token
        else:
            assert not any(np.allclose(table[i], row) for row in matrix), token


def test_frozen_keeps_the_table_bitwise_and_without_frozen_it_trains(folder, capsys):
    vocab = vocab_of_corpus(folder)
    matrix = np.random.default_rng(2).normal(size=(len(vocab), 3)).astype(np.float32)
    (folder / "w.safetensors").write_bytes(safetensors.numpy.save(
        {"vectors": matrix}, metadata={"tokens": json.dumps(vocab)}))
    for frozen in (True, False):
        path = write_model(folder, 'vectors("w.safetensors", corpus)' + (" frozen" if frozen
                                                                          else ""))
        out = folder / f"out_{frozen}"
        code, _, err = cli(capsys, "run", path, "--out", out, "--quiet")
        assert code == 0, err
        params = load_checkpoint(out / "checkpoint").params
        assert np.array_equal(params["lm.E"], matrix) == frozen
        assert not np.array_equal(params["lm.out.dense.w"], 0)


def run_error(capsys, folder: Path, init: str, *flags) -> list[str]:
    path = write_model(folder, init)
    code, _, err = cli(capsys, "run", path.name, "--out", folder / "out", "--quiet", *flags)
    return user_error(code, err)


def test_a_dim_mismatch_is_an_error_at_the_param_line(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    (folder / "w2v.txt").write_text("1 2\nthe 1 2\n")
    lines = run_error(capsys, folder, 'vectors("w2v.txt", corpus)')
    assert lines[0] == ("m.gdl:4:5: error: cannot initialise `lm.E`: w2v.txt has 2-dim "
                        "vectors, but lm.E is f32[8, 3]")
    assert lines[2] == '4 |     param E: f32[V, D] = vectors("w2v.txt", corpus)'
    assert lines[3].startswith("  |     ^^^^")
    assert lines[4] == ("  = hint: declare lm.E with 2 columns, or use a file of 3-dim "
                        "vectors")
    assert not (folder / "out" / "checkpoint" / "checkpoint.safetensors").exists()


def test_a_vocabulary_size_mismatch_is_an_error_at_the_param_line(folder, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(folder)
    (folder / "w2v.txt").write_text("1 3\nthe 1 2 3\n")
    lines = run_error(capsys, folder, 'vectors("w2v.txt", corpus)', "--set", "lm.V=10")
    assert lines[0] == ("m.gdl:4:5: error: cannot initialise `lm.E`: the vocabulary of "
                        "corpus has 8 tokens, but lm.E has 10 rows")
    assert lines[-1] == "  = hint: make the table's first dim 8, or give the source vocab = 10"


@pytest.mark.parametrize(("text", "message"), [MALFORMED[0], MALFORMED[3]])
def test_a_malformed_file_is_an_error_at_the_param_line(folder, capsys, monkeypatch, text,
                                                        message):
    monkeypatch.chdir(folder)
    (folder / "w.txt").write_text(text)
    lines = run_error(capsys, folder, 'vectors("w.txt", corpus)')
    assert lines[0] == f"m.gdl:4:5: error: cannot initialise `lm.E`: {message}"
    assert "secret" not in "\n".join(lines)


def test_a_missing_file_passes_check_and_stops_training_at_the_param_line(folder, capsys,
                                                                          monkeypatch):
    """The file is often written by another model's run: `check` must not need it yet."""
    monkeypatch.chdir(folder)
    path = write_model(folder, 'vectors("nope.txt", corpus)')
    code, out, err = cli(capsys, "check", path.name)
    assert code == 0, err
    lines = run_error(capsys, folder, 'vectors("nope.txt", corpus)')
    assert lines[0] == (f"m.gdl:4:5: error: cannot initialise `lm.E`: cannot find the file "
                        f"nope.txt ({folder}/nope.txt)")
    assert lines[-1].startswith("  = hint: a vectors file is written by a trained model")
    assert not (folder / "out" / "checkpoint" / "checkpoint.safetensors").exists()


def test_a_source_without_a_vocabulary_is_an_error(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    (folder / "w2v.txt").write_text("1 3\nthe 1 2 3\n")
    path = folder / "m.gdl"
    path.write_text(MODEL.format(init='vectors("w2v.txt", digits)').replace(
        "graph lm", 'data digits = dataset("digits")\n\ngraph lm'))
    code, _, err = cli(capsys, "run", path.name, "--out", folder / "out", "--quiet")
    lines = user_error(code, err)
    assert lines[0] == ("m.gdl:6:5: error: cannot initialise `lm.E`: `digits` "
                        "(dataset(\"digits\")) has no vocabulary to match the rows by token")
    assert lines[-1] == ('  = hint: vectors() takes a text(...), parallel(...) or '
                         'dataset("shakespeare") source')


FRONT_END_ERRORS = [
    ('vectors("w2v.txt", corpse)', "m.gdl:4:45: error: undefined name `corpse`"),
    ('vectors("w2v.txt", "corpus")',
     "m.gdl:4:45: error: the second argument of vectors() is a data source whose vocabulary "
     "names the rows, got a constant"),
    ('vectors("w2v.txt", corpus, side = "middle")',
     "m.gdl:4:53: error: side of vectors() is 'source' or 'target', got 'middle'"),
    ("vectors", "m.gdl:4:26: error: initializer `vectors` needs arguments"),
]


@pytest.mark.parametrize(("init", "message"), FRONT_END_ERRORS)
def test_errors_found_when_the_file_is_checked(folder, capsys, monkeypatch, init, message):
    monkeypatch.chdir(folder)
    (folder / "w2v.txt").write_text("1 3\nthe 1 2 3\n")
    path = write_model(folder, init)
    code, _, err = cli(capsys, "check", path.name)
    assert user_error(code, err)[0] == message.format(folder=folder)


def test_the_table_must_be_a_matrix(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    (folder / "w2v.txt").write_text("1 3\nthe 1 2 3\n")
    path = folder / "m.gdl"
    path.write_text(MODEL.format(init='vectors("w2v.txt", corpus)').replace(
        "param E: f32[V, D]", "param E: f32[V * D]").replace("E[x]", "reshape(E, [V, D])[x]"))
    code, _, err = cli(capsys, "check", "m.gdl")
    assert user_error(code, err)[0] == (
        "m.gdl:4:14: error: vectors() fills a table of one row per token, f32[V, D], but `E` "
        "is f32[24]")


def test_the_file_must_lie_inside_the_data_root(folder, capsys, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "w2v.txt").write_text("1 3\nthe 1 2 3\n")
    path = write_model(folder, f'vectors("{outside}/w2v.txt", corpus)')
    code, _, err = cli(capsys, "check", path, "--data-root", folder)
    line = user_error(code, err)[0]
    assert line.startswith(f"{path}:4:34: error: ") and "outside" in line and "data root" in line


def test_a_parallel_source_gives_its_target_side(tmp_path, capsys):
    # 15 different source sentences: parallel keeps one pair per source sentence
    sources = ["a b c", "b c", "c a", "a", "b", "c", "a b", "b a", "c b", "a c", "c c",
               "a a", "b b", "a b a", "c b a"]
    pairs = [(src, ["x y", "y z z", "z x"][i % 3]) for i, src in enumerate(sources)]
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    (tmp_path / "w2v.txt").write_text("2 2\nz 1 2\nc 3 4\n")
    path = tmp_path / "p.gdl"
    path.write_text(textwrap.dedent("""\
        data pairs = parallel("pairs.tsv", L = 4)

        graph g[V = 7](y: i32[B, 5]) -> f32[B, 5, V] {
            param E: f32[V, 2] = vectors("w2v.txt", pairs, side = "target") frozen
            return dense(E[y], V)
        }

        train {
            data = pairs.train(batch = 4)
            loss = mean(cross_entropy(g(data.y_in), data.y))
            optimizer = adam()
            steps = 1
        }
        """))
    code, out, err = cli(capsys, "run", path, "--out", tmp_path / "out")
    assert code == 0, err
    assert "g.E: 1 of 7 tokens found in w2v.txt (6 start random)" in out + err
    src = open_source("parallel", [str(tmp_path / "pairs.tsv")], {"L": 4}, tmp_path)
    table = load_checkpoint(tmp_path / "out" / "checkpoint").params["g.E"]
    assert np.array_equal(table[src.info["tgt_vocab"].index("z")], [1, 2])


# ---------------------------------------------------------------- graphdl vectors


@pytest.mark.parametrize("name", ["vectors.txt", "w.safetensors"])
def test_written_vectors_load_back_through_the_initializer(folder, capsys, name):
    path = write_model(folder, "normal(0.5)")
    out = folder / "out"
    code, _, err = cli(capsys, "run", path, "--out", out, "--quiet")
    assert code == 0, err
    to = [] if name == "vectors.txt" else ["--to", folder / name]
    code, stdout, err = cli(capsys, "vectors", path, "--param", "lm.E", "--data", "corpus",
                            "--out", out, *to)
    assert code == 0, err
    written = out / name if name == "vectors.txt" else folder / name
    assert stdout == f"wrote {written}: 8 vectors of `lm.E`\n"
    trained = load_checkpoint(out / "checkpoint").params["lm.E"]
    again = write_model(folder, f'vectors("{written}", corpus) frozen', "again.gdl")
    code, stdout, err = cli(capsys, "run", again, "--out", folder / "again")
    assert code == 0, err
    assert f"lm.E: 8 of 8 tokens found in {written.name} (0 start random)" in stdout + err
    loaded = load_checkpoint(folder / "again" / "checkpoint").params["lm.E"]
    assert np.array_equal(loaded, trained)


def test_vectors_command_errors(folder, capsys):
    path = write_model(folder, "normal(0.5)")
    out = folder / "out"
    code, _, err = cli(capsys, "vectors", path, "--param", "lm.E", "--data", "corpus",
                       "--out", out)
    assert user_error(code, err)[0] == (
        f"error: no checkpoint in {out}/checkpoint; train first: graphdl run {path} "
        f"--out {out}")
    assert cli(capsys, "run", path, "--out", out, "--quiet")[0] == 0
    cases = [
        (("--param", "lm.e", "--data", "corpus"),
         "error: --param lm.e: the checkpoint has no parameter `lm.e`; its [V, D] parameters "
         "are lm.E, lm.out.dense.w (did you mean `lm.E`?)"),
        (("--param", "lm.out.dense.b", "--data", "corpus"),
         "error: --param lm.out.dense.b: the checkpoint has no [V, D] parameter "
         "`lm.out.dense.b`; its [V, D] parameters are lm.E, lm.out.dense.w (did you mean "
         "`lm.out.dense.w`?)"),
        (("--param", "lm.E", "--data", "corpos"),
         f"error: --data corpos: {path} has no data source `corpos`; its data sources are "
         "corpus (did you mean `corpus`?)"),
        (("--param", "lm.out.dense.w", "--data", "corpus"),
         "error: --data corpus: its vocabulary has 8 tokens, but lm.out.dense.w has 3 rows; "
         "give the data source the table was trained with"),
    ]
    for flags, message in cases:
        code, _, err = cli(capsys, "vectors", path, "--out", out, *flags)
        assert user_error(code, err)[0] == message
