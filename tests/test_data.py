"""Tests of graphdl.runtime.data: every source's fields, splits and determinism, the
batching contract, the user errors, and the MNIST download against a loopback server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from graphdl.runtime.data import (
    SOURCES,
    DataError,
    Field,
    Source,
    batches,
    num_batches,
    open_source,
)
from graphdl.runtime.data import mnist as data_mnist


def open_(kind: str, *args, base: Path = Path("."), **kwargs) -> Source:
    return open_source(kind, list(args), kwargs, base)


def assert_fields_match(src: Source) -> dict:
    """Every split's arrays have exactly the declared fields, shapes and dtypes."""
    np_dtype = {"f32": np.float32, "i32": np.int32, "bool": np.bool_}
    out = {}
    for split in src.splits:
        arrays = src.arrays(split)
        assert set(arrays) == set(src.fields), split
        lengths = {len(a) for a in arrays.values()}
        assert len(lengths) == 1 and lengths.pop() > 0
        for name, field in src.fields.items():
            assert arrays[name].shape[1:] == field.shape, (split, name)
            assert arrays[name].dtype == np_dtype[field.dtype], (split, name)
        out[split] = arrays
    return out


def sizes(src: Source) -> dict[str, int]:
    return {s: len(src.arrays(s)["x"]) for s in src.splits}


def sorted_rows(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


def raises(kind: str, *args, base: Path = Path("."), **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        open_(kind, *args, base=base, **kwargs)
    return info.value


# ---------------------------------------------------------------- dataset(...)


def test_digits_fields_shapes_and_ranges():
    src = open_("dataset", "digits")
    assert src.fields == {"x": Field((64,), "f32"), "image": Field((8, 8, 1), "f32"),
                          "y": Field((), "i32")}
    assert src.splits == ("train", "test")
    assert src.info["classes"] == 10
    arrays = assert_fields_match(src)
    assert sizes(src) == {"train": 1438, "test": 359}
    x = arrays["train"]["x"]
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(arrays["test"]["y"])) == set(range(10))


def test_digits_three_way_split_partitions_the_data():
    from sklearn.datasets import load_digits

    src = open_("dataset", "digits", split=[0.7, 0.1, 0.2], seed=3)
    assert src.splits == ("train", "val", "test")
    assert sizes(src) == {"train": 1258, "val": 180, "test": 359}
    together = np.concatenate([src.arrays(s)["x"] for s in src.splits])
    expected = (load_digits().data / 16.0).astype(np.float32)
    np.testing.assert_array_equal(sorted_rows(together), sorted_rows(expected))


def test_digits_split_is_deterministic_in_seed():
    a = open_("dataset", "digits", seed=1).arrays("train")
    b = open_("dataset", "digits", seed=1).arrays("train")
    c = open_("dataset", "digits", seed=2).arrays("train")
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y"], b["y"])
    assert not np.array_equal(a["y"], c["y"])


def test_arrays_are_cached_and_read_only():
    src = open_("dataset", "digits")
    first, second = src.arrays("train"), src.arrays("train")
    assert first["x"] is second["x"]
    with pytest.raises(ValueError):
        first["x"][0, 0, 0, 0] = 5.0


@pytest.mark.parametrize(
    "name, width, classes", [("iris", 4, 3), ("wine", 13, 3), ("breast_cancer", 30, 2)]
)
def test_tabular_datasets_are_standardized_on_train(name, width, classes):
    src = open_("dataset", name)
    assert src.fields == {"x": Field((width,), "f32"), "y": Field((), "i32")}
    assert src.info["classes"] == classes
    train = assert_fields_match(src)["train"]
    np.testing.assert_allclose(train["x"].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train["x"].std(0), 1, atol=1e-3)
    assert set(np.unique(train["y"])) == set(range(classes))


def test_diabetes_is_regression_with_column_targets():
    src = open_("dataset", "diabetes")
    assert src.fields["y"] == Field((1,), "f32")
    assert "classes" not in src.info
    assert_fields_match(src)


def test_mnist1d_own_split_and_val_carving():
    state = np.random.get_state()
    src = open_("dataset", "mnist1d")
    assert src.fields == {"x": Field((40,), "f32"), "y": Field((), "i32")}
    assert sizes(src) == {"train": 4000, "test": 1000}
    assert_fields_match(src)
    # make_dataset seeds numpy's global generator; the caller's state must survive.
    assert np.array_equal(np.random.get_state()[1], state[1])

    carved = open_("dataset", "mnist1d", split=[0.9, 0.1], seed=0)
    assert carved.splits == ("train", "val", "test")
    assert sizes(carved) == {"train": 3600, "val": 400, "test": 1000}
    np.testing.assert_array_equal(carved.arrays("test")["x"], src.arrays("test")["x"])
    together = np.concatenate([carved.arrays("train")["x"], carved.arrays("val")["x"]])
    np.testing.assert_array_equal(sorted_rows(together), sorted_rows(src.arrays("train")["x"]))


def test_own_split_refuses_three_fractions():
    err = raises("dataset", "mnist1d", split=[0.7, 0.1, 0.2])
    assert err.arg == "split" and "own test split" in err.message


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "split, needle",
    [
        ([0.8, 0.3], "sum to 1.1"),
        ([0.5, 0.2, 0.2], "sum to 0.9"),
        ([1.0], "2 or 3 fractions"),
        ([0.5, 0.25, 0.125, 0.125], "2 or 3 fractions"),
        ([0.8, "a"], "between 0 and 1"),
        ([1.2, -0.2], "between 0 and 1"),
        (0.8, "2 or 3 fractions"),
    ],
)
def test_bad_split_is_a_data_error(split, needle):
    err = raises("dataset", "digits", split=split)
    assert needle in err.message and err.arg == "split"


