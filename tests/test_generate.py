"""generate(...) runs: greedy, sample, beam(k), stop and logp against NumPy loops."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from graphdl.api import loads
from graphdl.errors import GdlError

CELL = """\
cell dec[V = 6, H = 4](tok: i32[B]) -> f32[B, V] {
    state h: f32[B, H] = zeros
    e = embedding(tok, vocab = V, dim = H)
    h = tanh(dense(e, H) + dense(h, H))
    return dense(h, V)
}
"""
START = np.array([0, 1, 3, 5], np.int32)


def compiled(call: str, v: int = 6, seed: int = 0):
    src = CELL + ("graph g(start: i32[B]) {\n"
                  f"    r = generate(dec[V = {v}], {call})\n"
                  "    return r.out, r.logp, r.state.h\n}\n")
    fn = loads(src).compile("g")
    variables = fn.init(jax.random.key(0), START)
    rng = np.random.default_rng(seed)
    params = {k: (1.5 * rng.normal(size=np.shape(a))).astype(np.float32)
              for k, a in variables["params"].items()}
    return fn, {"params": params}


def weights(params):
    def get(suffix):
        (name,) = [k for k in params if k.endswith(suffix)]
        return np.asarray(params[name], np.float64)
    return {s: get(s) for s in ("embedding.w", "h.dense.w", "h.dense.b", "h.dense_1.w",
                                "h.dense_1.b", "out.dense.w", "out.dense.b")}


def np_step(w, tok, h):
    e = w["embedding.w"][tok]
    h = np.tanh(e @ w["h.dense.w"] + w["h.dense.b"] + h @ w["h.dense_1.w"] + w["h.dense_1.b"])
    return h @ w["out.dense.w"] + w["out.dense.b"], h


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_greedy(w, start, steps, stop=None):
    tok, h = start, np.zeros((len(start), 4))
    done = np.zeros(len(start), bool)
    logp, outs = np.zeros(len(start)), []
    for _ in range(steps):
        logits, h = np_step(w, tok, h)
        lsm = log_softmax(logits)
        new = lsm.argmax(-1)
        gained = lsm[np.arange(len(new)), new]
        if stop is not None:
            new = np.where(done, stop, new)
            gained = np.where(done, 0.0, gained)
            done |= new == stop
        logp += gained
        outs.append(new)
        tok = new
    return np.stack(outs, 1), logp, h


def np_logp(w, start, seq):
    """The total log-probability of a given continuation."""
    tok, h, total = start, np.zeros((len(start), 4)), np.zeros(len(start))
    for t in range(seq.shape[1]):
        logits, h = np_step(w, tok, h)
        total += log_softmax(logits)[np.arange(len(start)), seq[:, t]]
        tok = seq[:, t]
    return total


def test_greedy_matches_a_numpy_loop():
    fn, v = compiled("start = start, steps = 7")
    out, logp, h = fn(v, START)
    want_out, want_logp, want_h = np_greedy(weights(v["params"]), START, 7)
    assert out.shape == (4, 7) and out.dtype == np.int32
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_allclose(logp, want_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logp, np_logp(weights(v["params"]), START, np.asarray(out)),
                               rtol=1e-5, atol=1e-5)


def test_pick_given_positionally():
    fn, v = compiled("start = start, steps = 3")
    src = CELL + ("graph g(start: i32[B]) {\n    a = generate(dec, start = start, steps = 1)\n"
                  "    r = generate(dec, a.state, start, 3, argmax)\n    return r.out\n}\n")
    assert loads(src).compile("g") is not None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stop_pads_with_the_stop_token_and_freezes_logp(seed):
    # the stop token: the first token greedy decoding picks for example 0
    fn, v = compiled("start = start, steps = 8", seed=seed)
    w = weights(v["params"])
    free, _, _ = np_greedy(w, START, 8)
    stop = int(free[0, 1])
    fn, v = compiled(f"start = start, steps = 8, stop = {stop}", seed=seed)
    out, logp, _ = fn(v, START)
    want_out, want_logp, _ = np_greedy(w, START, 8, stop=stop)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_allclose(logp, want_logp, rtol=1e-5, atol=1e-5)
    row = np.asarray(out[0])
    first = int(np.argmax(row == stop))
    assert (row[first:] == stop).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_one_is_greedy_and_wider_beams_score_at_least_as_well(seed):
    greedy_fn, v = compiled("start = start, steps = 6", seed=seed)
    g_out, g_logp, g_h = greedy_fn(v, START)
    w = weights(v["params"])
    # one parameter set: the same names, since every call site is `r`
    beam1, _ = compiled("start = start, steps = 6, pick = beam(1)", seed=seed)
    b_out, b_logp, b_h = beam1(v, START)
    np.testing.assert_array_equal(b_out, g_out)
    np.testing.assert_allclose(b_logp, g_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b_h, g_h, rtol=1e-5, atol=1e-5)
    for k in (2, 4, 9):
        beam, _ = compiled(f"start = start, steps = 6, pick = beam({k})", seed=seed)
        out, logp, _ = beam(v, START)
        assert (np.asarray(logp) >= np.asarray(g_logp) - 1e-5).all(), k
        np.testing.assert_allclose(logp, np_logp(w, START, np.asarray(out)),
                                   rtol=1e-5, atol=1e-5)


def test_beam_wide_enough_finds_the_best_sequence():
    # V = 3, 3 steps: beam(9) keeps every prefix of length 2, so it finds the best of 27
    fn, v = compiled("start = start, steps = 3, pick = beam(9)", v=3)
    out, logp, _ = fn(v, START % 3)
    w = weights(v["params"])
    seqs = np.array([[a, b, c] for a in range(3) for b in range(3) for c in range(3)])
    for i, s in enumerate(START % 3):
        scores = np_logp(w, np.full(len(seqs), s), seqs)
        np.testing.assert_allclose(logp[i], scores.max(), rtol=1e-5, atol=1e-5)


def test_beam_with_stop():
    fn, v = compiled("start = start, steps = 6, pick = beam(3), stop = 2")
    out, logp, _ = fn(v, START)
    w = weights(v["params"])
    out = np.asarray(out)
    for row in out:
        if (row == 2).any():
            assert (row[int(np.argmax(row == 2)):] == 2).all()
    # logp counts the picks up to and including the first stop
    total = np.zeros(len(START))
    tok, h = START, np.zeros((len(START), 4))
    done = np.zeros(len(START), bool)
    for t in range(6):
        logits, h = np_step(w, tok, h)
        total += np.where(done, 0.0, log_softmax(logits)[np.arange(len(START)), out[:, t]])
        done |= out[:, t] == 2
        tok = out[:, t]
    np.testing.assert_allclose(logp, total, rtol=1e-5, atol=1e-5)


def test_sample_is_reproducible_and_depends_on_the_key():
    fn, v = compiled("start = start, steps = 12, pick = sample, temperature = 2.0")
    a = fn(v, START, key=jax.random.key(1))
    b = fn(v, START, key=jax.random.key(1))
    c = fn(v, START, key=jax.random.key(2))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    # logp is the picks' log-probability under the cell's logits (not the tempered ones)
    np.testing.assert_allclose(a[1], np_logp(weights(v["params"]), START, np.asarray(a[0])),
                               rtol=1e-5, atol=1e-5)


def test_sample_without_a_key_is_a_clear_error():
    fn, v = compiled("start = start, steps = 3, pick = sample")
    with pytest.raises(GdlError, match="key"):
        fn(v, START)
