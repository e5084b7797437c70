"""Segmentation: the generated `shapes` source, the `ratio_of_sums` metric (mean IoU over
a whole split, not a mean of per-batch IoUs), class maps in `graphdl sample`, and
models/segnet.gdl checking clean. The full training's bar is a slow test in
tests/test_models.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphdl
from graphdl.api import train_model
from graphdl.cli.main import main
from graphdl.errors import GdlError
from graphdl.runtime.data import DataError, open_source
from graphdl.runtime.data.gen import SHAPE_CLASSES, draw_shapes
from graphdl.runtime.sample_plot import choose_layout

ROOT = Path(__file__).resolve().parents[1]


def shapes(**kwargs):
    return open_source("shapes", [], kwargs, Path("."))


# ---------------------------------------------------------------- the shapes source


def test_shapes_fields_and_every_class_present():
    src = shapes(size=16, n=300, seed=1)
    assert src.splits == ("train", "test")
    assert str(src.fields["image"]) == "f32[16, 16, 1]"
    assert str(src.fields["mask"]) == "i32[16, 16]"
    assert src.static_info["classes"] == len(SHAPE_CLASSES) == 4
    train, test = src.arrays("train"), src.arrays("test")
    assert (len(train["image"]), len(test["image"])) == (270, 30)
    image, mask = train["image"], train["mask"]
    assert image.dtype == np.float32 and mask.dtype == np.int32
    assert image.min() >= 0 and image.max() <= 1
    assert set(np.unique(mask)) == {0, 1, 2, 3}
    # every image has at least one shape, and shapes cover a fair part of the pixels
    assert (mask.reshape(len(mask), -1) > 0).any(axis=1).all()
    assert 0.05 < (mask > 0).mean() < 0.5


def test_without_noise_the_mask_is_exactly_the_lit_pixels():
    # shapes are grey levels >= 0.35 on black: a pixel is lit iff some shape covers it
    drawn = draw_shapes(np.random.default_rng(3), 200, 24, 4, 0.0)
    lit = drawn["image"][..., 0] > 0
    np.testing.assert_array_equal(lit, drawn["mask"] > 0)
    # and each shape is one grey level: the pixels of one class in one image that touch
    # no other class are few distinct levels (a shape, or several of that class)
    assert drawn["image"][drawn["mask"] > 0].min() >= 0.35


def test_noise_is_added_to_the_image_only():
    clean = draw_shapes(np.random.default_rng(4), 50, 16, 3, 0.0)
    noisy = draw_shapes(np.random.default_rng(4), 50, 16, 3, 0.2)
    np.testing.assert_array_equal(clean["mask"], noisy["mask"])
    assert 0.05 < np.abs(noisy["image"] - clean["image"]).mean() < 0.2


def test_shapes_are_deterministic_in_seed():
    a = shapes(size=16, n=100, seed=5).arrays("test")
    b = shapes(size=16, n=100, seed=5).arrays("test")
    c = shapes(size=16, n=100, seed=6).arrays("test")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["mask"], c["mask"])


@pytest.mark.parametrize("kwargs, arg, needle", [
    ({"size": 4}, "size", "'size' must be at least 8, got 4"),
    ({"size": 1000}, "size", "'size' must be at most 256, got 1000"),
    ({"max_shapes": 0}, "max_shapes", "'max_shapes' must be at least 1"),
    ({"noise": -0.1}, "noise", "'noise' must be 0 or more"),
    ({"noise": "high"}, "noise", "'noise' must be a number"),
    ({"n": 1}, "n", "'n' must be at least 2"),
    ({"size": 256, "n": 1000}, "n", "would generate 131072000 numbers, more than the limit"),
    ({"shape": 3}, "shape", "unknown argument 'shape'"),
])
def test_bad_arguments_are_data_errors_at_the_argument(kwargs, arg, needle):
    with pytest.raises(DataError) as info:
        shapes(**kwargs)
    assert needle in str(info.value)
    assert info.value.arg == arg


def test_a_bad_argument_in_a_file_exits_2_at_its_caret(tmp_path, capsys):
    path = tmp_path / "bad.gdl"
    path.write_text(MODEL.replace("size = 8,", "size = 4,"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.gdl:" in err and "'size' must be at least 8, got 4" in err
    assert "^" in err and "Traceback" not in err


# ---------------------------------------------------------------- ratio_of_sums

# A segmenter without parameters (a grey-level threshold per class), so NumPy can compute
# the same predictions; the dense layer only gives the train block something to train.
MODEL = """\
graph guess(image: f32[B, 8, 8, 1]) -> i32[B, 8, 8] {
    return cast(clip(image[:, :, :, 0] * 4.0, 0.0, 3.0), "i32")
}

