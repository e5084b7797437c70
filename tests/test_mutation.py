"""Mutation tests: no text typed into a .gdl file makes the front end crash.

Every shipped .gdl file (std.nn, the spec's examples in tests/spec, models/) is mutated
with a seeded `random.Random`: tokens and characters deleted, duplicated, swapped or
replaced, random characters inserted (unicode too), brackets unbalanced, lines spliced in
from other files, the text truncated. `check_program` must then return diagnostics that
point into the file, each with a message, or none; it must never raise. A handful of
mutants also go through the real `graphdl check` command.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from graphdl.elaborate.check import check_program
from graphdl.errors import render_all, source_lines
from graphdl.runtime.data import SOURCES as DATA_SOURCES

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted([ROOT / "graphdl" / "std" / "nn.gdl", *(ROOT / "tests" / "spec").glob("*.gdl"),
                *(ROOT / "models").glob("*.gdl")])
SOURCES = {path: path.read_text(encoding="utf-8") for path in FILES}

TOKEN = re.compile(r'[A-Za-z_][A-Za-z_0-9]*|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|"[^"\n]*"'
                   r"|\|>|->|\*\*|[=!<>]=|\S")
WORDS = ["graph", "cell", "data", "train", "state", "param", "layer", "step", "evaluate", "over",
         "checkpoint", "use", "by", "on", "every", "frozen", "return", "true", "false", "scan",
         "generate", "dense", "relu", "conv", "max_pool", "reshape", "concat", "split", "mean",
         "sum", "argmax", "normal", "categorical", "bernoulli", "reinforce", "reparam", "adam",
         "zeros", "glorot", "load", "f32", "i32", "bool", "f64", "B", "D", "H", "T", "x", "h",
         "data", "loss", "optimizer", "epochs", "steps", "std", "nn", "lstm", "mlp"]
NUMBERS = ["0", "1", "2", "-1", "-7", "3", "0.5", "1e-3", "2.5e+4", ".5", "1e999", "100000",
           "99999999999999999999999", "0.0", "1024"]
JUNK = list("()[]{},.:;=~|>-+*/@%#\"'\\\n\t ") + [
    "é", "∘", "\u200b", "😀", "\x00", "\r", "\u2028", "\ufeff", "λ", "ℓ", "名"]
BRACKETS = "()[]{}"


def mutate(rng: random.Random, text: str, others: list[str]) -> str:
    """Apply 1 to 6 random edits to `text`."""
    for _ in range(rng.choice([1, 1, 1, 2, 3, 6])):
        tokens = list(TOKEN.finditer(text))
        if not tokens:
            return text + rng.choice(JUNK)
        tok = rng.choice(tokens)
        s, e = tok.span()
        kind = rng.randrange(13)
        if kind == 0:  # delete a token
            text = text[:s] + text[e:]
        elif kind == 1:  # duplicate a token
            text = text[:s] + tok.group() + " " + text[s:]
        elif kind == 2:  # swap two tokens
            other = rng.choice(tokens)
            a, b = sorted((tok, other), key=lambda m: m.start())
            if a.end() <= b.start():
                text = (text[:a.start()] + b.group() + text[a.end():b.start()] + a.group()
                        + text[b.end():])
        elif kind == 3:  # insert a junk or unicode character
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(JUNK) + text[i:]
        elif kind == 4:  # delete a character
            i = rng.randrange(len(text))
            text = text[:i] + text[i + 1:]
        elif kind == 5:  # truncate
            text = text[:rng.randrange(len(text) + 1)]
        elif kind == 6:  # replace an identifier
            text = text[:s] + rng.choice(WORDS) + text[e:]
        elif kind == 7:  # replace a token by a number
            text = text[:s] + rng.choice(NUMBERS) + text[e:]
        elif kind == 8:  # unbalance brackets
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(BRACKETS) + text[i:]
        elif kind == 9:  # any character of the Basic Multilingual Plane
            i = rng.randrange(len(text) + 1)
            text = text[:i] + chr(rng.randrange(1, 0xD800)) + text[i:]
        elif kind == 10:  # duplicate a line
            lines = text.split("\n")
            j = rng.randrange(len(lines))
            lines.insert(j, lines[j])
            text = "\n".join(lines)
        elif kind == 11:  # splice a line of another file in
            donor = rng.choice(others).split("\n")
            lines = text.split("\n")
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(donor))
            text = "\n".join(lines)
        else:  # delete a line
            lines = text.split("\n")
            del lines[rng.randrange(len(lines))]
            text = "\n".join(lines)
    return text


# Inputs that once took minutes or gigabytes, or reached an internal OverflowError: huge
# integers reaching op attributes, sizes and settings, floats that overflow, blank-line
# and nesting bombs, dim polynomials that expand to 2^k terms, split into many sections.
BOMBS = [
    "1000000000000", "9223372036854775808", "18446744073709551616", "1" + "0" * 400, "1e400",
    "1e300 * 1e300", "2147483648", "dense(x, 1000000000000)", "split(x, 10000000)",
    "embedding(x, vocab = 1000000000000, dim = 8)", "lstm[1000000000000]", "f32[B, 0]",
    "normal(std = 1e300 * 1e300)", "\n" * 20_000, "(" * 200 + "x" + ")" * 200,
    "[" * 150, "- " * 300 + "x", "x" + " + x" * 300,
    " * ".join(f"(A{i} + B{i})" for i in range(22)),
    "f32[" + " * ".join(f"(D{i} + H{i})" for i in range(22)) + "]",
]


def bomb(rng: random.Random, text: str) -> str:
    """Replace one token of `text` (or insert at it) with one of BOMBS."""
    tokens = list(TOKEN.finditer(text))
    tok = rng.choice(tokens)
    s, e = tok.span()
    if rng.random() < 0.5:
        s = e = rng.choice((s, e))
    return text[:s] + rng.choice(BOMBS) + text[e:]


def bombs(seed: int, count: int):
    """`count` (path, text with one bomb) pairs, the same for the same seed."""
    rng = random.Random(seed)
    for _ in range(count):
        path = rng.choice(FILES)
        yield path, bomb(rng, SOURCES[path])


def mutants(seed: int, count: int):
    """`count` (path, mutated text) pairs, the same for the same seed."""
    rng = random.Random(seed)
    texts = list(SOURCES.values())
    for _ in range(count):
        path = rng.choice(FILES)
        yield path, mutate(rng, SOURCES[path], texts)


def problems(path: Path, text: str) -> list[str]:
    """What is wrong with the front end's answer on one input (empty when all is well)."""
    try:
        checked = check_program(str(path), text, sources=DATA_SOURCES)
        rendered = render_all(checked.diagnostics, checked.program.sources)
    except Exception as err:  # noqa: BLE001 - the point of the test
        return [f"raised {type(err).__name__}: {err}"]
    out = []
    for d in checked.diagnostics:
        if not d.message.strip():
            out.append(f"an empty message at {d.span}")
        if d.span is None:
            continue
        lines = source_lines(checked.program.sources.get(d.span.file, ""))
        if not (1 <= d.span.line <= len(lines) and d.span.col >= 1):
            out.append(f"span {d.span} is outside its file ({len(lines)} lines): {d.message}")
    if checked.diagnostics and "error:" not in rendered:
        out.append("rendered diagnostics have no `error:` line")
    return out


