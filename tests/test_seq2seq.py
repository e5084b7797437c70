"""models/seq2seq.gdl and what it stands on: `parallel` keeps one pair per source
sentence before the split (no sentence in both train and test), reads gettext catalogs
(msgctxt stripped), and says clearly where a folder holds none. The training checks of
the model itself (reverse >= 99% exact, BLEU on the catalogs) are slow tests in
tests/test_models.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_data import write_mo

from graphdl.cli.main import main
from graphdl.runtime.data import open_source

CATALOGS = Path("/usr/share/locale/de/LC_MESSAGES")
MODEL = Path(__file__).parent.parent / "models" / "seq2seq.gdl"


def open_parallel(path, **kwargs):
    return open_source("parallel", [str(path)], kwargs, Path("."))


def source_rows(src, split: str) -> set[tuple[int, ...]]:
    return {tuple(row) for row in src.arrays(split)["x"]}


def test_one_pair_per_source_sentence_before_the_split(tmp_path):
    # 40 sentences, each twice with two translations, and in another case: without
    # de-duplication about half of them would be in both train and test
    lines = [f"{s} sentence {i}\t{t} satz {i}" for i in range(40)
             for s, t in (("A", "ein"), ("a", "noch ein"))]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    src = open_parallel(tmp_path / "pairs.tsv", L=4, split=[0.5, 0.5])
    assert src.info["duplicates"] == 40 and src.info["dropped"] == 0
    train, test = source_rows(src, "train"), source_rows(src, "test")
    assert len(train) + len(test) == 40 and not train & test
    # the first translation of each sentence is the one kept
    targets = [ref for _, ref in src.info["sentences"]["train"]]
    assert all(t.startswith("ein satz") for t in targets)
    # without lowering, "A sentence 1" and "a sentence 1" are two sentences
    assert open_parallel(tmp_path / "pairs.tsv", L=4, lower=False).info["duplicates"] == 0


def test_sentences_follow_the_split_rows(tmp_path):
    lines = [f"w{i} x{i % 3}\tv{i} y{i % 5}" for i in range(30)]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    src = open_parallel(tmp_path / "pairs.tsv", L=3, split=[0.7, 0.3])
    vocab = src.info["src_vocab"]
    for split in src.splits:
        words = [" ".join(vocab[i] for i in row if i) for row in src.arrays(split)["x"]]
        assert words == [s for s, _ in src.info["sentences"][split]]


def test_catalog_contexts_are_not_part_of_the_sentence(tmp_path):
    write_mo(tmp_path / "app.mo", {"menu\x04Open": "Öffnen", "Open": "Öffne",
                                   **{f"Save {i}": f"Sichern {i}" for i in range(6)}})
    src = open_parallel(tmp_path / "app.mo", L=3)
    assert "menu" not in src.info["src_vocab"] and "\x04" not in "".join(src.info["src_vocab"])
    assert src.info["duplicates"] == 1  # "Open" with and without its context


def test_a_folder_without_catalogs_is_a_located_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.gdl").write_text(
        'data d = parallel("empty", L = 5)\n\n'
        "graph g(x: i32[B, 5]) -> i32[B, 5] {\n    return x\n}\n\n"
        "train {\n    data = d.train(batch = 2)\n    loss = mean(cast(g(data.x), \"f32\"))\n}\n")
    assert main(["run", str(tmp_path / "m.gdl"), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "m.gdl:1:" in err and "empty holds no .mo catalogs" in err and "Traceback" not in err


def test_a_missing_path_checks_and_stops_training_at_the_data_line(tmp_path, capsys):
    """A system's catalogs may be absent: the file checks (and its other blocks run); the
    block that loads them stops at the `data` line."""
    (tmp_path / "m.gdl").write_text(
        'data d = parallel("nowhere/LC_MESSAGES", L = 5)\n\n'
        "graph g(x: i32[B, 5]) -> i32[B, 5] {\n    return x\n}\n\n"
        "train {\n    data = d.train(batch = 2)\n    loss = mean(cast(g(data.x), \"f32\"))\n}\n")
    assert main(["check", str(tmp_path / "m.gdl")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "m.gdl"), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"m.gdl:1:19: error: data source `d`: no such file or folder: {tmp_path}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoint" / "checkpoint.safetensors").exists()


def test_the_model_file_checks():
    assert main(["check", str(MODEL)]) == 0


@pytest.mark.skipif(not any(CATALOGS.glob("*.mo")),
                    reason=f"no gettext catalogs in {CATALOGS} (Debian/Ubuntu's locale files)")
def test_the_system_catalogs_leak_no_sentence_into_test():
    src = open_parallel(CATALOGS, L=10, vocab=3000, split=[0.85, 0.05, 0.1])
    info = src.info
    assert info["duplicates"] > 1000  # the catalogs repeat many UI strings
    seen = {split: {s for s, _ in info["sentences"][split]} for split in src.splits}
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["val"]
    assert len(seen["test"]) == len(info["sentences"]["test"]) > 1000
    assert info["src_vocab_size"] == info["tgt_vocab_size"] == 3000