def test_split_sum_within_tolerance_is_accepted():
    src = open_("dataset", "digits", split=[0.7, 0.2, 0.1 + 5e-7])
    assert src.splits == ("train", "val", "test")


def test_unknown_dataset_name_suggests_the_closest():
    err = raises("dataset", "digit")
    assert err.arg == "name" and err.hint == "did you mean 'digits'?"
    assert "mnist1d" in err.message  # the known names are listed


def test_unknown_source_kind_and_keyword_suggest_the_closest():
    err = raises("datset", "digits")
    assert err.hint == "did you mean 'dataset'?"
    err = raises("dataset", "digits", sede=1)
    assert err.arg == "sede" and err.hint == "did you mean 'seed'?"


def test_binding_errors_name_the_argument():
    assert raises("adding").arg == "T"
    assert raises("adding", 10, T=10).arg == "T"  # given twice
    assert "at most 4 arguments" in raises("adding", 1, 2, 3, None, 5).message
    assert raises("adding", "ten").arg == "T"
    assert raises("adding", 10, seed=True).arg == "seed"  # a bool is not an integer
    assert raises("dataset", "digits", path="somewhere").arg == "path"  # mnist only
    assert raises("gaussian_ring", std=-1.0).arg == "std"


def test_source_defs_are_consistent():
    for kind, sdef in SOURCES.items():
        assert sdef.name == kind and sdef.doc
        assert set(sdef.defaults) <= set(sdef.params)
        assert len(set(sdef.params)) == len(sdef.params)


def test_unknown_split_names_and_val_hint():
    src = open_("dataset", "digits", split=[0.7, 0.1, 0.2])
    with pytest.raises(DataError) as info:
        src.arrays("valid")
    assert info.value.hint == "did you mean 'val'?"
    with pytest.raises(DataError) as info:
        open_("dataset", "digits").arrays("val")
    assert "three fractions" in info.value.hint


# ---------------------------------------------------------------- generated tasks


