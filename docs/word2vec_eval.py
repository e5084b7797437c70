"""Word vectors judged two ways (issue 10): the nearest neighbours of probe words and the
accuracy on a small analogy set, each next to random vectors of the same vocabulary.

    graphdl run models/word2vec.gdl --out runs/word2vec
    graphdl vectors runs/word2vec --param word2vec.v_in --data words > vectors.txt
    python docs/word2vec_eval.py vectors.txt [--seed S] [--probes king,queen,...]

The vectors file is what `graphdl vectors` writes, read by graphdl's own reader
(graphdl/runtime/vectors.py): the word2vec text format (a header line `COUNT DIM`, then
one line per word, the word and its DIM numbers; GloVe's headerless variant too) or
safetensors. Run it with graphdl importable (`PYTHONPATH=.` in a checkout).

Neighbours: the words of highest cosine similarity to the probe (the probe left out).
Analogies `a : b :: c : d` are answered the usual way (3CosAdd, Mikolov et al. 2013):
the word nearest by cosine to b - a + c, with a, b and c left out; a question counts only
when its four words are all in the vocabulary. The questions are every ordered pair of
two word pairs of one relation below (gender, plural, past tense, pronoun case,
possessive, comparative), so `king:queen` and `lord:lady` give king:queen::lord:lady and
lord:lady::king:queen. The baseline draws a Gaussian vector per word with `--seed`
(same vocabulary, same dimension, same procedure): its accuracy is about 1 / vocabulary.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from graphdl.runtime.data.text import UNK
from graphdl.runtime.vectors import VectorFileError
from graphdl.runtime.vectors import read_vectors as graphdl_read_vectors

PROBES = ("king", "queen", "love", "death", "sword", "night", "lord", "lady", "father",
          "eyes", "heaven", "blood")

#: Word pairs per relation; a question is two different pairs of one relation.
RELATIONS: dict[str, list[tuple[str, str]]] = {
    "gender": [("king", "queen"), ("lord", "lady"), ("man", "woman"), ("father", "mother"),
               ("son", "daughter"), ("brother", "sister"), ("husband", "wife"),
               ("he", "she"), ("sir", "madam"), ("boy", "girl"), ("duke", "duchess"),
               ("master", "mistress"), ("prince", "princess"), ("uncle", "aunt"),
               ("gentleman", "gentlewoman"), ("god", "goddess"), ("sons", "daughters"),
               ("men", "women"), ("lords", "ladies"), ("kings", "queens")],
    "plural": [("lord", "lords"), ("king", "kings"), ("man", "men"), ("woman", "women"),
               ("eye", "eyes"), ("hand", "hands"), ("friend", "friends"),
               ("enemy", "enemies"), ("word", "words"), ("heart", "hearts"),
               ("sword", "swords"), ("day", "days"), ("night", "nights"), ("son", "sons"),
               ("brother", "brothers"), ("soldier", "soldiers"), ("tear", "tears"),
               ("year", "years"), ("thing", "things"), ("child", "children")],
    "past tense": [("speak", "spoke"), ("give", "gave"), ("take", "took"), ("see", "saw"),
                   ("know", "knew"), ("come", "came"), ("go", "went"), ("tell", "told"),
                   ("think", "thought"), ("find", "found"), ("lose", "lost"),
                   ("bring", "brought"), ("make", "made"), ("say", "said"),
                   ("hear", "heard"), ("stand", "stood"), ("fall", "fell"), ("die", "died"),
                   ("love", "loved"), ("kill", "killed"), ("begin", "began"),
                   ("run", "ran"), ("write", "wrote"), ("sit", "sat"), ("leave", "left")],
    "pronoun case": [("i", "me"), ("he", "him"), ("she", "her"), ("we", "us"),
                     ("they", "them"), ("thou", "thee"), ("who", "whom")],
    "possessive": [("i", "my"), ("he", "his"), ("she", "her"), ("we", "our"),
                   ("they", "their"), ("thou", "thy"), ("you", "your")],
    "comparative": [("good", "better"), ("bad", "worse"), ("great", "greater"),
                    ("young", "younger"), ("old", "older"), ("high", "higher"),
                    ("fair", "fairer"), ("strong", "stronger"), ("sweet", "sweeter"),
                    ("long", "longer")],
}


def read_vectors(path: str | Path) -> tuple[list[str], np.ndarray]:
    """The words and a [N, D] float array of a vectors file (graphdl's reader: word2vec
    text, GloVe's headerless text, or safetensors); `<unk>` is left out, since no
    training updates its row."""
    found = graphdl_read_vectors(Path(path))
    keep = [i for i, t in enumerate(found.tokens) if t != UNK]
    return [found.tokens[i] for i in keep], np.asarray(found.matrix[keep], np.float64)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norm > 0, norm, 1.0)


def neighbours(words: list[str], vectors: np.ndarray, probe: str, k: int = 8) -> list[tuple[str, float]]:
    """The `k` words of highest cosine similarity to `probe` (itself left out)."""
    unit = _unit(vectors)
    index = {w: i for i, w in enumerate(words)}
    scores = unit @ unit[index[probe]]
    scores[index[probe]] = -np.inf
    best = np.argsort(-scores, kind="stable")[:k]
    return [(words[i], float(scores[i])) for i in best]


def questions(relations: dict[str, list[tuple[str, str]]] = RELATIONS) -> list[tuple[str, tuple]]:
    """(relation, (a, b, c, d)) for every ordered pair of two different pairs."""
    return [(name, (a, b, c, d)) for name, pairs in relations.items()
            for (a, b), (c, d) in itertools.permutations(pairs, 2)]


def analogies(words: list[str], vectors: np.ndarray,
              asked: list[tuple[str, tuple]]) -> dict[str, dict[str, int]]:
    """Per relation (and "all"): asked, counted (all four words known) and correct."""
    unit = _unit(vectors)
    index = {w: i for i, w in enumerate(words)}
    result = {name: {"asked": 0, "counted": 0, "correct": 0}
              for name in [*dict.fromkeys(n for n, _ in asked), "all"]}
    known = [(name, q) for name, q in asked if all(w in index for w in q)]
    for name, _ in asked:
        result[name]["asked"] += 1
        result["all"]["asked"] += 1
    if known:
        ids = np.array([[index[w] for w in q] for _, q in known])
        target = unit[ids[:, 1]] - unit[ids[:, 0]] + unit[ids[:, 2]]
        scores = target @ unit.T
        rows = np.arange(len(ids))[:, None]
        scores[rows, ids[:, :3]] = -np.inf  # a, b and c are not answers
        right = np.argmax(scores, axis=1) == ids[:, 3]
        for (name, _), ok in zip(known, right):
            for key in (name, "all"):
                result[key]["counted"] += 1
                result[key]["correct"] += int(ok)
    return result


def random_like(vectors: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(vectors.shape)


def _accuracy(r: dict[str, int]) -> str:
    share = r["correct"] / r["counted"] if r["counted"] else 0.0
    return f"{r['correct']}/{r['counted']} = {share:.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("vectors", help="a word2vec text file")
    parser.add_argument("--seed", type=int, default=0, help="the random baseline's seed")
    parser.add_argument("--probes", default=",".join(PROBES), help="comma-separated words")
    parser.add_argument("-k", type=int, default=8, help="neighbours per probe")
    args = parser.parse_args(argv)
    try:
        words, vectors = read_vectors(args.vectors)
    except VectorFileError as err:
        hint = f" ({err.hint})" if err.hint else ""
        print(f"error: {err.message}{hint}", file=sys.stderr)
        return 2
    baseline = random_like(vectors, args.seed)
    print(f"{args.vectors}: {len(words)} words, {vectors.shape[1]} dimensions; "
          f"baseline: Gaussian vectors, seed {args.seed}\n")
    print("nearest neighbours (cosine)")
    for probe in [p for p in args.probes.split(",") if p]:
        if probe not in words:
            print(f"  {probe}: not in the vocabulary")
            continue
        found = ", ".join(f"{w} {s:.2f}" for w, s in neighbours(words, vectors, probe, args.k))
        rand = ", ".join(w for w, _ in neighbours(words, baseline, probe, args.k))
        print(f"  {probe}: {found}\n  {'':{len(probe)}}  (random: {rand})")
    asked = questions()
    trained, random = analogies(words, vectors, asked), analogies(words, baseline, asked)
    print("\nanalogies a:b::c:? (3CosAdd; counted = all four words in the vocabulary)")
    for name in trained:
        r = trained[name]
        print(f"  {name:13s} asked {r['asked']:4d}, counted {r['counted']:4d}: "
              f"{_accuracy(r):>17s}   random {_accuracy(random[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