def run_mutants(seed: int, count: int) -> None:
    failures = []
    for i, (path, text) in enumerate(mutants(seed, count)):
        found = problems(path, text)
        if found:
            failures.append(f"seed {seed}, mutant {i} of {path.name}: {found[0]}\n{text!r}"[:2000])
    assert not failures, f"{len(failures)} bad answers; the first:\n" + "\n\n".join(failures[:3])


def test_the_shipped_files_check_clean():
    for path, text in SOURCES.items():
        checked = check_program(str(path), text, sources=DATA_SOURCES)
        assert not checked.diagnostics, (path, [d.message for d in checked.diagnostics])
    assert len(FILES) >= 5


@pytest.mark.parametrize("seed", range(10))
def test_mutants_never_crash(seed):
    run_mutants(seed, 60)  # 600 inputs in the default run


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_many_mutants_never_crash(seed):
    run_mutants(seed, 520)  # 10,400 inputs


@pytest.mark.parametrize("seed", range(4))
def test_bombs_never_crash(seed):
    failures = []
    for i, (path, text) in enumerate(bombs(seed, 50)):
        found = problems(path, text)
        if found:
            failures.append(f"seed {seed}, bomb {i} in {path.name}: {found[0]}\n{text!r}"[:2000])
    assert not failures, f"{len(failures)} bad answers; the first:\n" + "\n\n".join(failures[:3])


def test_mutation_is_seeded():
    assert list(mutants(7, 5)) == list(mutants(7, 5))
    assert list(mutants(7, 5)) != list(mutants(8, 5))


def test_mutants_through_the_cli(tmp_path):
    for i, (path, text) in enumerate(mutants(2024, 5)):
        folder = tmp_path / str(i)
        folder.mkdir()
        for sibling in path.parent.glob("*.gdl"):  # so that `use "mlp.gdl"` still resolves
            (folder / sibling.name).write_text(SOURCES.get(sibling, ""), encoding="utf-8")
        target = folder / path.name
        target.write_text(text, encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "graphdl", "check", str(target)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode in (0, 2), proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
        if proc.returncode == 2:
            assert ": error: " in proc.stderr or proc.stderr.startswith("error: ")