def test_adding_problem_targets_are_the_marked_sums():
    src = open_("adding", 20, n=500, seed=4)
    assert src.fields == {"x": Field((20, 2), "f32"), "y": Field((1,), "f32")}
    train = assert_fields_match(src)["train"]
    assert sizes(src) == {"train": 450, "test": 50}
    values, markers = train["x"][..., 0], train["x"][..., 1]
    assert np.all(markers.sum(1) == 2)
    assert np.all(markers[:, :10].sum(1) == 1)  # one marker in each half
    np.testing.assert_allclose((values * markers).sum(1), train["y"][:, 0], rtol=1e-6)


@pytest.mark.parametrize("kind", ["copy", "reverse"])
def test_copy_and_reverse(kind):
    src = open_(kind, 12, 5, n=300)
    assert src.fields == {"x": Field((12,), "i32"), "y": Field((12,), "i32")}
    assert src.info["vocab_size"] == 5
    arrays = assert_fields_match(src)["test"]
    x, y = arrays["x"], arrays["y"]
    assert x.min() >= 0 and x.max() == 4
    np.testing.assert_array_equal(y, x if kind == "copy" else x[:, ::-1])


def test_gaussian_ring_points_sit_near_their_mode():
    src = open_("gaussian_ring", k=6, n=1200, radius=3.0, std=0.05, seed=1)
    assert src.fields == {"x": Field((2,), "f32"), "y": Field((), "i32")}
    train = assert_fields_match(src)["train"]
    x, y = train["x"], train["y"]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 3.0, atol=0.3)
    angles = 2 * np.pi * np.arange(6) / 6
    centers = 3.0 * np.stack([np.cos(angles), np.sin(angles)], -1)
    nearest = np.argmin(((x[:, None] - centers) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, y)
    assert set(np.unique(y)) == set(range(6))


@pytest.mark.parametrize("kind, args", [("adding", (8,)), ("copy", (8, 4)), ("gaussian_ring", ())])
def test_generated_tasks_are_deterministic_in_seed(kind, args):
    a = open_(kind, *args, n=200, seed=5).arrays("train")
    b = open_(kind, *args, n=200, seed=5).arrays("train")
    c = open_(kind, *args, n=200, seed=6).arrays("train")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["x"], c["x"])


# ---------------------------------------------------------------- batches


def test_batches_cover_every_example_once_per_epoch():
    arrays = {"x": np.arange(103, dtype=np.float32)[:, None], "y": np.arange(103, dtype=np.int32)}
    orders = []
    for epoch in range(3):
        got = list(batches(arrays, 10, shuffle=True, seed=7, epoch=epoch, drop_last=False))
        assert len(got) == num_batches(103, 10, False) == 11
        assert [len(b["y"]) for b in got] == [10] * 10 + [3]
        order = np.concatenate([b["y"] for b in got])
        np.testing.assert_array_equal(np.sort(order), np.arange(103))
        for b in got:  # fields stay aligned
            np.testing.assert_array_equal(b["x"][:, 0], b["y"])
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    again = list(batches(arrays, 10, shuffle=True, seed=7, epoch=1, drop_last=False))
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in again]), orders[1])
    other = list(batches(arrays, 10, shuffle=True, seed=8, epoch=1, drop_last=False))
    assert not np.array_equal(np.concatenate([b["y"] for b in other]), orders[1])


def test_batches_drop_last_and_plain_order():
    arrays = {"y": np.arange(25, dtype=np.int32)}
    dropped = list(batches(arrays, 8, shuffle=True, seed=0, epoch=0, drop_last=True))
    assert [len(b["y"]) for b in dropped] == [8, 8, 8] and num_batches(25, 8, True) == 3
    assert len(np.unique(np.concatenate([b["y"] for b in dropped]))) == 24
    plain = list(batches(arrays, 8, shuffle=False, seed=0, epoch=0, drop_last=False))
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in plain]), np.arange(25))
    assert list(batches(arrays, 30, shuffle=False, seed=0, epoch=0, drop_last=True)) == []
    assert num_batches(25, 30, True) == 0 and num_batches(25, 30, False) == 1
    with pytest.raises(DataError):
        next(batches(arrays, 0, shuffle=False, seed=0, epoch=0, drop_last=False))


# ---------------------------------------------------------------- npz


