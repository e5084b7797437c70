"""`graphdl translate FILE "a sentence"` and `--split SRC.SPLIT`: a tiny encoder-decoder
is trained for a few steps on a tab-separated file, then translates through the
vocabularies of its `parallel` source; every misuse exits 2 with one clear line."""

from __future__ import annotations

import json

import pytest

from graphdl.cli.main import main
from graphdl.cli.translate import scored_text
from graphdl.runtime.bleu import corpus_bleu

SRC_WORDS = "one two three four five six seven eight".split()
TGT_WORDS = "eins zwei drei vier fuenf sechs sieben acht".split()

MODEL = """\
cell enc[V, H](tok: i32[B]) -> f32[B, H] {
    state h: f32[B, H] = zeros
    h = tanh(dense(concat([embedding(tok, vocab = V, dim = 8), h], -1), H))
    return h
}

cell dec[V, H](tok: i32[B]) -> f32[B, V] {
    state h: f32[B, H] = zeros
    h = tanh(dense(concat([embedding(tok, vocab = V, dim = 8), h], -1), H))
    return dense(h, V)
}

graph tr[H = 16](x: i32[B, T], n: i32[B], y_in: i32[B, S]) -> f32[B, S, 12] {
    layer e = enc[V = 12, H = H]
    layer d = dec[V = 12, H = H]
    src = scan(x, e, axis = 1, lengths = n)
    return scan(y_in, d, axis = 1, init = src.state).out
}

graph translate[K = 1](x: i32[B, T], n: i32[B]) -> i32[B, 4] {
    src = scan(x, tr.e, axis = 1, lengths = n)
    return generate(tr.d, init = src.state, start = zeros([B], "i32") + 2, steps = 4,
                    stop = 3, pick = beam(K)).out
}

graph padded(x: i32[B, 3]) -> i32[B, 4] {
    src = scan(x, tr.e, axis = 1)
    return generate(tr.d, init = src.state, start = zeros([B], "i32") + 2, steps = 4).out
}

graph floats(x: f32[B, 3]) -> f32[B, 3] {
    return x
}

graph logits(x: i32[B, T]) -> f32[B, T] {
    return cast(x, "f32")
}

data pairs = parallel("pairs.tsv", L = 3, vocab = 12, split = [0.75, 0.25])

train {
    data      = pairs.train(batch = 8, shuffle = true)
    loss      = mean(cross_entropy(tr(data.x, data.lengths, data.y_in), data.y))
    optimizer = adam()
    steps     = 3
}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("translate")
    lines = [f"{SRC_WORDS[i % 8]} {SRC_WORDS[i // 8]}\t{TGT_WORDS[i // 8]} {TGT_WORDS[i % 8]}"
             for i in range(64)]
    (folder / "pairs.tsv").write_text("\n".join(lines) + "\n")
    (folder / "m.gdl").write_text(MODEL)
    out = folder / "run"
    assert main(["run", str(folder / "m.gdl"), "--out", str(out), "--quiet"]) == 0
    return folder, out


def translate(trained, *args):
    folder, out = trained
    return main(["translate", str(folder / "m.gdl"), *args, "--out", str(out)])


def test_a_sentence_is_encoded_and_decoded_with_the_vocabularies(trained, capsys):
    assert translate(trained, "One two") == 0
    words = capsys.readouterr().out.strip().split()
    assert len(words) <= 4  # <bos>, <pad> and what follows <eos> are not printed
    assert all(w in TGT_WORDS or w == "<unk>" for w in words)
    assert translate(trained, "one two", "--beam", "3") == 0
    assert all(w in TGT_WORDS or w == "<unk>" for w in capsys.readouterr().out.split())


def test_unknown_words_get_a_note(trained, capsys):
    assert translate(trained, "zebra quokka") == 0
    err = capsys.readouterr().err
    assert "note: all of its 2 tokens are not in the source vocabulary of `pairs`" in err


def test_a_split_is_scored_with_bleu_and_written(trained, capsys):
    folder, out = trained
    assert translate(trained, "--split", "pairs.test", "--n", "5") == 0
    text = capsys.readouterr().out
    assert "pairs.test: 5 sentences, `translate`: BLEU = " in text
    assert text.count("reference:") == 5
    rows = (out / "translations_translate.tsv").read_text().splitlines()
    assert rows[0] == "source\treference\thypothesis" and len(rows) == 6
    # the references are the split's own sentences: a test pair's source is no train source
    tsv = {line.split("\t")[0] for line in (folder / "pairs.tsv").read_text().splitlines()}
    assert all(row.split("\t")[0] in tsv for row in rows[1:])
    summary = json.loads((out / "bleu_translate.json").read_text())
    assert summary["sentences"] == 5 and 0 <= summary["bleu"] <= 100


def test_a_fixed_width_graph_pads_the_sentence(trained, capsys):
    assert translate(trained, "one two", "--graph", "padded") == 0
    assert capsys.readouterr().out.strip()
    assert translate(trained, "one two three four", "--graph", "padded") == 2
    assert "has 4 tokens, but `padded` reads at most 3 (x: i32[B, 3])" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([], "give a SENTENCE to translate, or --split SRC.SPLIT"),
    (["one", "--split", "pairs.test"], "not both"),
    (["one", "--graph", "tarnslate"], "has no graph `tarnslate`"),
    (["one", "--graph", "floats"], "a translating graph takes the source ids"),
    (["one", "--graph", "logits"], "returns float32 values, not token ids"),
    (["one", "--graph", "padded", "--beam", "2"], "`padded` has no constant K"),
    (["one", "--beam", "0"], "--beam 0: a beam keeps at least 1"),
    (["one", "--n", "3"], "--n 3: needs --split"),
    (["   "], "holds no words to translate"),
    (["one", "--data", "nope"], "no data source `nope`"),
    (["--split", "pairs.dev"], "`pairs` has no split `dev`"),
])
def test_user_errors_exit_2(trained, capsys, args, message):
    assert translate(trained, *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_checkpoint_exits_2(trained, capsys, tmp_path):
    folder, _ = trained
    assert main(["translate", str(folder / "m.gdl"), "one", "--out", str(tmp_path)]) == 2
    assert "no checkpoint in" in capsys.readouterr().err


def test_an_unknown_word_is_one_token_that_matches_nothing():
    assert scored_text("a <unk> b") == "a \u2047 b"
    score = corpus_bleu([scored_text("<unk> b c d")], ["a b c d"])
    assert (score.hyp_len, score.matches[0]) == (4, 3)
