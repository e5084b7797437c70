"""The files a .gdl file names: only regular files are read, never blocking; diagnostics
quote only .gdl source; data errors found at train time are located like those found at
check time; headers are checked against file sizes; --data-root confines every path.

The CLI runs in-process (`graphdl.cli.main`) except where the process environment
matters (/proc/self/environ).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from graphdl.cli import main
from graphdl.reading import MAX_GDL_BYTES

REPO = Path(__file__).resolve().parents[1]

NET = """\
graph net(x: f32[B, 4]) -> f32[B, 3] {
    return x |> dense(3)
}
"""

TRAIN = NET.replace("{", "{{").replace("}", "}}") + """
data d = {source}

train {{
    data      = d.train(batch = 2)
    loss      = mean(cross_entropy(net(data.x), data.y))
    optimizer = adam(lr = 1e-2)
    epochs    = 1
}}
"""

LM = """\
graph lm(x: i32[B, T]) -> f32[B, T, 50] {{
    return x |> embedding(50, 8) |> dense(50)
}}

data d = {source}

train {{
    data      = d.train(batch = 1)
    loss      = mean(cross_entropy(lm(data.{x}), data.y))
    optimizer = adam(lr = 1e-2)
    epochs    = 1
}}
"""


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def user_error(code: int, err: str, first: str) -> list[str]:
    """Exit 2, no traceback, and the first line is exactly `first`; the lines."""
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.splitlines()
    assert lines[0] == first, err
    return lines


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


# -- 5. diagnostics never quote a file that is not .gdl source ------------------------------
def test_use_of_proc_environ_never_prints_the_environment(tmp_path):
    write(tmp_path, "e.gdl", 'use "/proc/self/environ"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO), "SECRET_TOKEN": "xyz-secret-4711"}
    proc = subprocess.run([sys.executable, "-m", "graphdl", "check", "e.gdl"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "xyz-secret-4711" not in proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[0] == \
        "e.gdl:1:1: error: use: /proc/self/environ is not a .gdl file"


def test_use_of_etc_passwd_is_refused_by_name(tmp_path, capsys):
    path = write(tmp_path, "p.gdl", 'use "/etc/passwd"\n')
    code, _, err = cli(capsys, "check", path)
    user_error(code, err, f"{path}:1:1: error: use: /etc/passwd is not a .gdl file")
    assert "root:" not in err


def test_a_symlink_named_gdl_must_point_at_a_gdl_file(tmp_path, capsys):
    (tmp_path / "env.gdl").symlink_to("/proc/self/environ")
    path = write(tmp_path, "m.gdl", 'use "env.gdl"\n')
    code, _, err = cli(capsys, "check", path)
    user_error(code, err, f"{path}:1:1: error: use: env.gdl is not a .gdl file")
    assert len(err.splitlines()) == 5  # the use line quoted, nothing of the target


def test_an_error_in_a_file_not_named_gdl_shows_no_source_line(tmp_path, capsys):
    path = write(tmp_path, "model.txt", "graph g(x: f32[B]) -> f32[B] { return relux(x) }\n")
    code, _, err = cli(capsys, "check", path)
    lines = user_error(code, err, f"{path}:1:39: error: unknown operation `relux`")
    assert "return" not in err and lines[1] == "  = hint: did you mean `relu`?"


def test_a_bad_csv_cell_is_named_by_line_and_column_never_quoted(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("a,b,c,y\n1,2,3,0\n4,SECRETCELL,6,1\n7,8,9,2\n")
    path = write(tmp_path, "t.gdl", TRAIN.format(source='csv("bad.csv")'))
    code, _, err = cli(capsys, "check", path)
    user_error(code, err,
               f"{path}:5:14: error: {tmp_path / 'bad.csv'}:3: column 2 is not a number")
    assert "SECRETCELL" not in err


# -- 4. special files -----------------------------------------------------------------------
def test_special_files_are_refused_without_reading(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.gdl")
    path = write(tmp_path, "z.gdl", 'use "fifo.gdl"\nuse "/dev/zero"\n')
    code, _, err = cli(capsys, "check", path)
    lines = user_error(code, err,
                       f"{path}:1:1: error: cannot read fifo.gdl: it is not a regular file (a pipe)")
    assert f"{path}:2:1: error: use: /dev/zero is not a .gdl file" in lines
    # the main file: a FIFO or a device never blocks or runs out of memory
    for main_file, why in ((tmp_path / "fifo.gdl", "a pipe"), ("/dev/zero", "a device")):
        code, _, err = cli(capsys, "check", main_file)
        assert (code, err) == (2, f"error: {main_file}: is not a regular file ({why})\n")


def test_data_sources_refuse_special_files(tmp_path, capsys):
    path = write(tmp_path, "t.gdl", LM.format(source='parallel("/dev/zero")', x="x"))
    code, _, err = cli(capsys, "check", path)
    user_error(code, err, f"{path}:5:19: error: /dev/zero is not a regular file "
                          "(a device, pipe or socket)")


def test_imported_gdl_files_are_size_capped(tmp_path, capsys):
    (tmp_path / "big.gdl").write_bytes(b"#" * (MAX_GDL_BYTES + 1))
    path = write(tmp_path, "m.gdl", 'use "big.gdl"\n')
    code, _, err = cli(capsys, "check", path)
    user_error(code, err, f"{path}:1:1: error: cannot read big.gdl: it is {MAX_GDL_BYTES + 1} "
                          f"bytes, more than the limit of {MAX_GDL_BYTES}")
    code, _, err = cli(capsys, "check", tmp_path / "big.gdl")
    assert code == 2 and "more than the limit" in err


# -- 1. data errors found at train time are located user errors -----------------------------
def run_error(capsys, tmp_path, gdl: str) -> tuple[Path, list[str]]:
    path = write(tmp_path, "t.gdl", gdl)
    code, out, err = cli(capsys, "run", path, "--out", tmp_path / "out", "--quiet")
    assert code == 2 and "Traceback" not in err and "internal error" not in err, err
    return path, err.splitlines()


def test_too_few_tokens_for_T_is_located_at_T(tmp_path, capsys):
    (tmp_path / "small.txt").write_text("just a few words here\n")
    path, lines = run_error(capsys, tmp_path, LM.format(source='text("small.txt", T = 50)', x="x"))
    assert lines[0] == (f"{path}:5:28: error: data source `d`: {tmp_path / 'small.txt'} has 5 "
                        "tokens, too few for windows of T = 50")
    assert lines[2] == '5 | data d = text("small.txt", T = 50)'


def test_a_split_left_empty_at_load_is_located(tmp_path, capsys):
    (tmp_path / "two.txt").write_text("a b c d e\n")
    path, lines = run_error(capsys, tmp_path, LM.format(source='text("two.txt", T = 2)', x="x"))
    assert lines[0].startswith(f"{path}:5:10: error: data source `d`: split [0.9, 0.1] leaves "
                               "a split of text('two.txt') empty")


@pytest.mark.parametrize("body, why", [
    ("", "holds no source<TAB>target lines"),
    ("no tab here\n", "1: expected source<TAB>target, found no tab"),
])
def test_bad_tsv_for_parallel_is_located(tmp_path, capsys, body, why):
    (tmp_path / "p.tsv").write_text(body)
    path, lines = run_error(capsys, tmp_path, LM.format(source='parallel("p.tsv")', x="y_in"))
    sep = ":" if why[0].isdigit() else " "
    assert lines[0] == f"{path}:5:19: error: data source `d`: {tmp_path / 'p.tsv'}{sep}{why}"


def test_a_truncated_mo_catalog_is_located(tmp_path, capsys):
    good = struct.pack("<Iiiiiii", 0x950412DE, 0, 1, 28, 36, 0, 0)
    (tmp_path / "m.mo").write_bytes(good)  # claims one message; the tables are missing
    path, lines = run_error(capsys, tmp_path, LM.format(source='parallel("m.mo")', x="y_in"))
    assert lines[0] == (f"{path}:5:19: error: data source `d`: cannot read the gettext catalog "
                        f"{tmp_path / 'm.mo'}: it is truncated or corrupt")


def test_npz_labels_outside_int32_are_located(tmp_path, capsys):
    np.savez(tmp_path / "big.npz", x=np.zeros((8, 4), np.float32),
             y=np.array([0, 1, 2, 2**40] * 2, np.int64))
    path, lines = run_error(capsys, tmp_path, TRAIN.format(source='npz("big.npz")'))
    assert lines[0] == (f"{path}:5:14: error: data source `d`: {tmp_path / 'big.npz'}: 'y' holds "
                        "integers outside int32's range (0..1099511627776)")


# -- 7. labels a model cannot have -----------------------------------------------------------
def test_negative_npz_labels_name_the_file_and_index(tmp_path, capsys):
    np.savez(tmp_path / "neg.npz", x=np.zeros((8, 4), np.float32),
             y=np.array([0, 1, 2, 1, 0, -1, 2, 1], np.int32))
    path, lines = run_error(capsys, tmp_path, TRAIN.format(source='npz("neg.npz")'))
    assert lines[0] == (f"{path}:5:14: error: data source `d`: {tmp_path / 'neg.npz'}: 'y' holds "
                        "the label -1 at index 5; integer labels must be 0 or more")


def test_negative_csv_labels_with_task_classify(tmp_path, capsys):
    (tmp_path / "c.csv").write_text("a,b,c,d,y\n" + "1,2,3,4,0\n1,2,3,4,-2\n" * 3)
    path = write(tmp_path, "t.gdl", TRAIN.format(source='csv("c.csv", task = "classify")'))
    code, _, err = cli(capsys, "check", path)
    user_error(code, err, f"{path}:5:23: error: {tmp_path / 'c.csv'}: the target column holds the "
                          "label -2 at index 1; integer labels must be 0 or more")


# -- 2. headers against file sizes; sane caps ------------------------------------------------
def test_an_npz_member_claiming_terabytes_is_refused_before_allocating(tmp_path, capsys):
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": (10**11, 4)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("x.npy", head.getvalue() + b"\0" * 64)
        buf = io.BytesIO()
        np.save(buf, np.zeros(10**11 // 10**11, np.int32))
        z.writestr("y.npy", buf.getvalue())
    assert (tmp_path / "huge.npz").stat().st_size < 1000
    path = write(tmp_path, "t.gdl", TRAIN.format(source='npz("huge.npz")'))
    code, _, err = cli(capsys, "check", path)
    user_error(code, err, f"{path}:5:14: error: {tmp_path / 'huge.npz'}: array 'x' claims shape "
                          "[100000000000, 4] of float32 (1600000000000 bytes), but the archive "
                          "holds only 64 bytes for it")


def test_an_idx_file_claiming_more_images_than_it_holds(tmp_path, capsys):
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for prefix, n in (("train", 4 * 10**9), ("t10k", 2)):
        (mnist / f"{prefix}-images-idx3-ubyte").write_bytes(
            b"\0\0\x08\x03" + struct.pack(">III", n, 28, 28) + bytes(2 * 784))
        (mnist / f"{prefix}-labels-idx1-ubyte").write_bytes(
            b"\0\0\x08\x01" + struct.pack(">I", n) + bytes(2))
    path = write(tmp_path, "t.gdl", 'data d = dataset("mnist", path = "mnist")\n')
    code, _, err = cli(capsys, "check", path)
    user_error(code, err, f"{path}:1:27: error: {mnist / 'train-images-idx3-ubyte'} is truncated: "
                          "its header declares [4000000000, 28, 28] (3136000000016 bytes), "
                          "but the file has 1584 bytes")


@pytest.mark.parametrize("source, col, why", [
    ('dataset("mnist1d", n = 10**12)', None, None),
    ('dataset("mnist1d", n = 1000000000000)', 29,
     'dataset("mnist1d") generates at most 100000 samples, got n = 1000000000000'),
    ("adding(100, n = 10000000)", 22,
     "adding(100) with n = 10000000 would generate 2010000000 numbers, more than the limit of "
     "100000000"),
])
def test_huge_generated_data_sets_are_refused(tmp_path, capsys, source, col, why):
    path = write(tmp_path, "t.gdl", f"data d = {source}\n")
    code, _, err = cli(capsys, "check", path)
    assert code == 2 and "internal error" not in err, err
    if why is not None:
        assert err.splitlines()[0] == f"{path}:1:{col}: error: {why}"


# -- 3. load() of a file that is not safetensors ---------------------------------------------
def test_load_of_a_non_safetensors_file_is_a_located_error(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"\x07" * 300)
    np.save(tmp_path / "in.npy", np.ones((2, 4), np.float32))
    path = write(tmp_path, "l.gdl", 'graph net(x: f32[B, 4]) -> f32[B, 3] {\n'
                 '    param w: f32[4, 3] = load("junk.safetensors", "w")\n'
                 "    return x @ w\n}\n")
    code, _, err = cli(capsys, "run", path, "--input", f"x={tmp_path / 'in.npy'}")
    user_error(code, err, f"{path}:2:5: error: cannot initialise `net.w`: "
                          f"{tmp_path / 'junk.safetensors'} is not a safetensors file "
                          "(SafetensorError)")


# -- 6. --data-root ---------------------------------------------------------------------------
@pytest.fixture
def rooted(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    np.savez(root / "d.npz", x=np.zeros((8, 4), np.float32), y=np.zeros(8, np.int32))
    np.savez(tmp_path / "outside.npz", x=np.zeros((8, 4), np.float32), y=np.zeros(8, np.int32))
    write(tmp_path, "lib.gdl", NET.replace("net", "other"))
    (root / "link.npz").symlink_to(tmp_path / "outside.npz")
    return root


def test_data_root_allows_paths_inside(rooted, capsys):
    path = write(rooted, "t.gdl", TRAIN.format(source='npz("d.npz")'))
    code, out, err = cli(capsys, "check", path, "--data-root", rooted)
    assert (code, err) == (0, ""), err


@pytest.mark.parametrize("line, col, what, target", [
    ('use "../lib.gdl"', 1, "use", "lib.gdl"),
    ('data d = npz("../outside.npz")', 14, "npz(path)", "outside.npz"),
    ('data d = npz("link.npz")', 14, "npz(path)", "outside.npz"),
    ('data d = text("/etc/hostname")', 15, "text(path)", None),
])
def test_data_root_refuses_paths_outside(rooted, capsys, line, col, what, target):
    path = write(rooted, "t.gdl", line + "\n")
    code, _, err = cli(capsys, "check", path, "--data-root", rooted)
    where = rooted.parent / target if target else Path("/etc/hostname")
    user_error(code, err, f"{path}:1:{col}: error: {what}: {where} is outside the data root "
                          f"{rooted.resolve()}")
    assert cli(capsys, "check", path)[0] == 0  # allowed without a data root


def test_data_root_covers_load_and_every_command(rooted, capsys):
    (rooted.parent / "w.safetensors").write_bytes(b"")
    path = write(rooted, "l.gdl", 'graph net(x: f32[B, 4]) -> f32[B, 3] {\n'
                 '    param w: f32[4, 3] = load("../w.safetensors", "w")\n'
                 "    return x @ w\n}\n")
    for command in ("check", "show", "run", "bench", "export"):
        extra = ("--graph", "net") if command == "export" else ()
        code, _, err = cli(capsys, command, path, *extra, "--data-root", rooted)
        user_error(code, err, f"{path}:2:31: error: load: {rooted.parent / 'w.safetensors'} is "
                              f"outside the data root {rooted.resolve()}")


def test_data_root_in_the_python_api(rooted):
    import graphdl

    path = write(rooted, "t.gdl", 'data d = npz("../outside.npz")\n')
    with pytest.raises(graphdl.GdlError, match="is outside the data root"):
        graphdl.load(path, data_root=rooted)
    graphdl.load(path)  # without a root, any path


def test_a_source_with_more_classes_than_the_logits_is_refused_before_training(tmp_path, capsys):
    gdl = TRAIN.replace("f32[B, 4]", "f32[B, 64]").format(source='dataset("digits")')
    path, lines = run_error(capsys, tmp_path, gdl)
    assert lines[0] == (f"{path}:9:22: error: the logits have 3 classes, but the labels `d.y` "
                        'have 10 (dataset("digits") has 10 classes)')
    assert lines[-1] == "  = hint: make the last layer 10 wide"
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_a_label_past_the_logits_classes_names_the_value(tmp_path, capsys):
    np.savez(tmp_path / "five.npz", x=np.zeros((20, 4), np.float32),
             y=np.array([0, 1, 2, 3, 4] * 4, np.int32))
    path, lines = run_error(capsys, tmp_path, TRAIN.format(source='npz("five.npz")'))
    assert lines[0].startswith(f"{path}:9:22: error: the logits have 3 classes, but `d.y` holds "
                               "the label ")
    assert "(split 'train', example " in lines[0] and "of npz('five.npz'))" in lines[0]


def test_an_input_npy_claiming_terabytes_or_a_fifo_is_refused(tmp_path, capsys):
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": (10**11, 4)})
    (tmp_path / "huge.npy").write_bytes(head.getvalue() + b"\0" * 64)
    os.mkfifo(tmp_path / "fifo.npy")
    path = write(tmp_path, "g.gdl", NET)
    code, _, err = cli(capsys, "run", path, "--input", f"x={tmp_path / 'huge.npy'}")
    assert (code, err) == (2, f"error: --input x={tmp_path / 'huge.npy'}: its header claims "
                              "shape [100000000000, 4] of float32 (1600000000000 bytes), but the "
                              "file holds only 64 bytes of data\n")
    code, _, err = cli(capsys, "run", path, "--input", f"x={tmp_path / 'fifo.npy'}")
    assert (code, err) == (2, f"error: --input x={tmp_path / 'fifo.npy'}: is not a regular file "
                              "(a pipe)\n")