def test_npz_fields_come_from_headers_without_loading(tmp_path, monkeypatch):
    np.savez(
        tmp_path / "d.npz",
        x=np.random.rand(50, 3, 4),
        y=np.arange(50, dtype=np.int64),
        w=np.ones(50, bool),
    )
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("opening must not load data"))
    src = open_("npz", "d.npz", base=tmp_path)
    assert src.fields == {
        "x": Field((3, 4), "f32"),
        "y": Field((), "i32"),
        "w": Field((), "bool"),
    }
    monkeypatch.undo()
    assert sizes(src) == {"train": 40, "test": 10}
    assert_fields_match(src)


def test_npz_own_splits_and_name_mapping(tmp_path):
    np.savez_compressed(
        tmp_path / "own.npz",
        images_train=np.zeros((30, 2), np.float32),
        labels_train=np.arange(30),
        images_test=np.ones((10, 2), np.float32),
        labels_test=np.arange(10),
    )
    src = open_("npz", "own.npz", x="images", y="labels", split=[0.8, 0.2], base=tmp_path)
    assert src.fields == {"x": Field((2,), "f32"), "y": Field((), "i32")}
    assert src.splits == ("train", "val", "test")
    assert sizes(src) == {"train": 24, "val": 6, "test": 10}
    assert np.all(src.arrays("test")["x"] == 1)
    err = raises("npz", "own.npz", x="image", base=tmp_path)
    assert err.arg == "x" and err.hint == "did you mean 'images'?"


@pytest.mark.parametrize(
    "write, needle",
    [
        (lambda p: p.write_bytes(b"not a zip at all"), "not an .npz archive"),
        (lambda p: np.savez(p, x=np.zeros((5, 2)), y=np.zeros(4)), "differ in length"),
        (lambda p: np.savez(p, x=np.zeros(3), s=np.array(["a", "b", "c"])), "not a number"),
        (lambda p: np.savez(p, x=np.zeros((3, 2)), y=np.float64(1.0)), "scalar"),
        (lambda p: np.savez(p, x_train=np.zeros((3, 2)), y_test=np.zeros(3)), "same arrays"),
        (lambda p: np.savez(p, x=np.zeros(3), x_train=np.zeros(3), x_test=np.zeros(2)), "both"),
    ],
)
def test_npz_bad_files(tmp_path, write, needle):
    write(tmp_path / "bad.npz")
    err = raises("npz", "bad.npz", base=tmp_path)
    assert needle in err.message and err.arg == "path"


def test_npz_int64_out_of_int32_range(tmp_path):
    np.savez(tmp_path / "big.npz", x=np.zeros((4, 1)), y=np.array([0, 1, 2, 2**40]))
    src = open_("npz", "big.npz", base=tmp_path)
    with pytest.raises(DataError, match="int32's range"):
        src.arrays("train")


def test_missing_file_names_the_path(tmp_path):
    err = raises("npz", "nope.npz", base=tmp_path)
    assert err.arg == "path" and str(tmp_path / "nope.npz") in err.message


# ---------------------------------------------------------------- csv


def test_csv_with_header_and_named_target(tmp_path):
    rows = "\n".join(f"{i},{i * 0.5},{i % 3}" for i in range(40))
    (tmp_path / "t.csv").write_text("a,b,label\n" + rows + "\n")
    src = open_("csv", "t.csv", base=tmp_path)
    assert src.fields == {"x": Field((2,), "f32"), "y": Field((), "i32")}
    assert src.info["classes"] == 3 and src.info["columns"] == ["a", "b", "label"]
    arrays = assert_fields_match(src)
    x, y = arrays["train"]["x"], arrays["train"]["y"]
    np.testing.assert_array_equal(x[:, 0].astype(int) % 3, y)
    named = open_("csv", "t.csv", target="a", base=tmp_path)
    assert named.fields["y"].dtype == "i32"
    err = raises("csv", "t.csv", target="lable", base=tmp_path)
    # the header's names are the file's content: the error never lists them
    assert err.arg == "target" and "label" not in str(err) and "3 columns" in err.message


