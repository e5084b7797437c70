"""`graphdl sample FILE --graph G` and `Model.sample`: draws from a trained graph.

A tiny file is trained for a few steps into tmp folders (a GAN on the ring, and an
autoencoder with image and signal generators on digits); then the command draws from
its graphs: noise inputs, `--input` and `--data` inputs, a graph without inputs, the PNG
kinds (scatter, image grid, line plots, reconstruction pairs), and the user errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphdl
from graphdl.cli.main import main
from graphdl.runtime.sample_plot import choose_layout

MODEL = """\
graph gen(z: f32[B, 2]) -> f32[B, 2] {
    return z |> dense(8) |> relu |> dense(2)
}

graph disc(x: f32[B, 2]) -> f32[B, 1] {
    return x |> dense(8) |> relu |> dense(1)
}

graph pixels[Z = 3](z: f32[B, Z]) -> f32[B, 8, 8] {
    return reshape(sigmoid(dense(z, 64)), [B, 8, 8])
}

graph signal(z: f32[B, 3]) -> f32[B, 40] {
    return dense(z, 40)
}

graph recon(x: f32[B, 64]) -> f32[B, 64] {
    return x |> dense(4) |> relu |> dense(64) |> sigmoid
}

graph labelled(y: i32[B], z: f32[B, 2]) -> f32[B, 2] {
    return onehot(y, 2) + z
}

graph fixed(z: f32[5, 2]) -> f32[5, 2] {
    return z
}

graph prior() -> f32[16, 2] {
    z ~ normal(0, 1, shape = [16, 2])
    return 2.0 * z
}

graph pair(z: f32[B, 2]) -> (f32[B, 2], f32[B, 2]) {
    return z, z
}

data ring = gaussian_ring(8, n = 512)
data digits = dataset("digits")

train gan {
    data = ring.train(batch = 64, shuffle = true)
    z ~ normal(0, 1, shape = [64, 2])
    fake = gen(z)
    step disc {
        loss = mean(bce(disc(data.x), 1) + bce(disc(stop_gradient(fake)), 0))
        over disc
    }
    step gen {
        loss = mean(bce(disc(fake), 1))
        over gen
    }
    steps = 3
}

