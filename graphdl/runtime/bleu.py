"""Corpus BLEU as sacreBLEU computes it by default (`sacrebleu.corpus_bleu(hyps, [refs])`,
signature `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp`): the 13a tokenizer (the one of
WMT's mteval-v13a.pl), clipped n-gram matches for n = 1..4 summed over the corpus, the
geometric mean of the four precisions, and the brevity penalty exp(1 - r / c) when the
hypotheses are shorter than the references. An order with no match gets sacreBLEU's
'exp' smoothing (the k-th such order counts as 1 / 2^k matches), so one short corpus
without a 4-gram match scores low rather than exactly 0.

One reference per hypothesis; scores are on sacreBLEU's 0-100 scale.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MAX_ORDER = 4

# mteval-v13a's rules, in order: split off most punctuation and symbols, then periods and
# commas unless they sit between digits, then a dash after a digit.
_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)


def tokenize_13a(line: str) -> list[str]:
    """The tokens of `line` under sacreBLEU's default tokenizer '13a'."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = (line.replace("&quot;", '"').replace("&amp;", "&")
                .replace("&lt;", "<").replace("&gt;", ">"))
    line = f" {line} "
    for pattern, repl in _13A_RULES:
        line = pattern.sub(repl, line)
    return line.split()


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


@dataclass(frozen=True)
class Bleu:
    """A corpus BLEU score with the counts it came from: `matches[n-1]` clipped n-gram
    matches out of `totals[n-1]` hypothesis n-grams; `hyp_len`, `ref_len` in tokens."""

    score: float
    precisions: tuple[float, ...]  # percent, after smoothing
    brevity_penalty: float
    matches: tuple[int, ...]
    totals: tuple[int, ...]
    hyp_len: int
    ref_len: int

    def __str__(self) -> str:
        shown = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU = {self.score:.2f} {shown} (BP = {self.brevity_penalty:.3f} "
                f"ratio = {self.hyp_len / max(self.ref_len, 1):.3f} hyp_len = {self.hyp_len} "
                f"ref_len = {self.ref_len})")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> Bleu:
    """sacreBLEU's default corpus BLEU of `hypotheses` against one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    matches, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = tokenize_13a(hyp), tokenize_13a(ref)
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, MAX_ORDER + 1):
            hyp_grams, ref_grams = ngrams(h, n), ngrams(r, n)
            matches[n - 1] += sum(min(c, ref_grams[g]) for g, c in hyp_grams.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    return bleu_from_counts(matches, totals, hyp_len, ref_len)


def bleu_from_counts(matches: Sequence[int], totals: Sequence[int], hyp_len: int,
                     ref_len: int) -> Bleu:
    """BLEU from the summed counts, as sacreBLEU's `compute_bleu` with smooth 'exp'."""
    precisions = [0.0] * MAX_ORDER
    halvings = 1.0
    for n in range(MAX_ORDER):
        if totals[n] == 0:  # no hypothesis this long: the rest stay 0, so BLEU is 0
            break
        if matches[n] == 0:
            halvings *= 2
            precisions[n] = 100.0 / (halvings * totals[n])
        else:
            precisions[n] = 100.0 * matches[n] / totals[n]
    if hyp_len == 0:
        penalty = 0.0
    else:
        penalty = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    if min(precisions) == 0.0:
        score = 0.0
    else:
        score = penalty * math.exp(sum(math.log(p) for p in precisions) / MAX_ORDER)
    return Bleu(score, tuple(precisions), penalty, tuple(matches), tuple(totals), hyp_len,
                ref_len)