def test_csv_float_target_and_no_header(tmp_path):
    rows = "\n".join(f"{i};{i / 7:.4f}" for i in range(20))
    (tmp_path / "r.csv").write_text(rows + "\n")
    src = open_("csv", "r.csv", delimiter=";", base=tmp_path)
    assert src.fields == {"x": Field((1,), "f32"), "y": Field((1,), "f32")}
    assert sum(sizes(src).values()) == 20  # the numeric first row is data, not a header
    np.testing.assert_allclose(
        src.arrays("train")["y"][:, 0], src.arrays("train")["x"][:, 0] / 7, atol=1e-4
    )


@pytest.mark.parametrize(
    "body, needle",
    [
        ("a,b\n1,2\n3,oops\n5,6\n", "bad.csv:3: column 2 is not a number"),
        ("a,b\n1,2\n\n3\n5,6\n", "bad.csv:4: 1 cells, expected 2"),
        ("a,b\n1,2\n3,\n", "bad.csv:3: column 2 is empty"),
        ("a,b\n1,nan\n3,4\n", "not a finite number"),
        ("", "is empty"),
    ],
)
def test_csv_bad_rows_name_file_and_line(tmp_path, body, needle):
    (tmp_path / "bad.csv").write_text(body)
    err = raises("csv", "bad.csv", base=tmp_path)
    assert needle in err.message
    assert "oops" not in str(err)  # a cell is never quoted


# ---------------------------------------------------------------- MNIST (IDX)


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    dims = np.array(arr.shape, ">u4").tobytes()
    return bytes([0, 0, code, arr.ndim]) + dims + arr.tobytes()