graph dummy(image: f32[B, 8, 8, 1]) -> f32[B] {
    return mean(dense(flatten(image), 1), 1)
}

graph convs(image: f32[B, 8, 8, 1]) -> f32[B, 8, 8, 4] {
    return image |> conv(4) |> relu |> conv(4)
}

graph seg(image: f32[B, 8, 8, 1]) -> f32[B, 8, 8, 4] {
    layer net = convs
    return net(image)
}

graph segment(image: f32[B, 8, 8, 1]) -> i32[B, 8, 8] {
    return argmax(seg.net(image), -1)
}

data s = shapes(size = 8, n = 600, max_shapes = 3, noise = 0.1, seed = 2, split = [0.5, 0.5])

train {
    data = s.train(batch = 50)
    loss = mean(square(dummy(data.image))) + mean(cross_entropy(seg(data.image), data.mask))
    steps = 2
    evaluate on s.test {
        pred = guess(data.image)
        truth = onehot(data.mask, 4)
        mine = onehot(pred, 4)
        hits = sum(truth * mine, [0, 1, 2])
        union = sum(maximum(truth, mine), [0, 1, 2])
        miou = ratio_of_sums(hits, union)
        shape_iou = ratio_of_sums(hits[1:], union[1:])
        right = ratio_of_sums(sum(pred == data.mask), sum(pred >= 0))   # hits / pixels
        accuracy = mean(pred == data.mask)
    }
}
"""


def numpy_iou(pred: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """Per-class intersection over union of two label maps ([..] ints); NaN for a class in
    neither."""
    out = np.full(classes, np.nan)
    for c in range(classes):
        union = ((pred == c) | (truth == c)).sum()
        if union:
            out[c] = ((pred == c) & (truth == c)).sum() / union
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """MODEL trained 2 steps: (the model, its result, the run folder)."""
    root = tmp_path_factory.mktemp("seg")
    path = root / "m.gdl"
    path.write_text(MODEL)
    model = graphdl.load(path)
    result = train_model(model, out_dir=root / "run", progress=False, quiet=True)
    return model, result, root


def test_ratio_of_sums_is_mean_iou_over_the_whole_split(run):
    model, result, _ = run
    test = model.sources["s"].arrays("test")
    assert len(test["mask"]) == 300  # evaluated in batches of 256 and 44: uneven
    pred = np.clip(test["image"][..., 0] * 4.0, 0.0, 3.0).astype(np.int32)
    iou = numpy_iou(pred, test["mask"], 4)
    metrics = result.metrics["test"]
    assert metrics["miou"] == pytest.approx(np.nanmean(iou), abs=2e-6)
    assert metrics["shape_iou"] == pytest.approx(np.nanmean(iou[1:]), abs=2e-6)
    # what averaging per-batch IoUs over examples (the old way) would have given differs
    per_batch = [np.nanmean(numpy_iou(pred[a:b], test["mask"][a:b], 4)) for a, b in
                 ((0, 256), (256, 300))]
    weighted = (256 * per_batch[0] + 44 * per_batch[1]) / 300
    assert abs(weighted - metrics["miou"]) > 2e-5  # 10x the tolerance of the match above
    # and a mean of per-image IoUs is another number again
    per_image = np.mean([np.nanmean(numpy_iou(p, t, 4)) for p, t in zip(pred, test["mask"])])
    assert abs(per_image - metrics["miou"]) > 0.01
    # a scalar ratio is a plain ratio of totals: the pixel accuracy, as the example mean
    assert metrics["right"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert metrics["accuracy"] == pytest.approx((pred == test["mask"]).mean(), abs=1e-6)


def test_a_class_in_neither_map_is_left_out_of_the_mean():
    from graphdl.ops.math import ratio_of_sums
    assert float(ratio_of_sums(np.array([1.0, 0.0, 2.0]), np.array([2.0, 0.0, 4.0]))) == 0.5
    assert np.isnan(float(ratio_of_sums(np.zeros(2), np.zeros(2))))


def test_ratio_of_sums_inside_an_expression_is_an_error(tmp_path, capsys):
    path = tmp_path / "m.gdl"
    path.write_text(MODEL.replace("miou = ratio_of_sums(hits, union)",
                                  "miou = 1.0 - ratio_of_sums(hits, union)"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ratio_of_sums(...) must be the whole right-hand side of a metric" in err
    assert "m.gdl:" in err and "Traceback" not in err


def test_sums_that_follow_the_batch_size_are_a_user_error(tmp_path, capsys):
    # per-example counts [B]: batches of 256 and 44 cannot be added up
    path = tmp_path / "m.gdl"
    path.write_text(MODEL.replace("miou = ratio_of_sums(hits, union)",
                                  "miou = ratio_of_sums(sum(truth * mine, [1, 2, 3]), "
                                  "sum(maximum(truth, mine), [1, 2, 3]))"))
    status = main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert ("metric `miou`: the numerator of ratio_of_sums has shape [256] on one batch "
            "and [44] on a batch of 44") in err
    assert "sum it over the batch axis" in err and "Traceback" not in err


# ---------------------------------------------------------------- class maps in sample


def test_integer_maps_are_drawn_as_class_maps():
    assert choose_layout((5, 8, 8), integer=True).kind == "classes"
    assert choose_layout((5, 8, 8)).kind == "images"  # float maps stay grey images
    assert choose_layout((5, 64), integer=True).kind == "images"


def test_sample_draws_input_truth_and_prediction(run, capsys):
    _, _, root = run
    png = root / "seg.png"
    capsys.readouterr()
    args = ["sample", str(root / "m.gdl"), "--graph", "segment", "--data", "s.test",
            "--n", "6", "--out", str(root / "run")]
    assert main([*args, "--color", "mask", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "int32[6, 8, 8]" in out
    assert "a grid of class maps of 6 samples beside their inputs, beside the true mask" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = np.load(root / "run" / "samples_segment.npy")
    assert drawn.shape == (6, 8, 8) and drawn.min() >= 0 and drawn.max() < 4
    # without the truth, two panels a cell instead of three: another grid
    alone = root / "alone.png"
    assert main([*args, "--png", str(alone)]) == 0
    assert png.read_bytes()[16:24] != alone.read_bytes()[16:24]  # width, height


@pytest.mark.parametrize("field, message", [
    ("image", "--color image: the field s.test.image is float32[8, 8, 1] per example, but "
              "the class maps are int32[8, 8]"),
    ("label", "--color label: the split s.test has no field `label`; its fields are image, mask"),
])
def test_a_wrong_truth_field_exits_2(run, capsys, field, message):
    _, _, root = run
    capsys.readouterr()
    status = main(["sample", str(root / "m.gdl"), "--graph", "segment", "--data", "s.test",
                   "--n", "4", "--out", str(root / "run"), "--color", field])
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err


# ---------------------------------------------------------------- models/segnet.gdl


def test_segnet_checks(capsys):
    assert main(["check", str(ROOT / "models" / "segnet.gdl")]) == 0
    assert "segnet.gdl: ok (4 graphs, 1 train block)" in capsys.readouterr().out


def test_a_metric_error_is_not_raised_for_a_plain_run(run):
    # the fixture's run reached its evaluation: GdlError would have failed it
    assert run[1].steps == 2 and not isinstance(run[1], GdlError)