train ae {
    data = digits.train(batch = 32)
    z ~ normal(0, 1, shape = [32, 3])
    loss = mean(mse(recon(data.x), data.x)) + mean(pixels(z)) + mean(signal(z))
    steps = 3
}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The file, trained: its GAN into OUT/gan, its autoencoder into OUT/ae."""
    root = tmp_path_factory.mktemp("sample")
    path = root / "m.gdl"
    path.write_text(MODEL)
    model = graphdl.load(path)
    model.train("gan", out=str(root / "gan"))
    model.train("ae", out=str(root / "ae"))
    return root


def sample(capsys, trained, *args: str) -> tuple[int, str, str]:
    """Run `graphdl sample m.gdl ARGS` in-process: (status, stdout, stderr)."""
    capsys.readouterr()
    status = main(["sample", str(trained / "m.gdl"), *args])
    out, err = capsys.readouterr()
    return status, out, err


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's header: the file is a real PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_a_2d_generator_writes_a_scatter_and_its_samples(capsys, trained):
    out = trained / "gan"
    status, text, err = sample(capsys, trained, "--graph", "gen", "--out", str(out),
                               "--n", "100", "--seed", "3", "--real", "ring.test")
    assert status == 0, err
    assert "z: f32[100, 2] ~ normal(0, 1)" in text
    assert f"wrote {out}/samples_gen.png (a scatter of 100 samples)" in text
    samples = np.load(out / "samples_gen.npy")
    assert samples.shape == (100, 2) and samples.dtype == np.float32
    png_size(out / "samples_gen.png")
    # the same draw as the API's, from the checkpoint's generator parameters
    api = graphdl.load(trained / "m.gdl").sample("gen", 100, seed=3, out=out)
    np.testing.assert_array_equal(api.output, samples)
    assert api.drawn == ["z: f32[100, 2] ~ normal(0, 1)"]
    # another seed draws other noise
    other = graphdl.load(trained / "m.gdl").sample("gen", 100, seed=4, out=out)
    assert not np.allclose(other.output, samples)


def test_the_generator_uses_the_trained_parameters_not_fresh_ones(trained):
    model = graphdl.load(trained / "m.gdl")
    from_checkpoint = model.sample("gen", 8, out=trained / "gan")
    fn = model.compile("gen")
    import jax
    fresh = fn.init(jax.random.key(0), from_checkpoint.inputs["z"])
    assert not np.allclose(fn(fresh, from_checkpoint.inputs["z"]), from_checkpoint.output)


def test_images_write_a_grid_and_constants_size_the_noise(capsys, trained):
    status, text, err = sample(capsys, trained, "--graph", "pixels", "--out",
                               str(trained / "ae"), "--n", "9")
    assert status == 0, err
    assert "z: f32[9, 3] ~ normal(0, 1)" in text  # Z = 3, a graph constant
    assert "(a grid of 9 samples)" in text
    assert np.load(trained / "ae" / "samples_pixels.npy").shape == (9, 8, 8)
    width, height = png_size(trained / "ae" / "samples_pixels.png")
    assert abs(width - height) < 0.3 * width  # 3 x 3 images: about square


def test_data_feeds_the_inputs_and_a_reconstruction_is_drawn_beside_them(capsys, trained):
    png = trained / "recon.png"
    status, text, err = sample(capsys, trained, "--graph", "recon", "--out",
                               str(trained / "ae"), "--data", "digits.test", "--n", "8",
                               "--png", str(png))
    assert status == 0, err
    assert "~ normal" not in text
    assert "(a grid of 8 samples beside their inputs)" in text
    model = graphdl.load(trained / "m.gdl")
    drawn = model.sample("recon", 8, data="digits.test", out=trained / "ae")
    test_x = model.sources["digits"].arrays("test")["x"][:8]
    np.testing.assert_array_equal(drawn.inputs["x"], test_x)
    assert drawn.given == {"x": "--data digits.test"}
    png_size(png)


def test_input_files_and_the_shape_flag(capsys, trained, tmp_path):
    x = np.random.default_rng(0).random((6, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    status, text, err = sample(capsys, trained, "--graph", "recon", "--out",
                               str(trained / "ae"), "--input", f"x={tmp_path / 'x.npy'}",
                               "--shape", "4,16")
    assert status == 0, err
    assert np.load(trained / "ae" / "samples_recon.npy").shape == (6, 64)  # B from the file
    assert "beside their inputs" in text


def test_vectors_that_are_not_images_are_line_plots(capsys, trained):
    status, text, err = sample(capsys, trained, "--graph", "signal", "--out",
                               str(trained / "ae"), "--n", "5")
    assert status == 0, err
    assert "(line plots of 5 samples)" in text


def test_a_graph_without_inputs_draws_with_its_own_noise(capsys, trained):
    out = trained / "gan"
    status, text, err = sample(capsys, trained, "--graph", "prior", "--out", str(out),
                               "--seed", "1")
    assert status == 0, err
    first = np.load(out / "samples_prior.npy")
    assert first.shape == (16, 2) and "~ normal" not in text
    sample(capsys, trained, "--graph", "prior", "--out", str(out), "--seed", "2")
    assert not np.allclose(np.load(out / "samples_prior.npy"), first)  # --seed keys `~`
    status, _, err = sample(capsys, trained, "--graph", "prior", "--out", str(out),
                            "--n", "4")
    assert status == 0 and "--n does not apply" in err


def test_the_layouts():
    assert choose_layout((10, 2)).kind == "scatter"
    assert choose_layout((10, 64)).image_shape == (8, 8)
    assert choose_layout((10, 28, 28, 1)).image_shape == (28, 28)
    assert choose_layout((10, 4, 4, 3)).image_shape == (4, 4, 3)
    assert choose_layout((10, 40)).kind == "lines"
    assert choose_layout((10, 40), (5, 8)).image_shape == (5, 8)


@pytest.mark.parametrize("args, message", [
    (["--graph", "gne"], "--graph gne: no such graph; the graphs are gen, disc, pixels"),
    (["--graph", "gen", "--out", "{nowhere}"], "no checkpoint in {nowhere}/checkpoint"),
    (["--graph", "labelled", "--out", "{gan}"],
     "`labelled` takes y: i32[B], an integer input that sample cannot draw; give it with "
     "--input y=FILE.npy"),
    (["--graph", "fixed", "--out", "{gan}"],
     "`fixed` takes z: f32[5, 2], whose leading dim is not a symbolic batch dim"),
    (["--graph", "signal", "--out", "{ae}", "--shape", "5,7"],
     "--shape 5,7: the samples have shape (64, 40), 40 values each, not 5 x 7 = 35"),
    (["--graph", "signal", "--out", "{ae}", "--shape", "5"], "--shape 5: expected H,W"),
    (["--graph", "gen", "--out", "{gan}", "--n", "0"],
     "--n 0: the number of samples must be an integer from 1 to"),
    (["--graph", "gen", "--out", "{gan}", "--data", "ring.tset"],
     "--data ring.tset: `ring` has no split `tset`; its splits are train, test"),
    (["--graph", "gen", "--out", "{gan}", "--data", "ring.test"],
     "--data ring.test: no input of `gen` is named like a field of it"),
    (["--graph", "pixels", "--out", "{ae}", "--real", "ring.test"],
     "--real ring.test: `pixels` returns [64, 8, 8], not 2-D points"),
    (["--graph", "pair", "--out", "{gan}"], "`pair` returns 2 outputs"),
    (["--graph", "gen", "--out", "{gan}", "--input", "w={w}"], "--input w: `gen` has no input `w`"),
])
def test_user_errors_exit_2_with_their_message(capsys, trained, args, message):
    np.save(trained / "w.npy", np.zeros((3, 2), np.float32))
    where = {"gan": trained / "gan", "ae": trained / "ae", "nowhere": trained / "nowhere",
             "w": trained / "w.npy"}
    args = [a.format(**where) for a in args]
    status, _, err = sample(capsys, trained, *args)
    assert status == 2, err
    assert message.replace("{nowhere}", str(trained / "nowhere")) in err
    assert "Traceback" not in err


def test_a_missing_checkpoint_says_to_train_first(capsys, trained):
    status, _, err = sample(capsys, trained, "--graph", "gen", "--out",
                            str(trained / "nowhere"))
    assert status == 2
    assert f"hint: train first: graphdl run {trained / 'm.gdl'}" in err