def write_mnist(folder: Path, gz: bool, n_train: int = 30, n_test: int = 12) -> dict[str, bytes]:
    """Small synthetic MNIST files; returns name -> bytes as written."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays = {
            f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            f"{prefix}-labels-idx1-ubyte": rng.integers(0, 10, n, dtype=np.uint8),
        }
        for name, arr in arrays.items():
            raw = idx_bytes(arr)
            name, raw = (name + ".gz", gzip.compress(raw, mtime=0)) if gz else (name, raw)
            (folder / name).write_bytes(raw)
            written[name] = raw
    return written


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_a_folder(tmp_path, gz):
    write_mnist(tmp_path / "mnist", gz=gz)
    src = open_("dataset", "mnist", path="mnist", base=tmp_path)
    assert src.fields == {"x": Field((28, 28, 1), "f32"), "y": Field((), "i32")}
    arrays = assert_fields_match(src)
    assert sizes(src) == {"train": 30, "test": 12}
    assert 0.0 <= arrays["train"]["x"].min() and arrays["train"]["x"].max() <= 1.0
    assert arrays["train"]["x"].max() > 0.9
    carved = open_("dataset", "mnist", path="mnist", split=[0.8, 0.2], base=tmp_path)
    assert sizes(carved) == {"train": 24, "val": 6, "test": 12}


def test_mnist_folder_errors(tmp_path):
    write_mnist(tmp_path / "m", gz=False)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    err = raises("dataset", "mnist", path="m", base=tmp_path)
    assert "t10k-labels-idx1-ubyte" in err.message and err.arg == "path"
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05")
    assert "12 images but" in raises("dataset", "mnist", path="m", base=tmp_path).message
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04junk")
    assert "bad magic" in raises("dataset", "mnist", path="m", base=tmp_path).message


class _Server:
    """A loopback HTTP server for a folder, counting the requests it answers."""

    def __init__(self, folder: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API name
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep pytest's output clean
                pass

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def mnist_server(tmp_path, monkeypatch):
    files = write_mnist(tmp_path / "served", gz=True)
    server = _Server(tmp_path / "served")
    checksums = {name: hashlib.sha256(raw).hexdigest() for name, raw in files.items()}
    monkeypatch.setattr(data_mnist, "MNIST_SHA256", checksums)
    monkeypatch.setenv("GRAPHDL_MNIST_URL", server.url)
    monkeypatch.setenv("GRAPHDL_CACHE", str(tmp_path / "cache"))
    yield server, checksums
    server.close()


def test_mnist_downloads_once_then_uses_the_cache(mnist_server, tmp_path):
    server, checksums = mnist_server
    src = open_("dataset", "mnist")
    assert src.fields["x"] == Field((28, 28, 1), "f32")
    assert server.requests == []  # opening (what `graphdl check` does) stays offline
    assert_fields_match(src)
    assert sorted(server.requests) == sorted("/" + name for name in checksums)
    cached = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(checksums)

    again = open_("dataset", "mnist")
    np.testing.assert_array_equal(again.arrays("test")["x"], src.arrays("test")["x"])
    assert len(server.requests) == 4  # nothing fetched the second time


def test_mnist_corrupt_download_leaves_nothing_cached(mnist_server, tmp_path, monkeypatch):
    server, checksums = mnist_server
    bad = dict(checksums, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    monkeypatch.setattr(data_mnist, "MNIST_SHA256", bad)
    with pytest.raises(DataError) as info:
        open_("dataset", "mnist").arrays("train")
    assert "corrupt" in info.value.message and "t10k-images" in info.value.message
    cached = sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir())
    assert "t10k-images-idx3-ubyte.gz" not in cached
    assert not [name for name in cached if name.endswith(".part")]

    # With the right checksum, only the files not yet cached are fetched.
    monkeypatch.setattr(data_mnist, "MNIST_SHA256", checksums)
    before = len(server.requests)
    open_("dataset", "mnist").arrays("train")
    assert sorted(server.requests[before:]) == sorted("/" + n for n in checksums if n not in cached)
    assert "/t10k-images-idx3-ubyte.gz" in server.requests[before:]


def test_mnist_download_failure_is_a_data_error(mnist_server, tmp_path):
    server, _ = mnist_server
    (tmp_path / "served" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        open_("dataset", "mnist").arrays("train")
    assert "could not download" in info.value.message and "404" in info.value.message
    assert 'path = "folder"' in info.value.hint
    assert not (tmp_path / "cache" / "mnist" / "train-labels-idx1-ubyte.gz").exists()


# ---------------------------------------------------------------- text and parallel


def test_text_windows_predict_the_next_token(tmp_path):
    words = " ".join(f"w{i % 17}" for i in range(1000))
    (tmp_path / "corpus.txt").write_text(words + ".")
    src = open_("text", "corpus.txt", T=8, vocab=10, base=tmp_path)
    assert src.fields == {"x": Field((8,), "i32"), "y": Field((8,), "i32")}
    assert src.info["vocab_size"] == 10 and src.info["vocab"][0] == "<unk>"
    train = assert_fields_match(src)["train"]
    np.testing.assert_array_equal(train["x"][:, 1:], train["y"][:, :-1])
    assert train["x"].max() <= 9 and (train["x"] == 0).any()  # rare words became <unk>
    chars = open_("text", "corpus.txt", T=5, level="char", base=tmp_path)
    assert set(chars.info["vocab"]) >= {"w", "1", " "}


def test_parallel_pairs_are_padded_with_bos_and_eos(tmp_path):
    lines = [f"the cat {i}\tdie katze {i}" for i in range(30)] + ["a b c d e f g\tzu lang"]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    src = open_("parallel", "pairs.tsv", L=4, base=tmp_path)
    assert src.fields["x"] == Field((4,), "i32") and src.fields["y"] == Field((5,), "i32")
    info = src.info
    assert info["dropped"] == 1 and info["tgt_vocab"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    arrays = assert_fields_match(src)["train"]
    assert np.all(arrays["y_in"][:, 0] == info["bos"])
    assert np.all(arrays["y"][:, 3] == info["eos"]) and np.all(arrays["y"][:, 4] == 0)
    np.testing.assert_array_equal(arrays["y_in"][:, 1:4], arrays["y"][:, :3])
    assert src.fields["lengths"] == src.fields["y_lengths"] == Field((), "i32")
    np.testing.assert_array_equal(arrays["lengths"], (arrays["x"] != 0).sum(1))
    np.testing.assert_array_equal(arrays["y_lengths"], (arrays["y"] != 0).sum(1))
    assert arrays["lengths"].dtype == arrays["y_lengths"].dtype == np.int32
    (tmp_path / "bad.tsv").write_text("one\ttwo\nno tab here\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: expected source<TAB>target"):
        open_("parallel", "bad.tsv", base=tmp_path).arrays("train")


def write_mo(path: Path, pairs: dict[str, str]) -> None:
    """A minimal GNU gettext catalog (the .mo format: two tables of (length, offset))."""
    entries = sorted({"": "Content-Type: text/plain; charset=UTF-8\n", **pairs}.items())
    keys = [k.encode() for k, _ in entries]
    values = [v.encode() for _, v in entries]
    start = 28 + 16 * len(entries)
    blob, tables = b"", []
    for strings in (keys, values):
        table = []
        for s in strings:
            table += [len(s), start + len(blob)]
            blob += s + b"\0"
        tables.append(table)
    header = [0x950412DE, 0, len(entries), 28, 28 + 8 * len(entries), 0, 0]
    path.write_bytes(np.array(header + tables[0] + tables[1], "<u4").tobytes() + blob)


def test_parallel_reads_gettext_catalogs(tmp_path):
    write_mo(tmp_path / "app.mo", {f"Open file {i}": f"Datei {i} öffnen" for i in range(10)})
    src = open_("parallel", "app.mo", L=3, split=[0.5, 0.5], base=tmp_path)
    info = src.info
    assert "öffnen" in info["tgt_vocab"] and "file" in info["src_vocab"]
    assert info["dropped"] == 0  # the catalog's header entry is not a pair
    assert sum(sizes(src).values()) == 10
    (tmp_path / "broken.mo").write_bytes(b"\x00" * 40)
    with pytest.raises(DataError, match="gettext catalog"):
        open_("parallel", "broken.mo", base=tmp_path).arrays("train")


def test_mnist1d_is_generated_once_then_read_from_the_cache(monkeypatch, tmp_path):
    from graphdl.runtime.data import sets

    monkeypatch.setenv("GRAPHDL_CACHE", str(tmp_path))
    made = []
    real = sets._make_mnist1d
    monkeypatch.setattr(sets, "_make_mnist1d", lambda n: made.append(n) or real(n))
    first = sets._mnist1d.__wrapped__(40)
    (cached,) = (tmp_path / "mnist1d").iterdir()
    again = sets._mnist1d.__wrapped__(40)
    assert made == [40]  # the second call read the file
    for k in sets.MNIST1D_KEYS:
        np.testing.assert_array_equal(again[k], first[k])
    cached.write_bytes(b"not an npz")  # a broken cache file is made again, not an error
    third = sets._mnist1d.__wrapped__(40)
    assert made == [40, 40]
    np.testing.assert_array_equal(third["x"], first["x"])


def test_sklearn_sets_are_read_once_then_from_the_cache(monkeypatch, tmp_path):
    # importing sklearn.datasets and parsing its CSV took most of cnn2d.gdl's warm start
    from graphdl.runtime.data import sets

    monkeypatch.setenv("GRAPHDL_CACHE", str(tmp_path))
    read = []
    real = sets._read_sklearn
    monkeypatch.setattr(sets, "_read_sklearn", lambda name: read.append(name) or real(name))
    first = sets._sklearn.__wrapped__("load_digits")
    (cached,) = (tmp_path / "sklearn").iterdir()
    again = sets._sklearn.__wrapped__("load_digits")
    assert read == ["load_digits"]  # the second call read the .npz
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    cached.write_bytes(b"not an npz")  # a broken cache file is read again, not an error
    third = sets._sklearn.__wrapped__("load_digits")
    assert read == ["load_digits", "load_digits"]
    np.testing.assert_array_equal(third[0], first[0])
