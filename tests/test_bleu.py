"""Corpus BLEU (graphdl/runtime/bleu.py) against counts written out by hand, and against
sacreBLEU itself where it is installed."""

import math

import pytest

from graphdl.runtime.bleu import corpus_bleu, tokenize_13a

HYPS = ["the cat sat on the mat", "hello , world"]
REFS = ["the cat is on the mat", "hello, big world."]


def test_13a_splits_punctuation_but_not_numbers():
    assert tokenize_13a("hello, big world.") == ["hello", ",", "big", "world", "."]
    assert tokenize_13a("pi is 3.14, 1,000 (about) &amp; 2-3") == [
        "pi", "is", "3.14", ",", "1,000", "(", "about", ")", "&", "2", "-", "3"]
    assert tokenize_13a("e-mail") == ["e-mail"]


def test_one_sentence_by_hand():
    # hyp  the cat sat on the mat   /   ref  the cat is on the mat
    # 1-grams: the x2, cat, on, mat match; sat does not          -> 5 / 6
    # 2-grams: "the cat", "on the", "the mat"                    -> 3 / 5
    # 3-grams: "on the mat"                                      -> 1 / 4
    # 4-grams: none of 3; exp smoothing counts it as 1/2 a match -> (1/2) / 3
    # equal lengths: no brevity penalty
    score = corpus_bleu(HYPS[:1], REFS[:1])
    assert score.matches == (5, 3, 1, 0) and score.totals == (6, 5, 4, 3)
    assert score.brevity_penalty == 1.0
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 4 * (0.5 / 3)) ** 0.25
    assert score.score == pytest.approx(expected)  # 37.99
    assert score.score == pytest.approx(37.992, abs=1e-3)


def test_a_corpus_sums_counts_before_the_mean_and_penalises_brevity():
    # second pair: hyp [hello , world] / ref [hello , big world .]
    # 1-grams 3/3, 2-grams "hello ," 1/2, 3-grams 0/1, no 4-gram
    # corpus: 8/9, 4/7, 1/5, (1/2)/3; lengths 9 against 11
    score = corpus_bleu(HYPS, REFS)
    assert score.matches == (8, 4, 1, 0) and score.totals == (9, 7, 5, 3)
    assert (score.hyp_len, score.ref_len) == (9, 11)
    penalty = math.exp(1 - 11 / 9)
    assert score.brevity_penalty == pytest.approx(penalty)
    expected = 100 * penalty * (8 / 9 * 4 / 7 * 1 / 5 * (0.5 / 3)) ** 0.25
    assert score.score == pytest.approx(expected)


def test_edges():
    assert corpus_bleu(["a b c d"], ["a b c d"]).score == pytest.approx(100.0)
    assert corpus_bleu([""], ["a b c d"]).score == 0.0  # no hypothesis tokens
    assert corpus_bleu(["x y"], ["a b c d"]).score == 0.0  # no 3-gram at all: 0
    two = corpus_bleu(["z a b c"], ["a b c d"])  # 3/4, 2/3, 1/2, 4-grams 0 of 1
    assert two.precisions[3] == pytest.approx(100 / 2)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])


def test_agrees_with_sacrebleu_where_installed():
    sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu is not installed "
                                    "(optional cross-check)")
    hyps = HYPS + ["das ist ein test .", "Datei öffnen", "x"]
    refs = REFS + ["das ist kein Test.", "Öffnen Sie die Datei", "y z"]
    for h, r in [(HYPS, REFS), (hyps, refs), (hyps[:1], refs[:1])]:
        want = sacrebleu.corpus_bleu(h, [r]).score
        assert corpus_bleu(h, r).score == pytest.approx(want, abs=1e-9)
