"""The rewrite passes that choose a lowering: pool_reshape, conv_lowering (with its
autotuning cache) and the one switch that turns every rewrite off."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_passes import ir_of, ops

from graphdl.api import loads
from graphdl.cli.main import main
from graphdl.errors import GdlError
from graphdl.ir import nodes
from graphdl.lower import autotune as measuring
from graphdl.ops import conv_forms
from graphdl.passes import autotune
from graphdl.passes.conv_lowering import tuning_key
from graphdl.passes.pipeline import PIPELINE, run_passes

RNG = np.random.default_rng(7)
REAL_TIMER = measuring.best_times

# every pool the pass rewrites (window = stride, 2-D and 1-D, max and avg, a remainder that
# "valid" drops) and three it keeps (overlapping windows, a padded partial window, indices)
POOLS = """graph g(x: f32[B, 8, 7, 3], s: f32[B, 9, 2]) -> f32[] {
    a = max_pool(x, 2)
    b = avg_pool(x, [2, 1])
    c = max_pool(x, 3)
    d = max_pool(s, 2)
    e = avg_pool(s, 2, stride = 2, padding = "same")
    f = max_pool(x, 3, stride = 2)
    h = max_pool(x, 2, padding = "same")
    m, i = max_pool(x, 2, indices = true)
    return sum(a * a) + sum(b * b) + sum(c) + sum(d * d) + sum(e) + sum(f * f) + sum(h) + sum(m)
}
"""
POOL_INPUTS = [RNG.normal(size=(2, 8, 7, 3)).astype(np.float32),
               RNG.normal(size=(2, 9, 2)).astype(np.float32)]

CONVS = """graph g(x: f32[B, 6, 5, 2]) -> f32[] {
    h = conv(x, 4, 3) |> relu
    h = conv(h, 3, kernel = 2, stride = 2, padding = "valid")
    return sum(h * h)
}
"""
REAL_BEST_TIMES = measuring.best_times  # the fixture below fakes it
ON_CPU = jax.default_backend() == "cpu"
CPU_ONLY = pytest.mark.skipif(not ON_CPU, reason="a candidate of XLA:CPU only")
CONV_INPUTS = [RNG.normal(size=(3, 6, 5, 2)).astype(np.float32)]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test an autotuning cache of its own, and a fake timer: no test depends on
    timing. The timer says "slices" is fastest and counts its calls."""
    monkeypatch.setenv("GRAPHDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GRAPHDL_REWRITES", "on")  # and unset again after the test
    monkeypatch.setenv("GRAPHDL_AUTOTUNE", "on")
    calls = []

    def fake_timer(fns, args):
        calls.append(sorted(fns))
        return {name: {"xla": 3.0, "eigen": 4.0, "slices": 1.0, "patches": 2.0}[
            name.split("+")[0]] for name in fns}  # "slices+eigen": slices under eigen's options
    monkeypatch.setattr(measuring, "best_times", fake_timer)
    return calls




def values_and_grads(src: str, inputs: list, rewrites: bool):
    """The graph's value and its gradients to the parameters and the inputs."""
    fn = loads(src, rewrites=rewrites).compile("g")
    variables = fn.init(jax.random.key(0), *inputs)

    def loss(p, xs):
        return fn({"params": p}, *xs)
    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(variables["params"],
                                                              [jnp.asarray(x) for x in inputs])
    return value, grads


def assert_same(a, b):
    (va, (pa, xa)), (vb, (pb, xb)) = a, b
    np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-5)
    assert set(pa) == set(pb)
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-4, atol=1e-4, err_msg=k)
    for ga, gb in zip(xa, xb):
        np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-5)


# -- pool_reshape ----------------------------------------------------------------------
def test_pools_whose_windows_tile_become_reshape_and_reduce():
    after = run_passes(ir_of(POOLS), until="pool_reshape")
    kept = [n for _, n in nodes(after) if n.op in ("max_pool", "avg_pool")]
    # f (overlapping), h (a padded partial window), e ("same" with a remainder), indices
    assert sorted((n.op, n.attrs["padding"], n.attrs["indices"] if "indices" in n.attrs
                   else None) for n in kept) == [
        ("avg_pool", "same", None), ("max_pool", "same", False), ("max_pool", "valid", False),
        ("max_pool", "valid", True)]
    assert ops(after).count("reshape") == 4  # a, b, c, d
    assert ops(after).count("index") == 3  # a (7 by 2), c (8 x 7 by 3), d (9 by 2): a remainder
    reductions = [n for _, n in nodes(after) if n.op in ("max_first", "mean")]
    assert sorted((n.op, tuple(n.attrs["axis"])) for n in reductions) == [
        ("max_first", (2,)), ("max_first", (2, 4)), ("max_first", (2, 4)), ("mean", (2, 4))]


def test_pool_reshape_keeps_values_and_gradients():
    assert_same(values_and_grads(POOLS, POOL_INPUTS, True),
                values_and_grads(POOLS, POOL_INPUTS, False))


def test_pool_reshape_keeps_the_gradient_at_ties():
    """Rounded inputs tie inside windows: the rewritten pool still sends each window's
    gradient all to its first maximum, as select-and-scatter does (`max` would split it)."""
    tied = [np.round(x) for x in POOL_INPUTS]
    assert any(len(np.unique(tied[0][0, :2, :2, c])) < 4 for c in range(3))  # some tie
    assert_same(values_and_grads(POOLS, tied, True), values_and_grads(POOLS, tied, False))


# -- conv_lowering and the autotuner ---------------------------------------------------
def test_every_conv_is_lowered_auto_until_measured(own_cache):
    after = run_passes(ir_of(CONVS))
    assert "conv" not in ops(after)
    assert [n.attrs["lowering"] for _, n in nodes(after) if n.op == "conv_lowered"] == \
        ["auto", "auto"]
    assert own_cache == []  # the pass never measures


def test_the_first_lowering_measures_once_per_shape_and_keeps_the_pick(own_cache):
    fn = loads(CONVS).compile("g")
    variables = fn.init(jax.random.key(0), *CONV_INPUTS)
    fn(variables, *CONV_INPUTS)
    # two shapes, all candidates ("eigen" is one on a CPU only; there, the others are
    # measured in a program with its options too), their forwards and gradients apart
    cpu = ["eigen", "patches+eigen", "slices+eigen"] * ON_CPU
    assert own_cache == [sorted(["patches", "slices", "xla"] + cpu)] * 4
    entries = json.loads(autotune.cache_file().read_text())["entries"]
    assert len(entries) == 2
    assert {e["pick"] for e in entries.values()} == {"slices"}
    # the second conv's input is computed: its gradient to the input is measured too
    assert sorted(json.loads(k)["input_grad"] for k in entries) == [False, True]
    # another batch size, another model: the kept picks, nothing measured again
    fn2 = loads(CONVS).compile("g")
    x = RNG.normal(size=(5, 6, 5, 2)).astype(np.float32)
    fn2(fn2.init(jax.random.key(1), x), x)
    assert len(own_cache) == 4
    after = run_passes(ir_of(CONVS))
    assert [n.attrs["lowering"] for _, n in nodes(after) if n.op == "conv_lowered"] == \
        ["slices", "slices"]


def test_show_after_conv_lowering_prints_the_pick(tmp_path, capsys):
    path = tmp_path / "g.gdl"
    path.write_text(CONVS)
    assert main(["show", str(path), "--ir", "--after", "conv_lowering"]) == 0
    assert capsys.readouterr().out.count('lowering="auto"') == 2
    fn = loads(CONVS).compile("g")
    fn(fn.init(jax.random.key(0), *CONV_INPUTS), *CONV_INPUTS)
    assert main(["show", str(path), "--ir", "--after", "conv_lowering"]) == 0
    assert capsys.readouterr().out.count('lowering="slices"') == 2


@pytest.mark.parametrize("content", ["{not json", '{"format": 1, "entries": []}', "[]",
                                     '{"format": 99, "entries": {}}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(content, own_cache):
    path = autotune.cache_file()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert autotune.read_all() == {}
    fn = loads(CONVS).compile("g")
    fn(fn.init(jax.random.key(0), *CONV_INPUTS), *CONV_INPUTS)
    assert len(own_cache) == 4  # two shapes, forwards and gradients
    data = json.loads(path.read_text())
    assert data["format"] == autotune.FORMAT and len(data["entries"]) == 2
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary left


def test_an_unwritable_cache_still_runs(tmp_path, monkeypatch, own_cache):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GRAPHDL_CACHE", str(blocker / "below"))  # below a regular file
    fn = loads(CONVS).compile("g")
    out = fn(fn.init(jax.random.key(0), *CONV_INPUTS), *CONV_INPUTS)
    assert np.isfinite(out) and len(own_cache) == 4


def test_the_key_holds_what_the_speed_depends_on():
    base = dict(filters=4, kernel=3, stride=1, padding="same", dilation=1, bias=True)
    k = autotune.key("conv", (6, 5, 2), ("f32", "f32"), base, False)
    assert k == autotune.key("conv", (6, 5, 2), ("f32", "f32"), {**base, "lowering": "x"}, False)
    for other in [autotune.key("conv", (6, 5, 3), ("f32", "f32"), base, False),
                  autotune.key("conv", (6, 5, 2), ("bf16", "f32"), base, False),
                  autotune.key("conv", (6, 5, 2), ("f32", "f32"), {**base, "stride": 2}, False),
                  autotune.key("conv", (6, 5, 2), ("f32", "f32"), base, True),
                  autotune.key("conv", (6, 5, 2), ("f32", "f32"), base, False, ("xla",))]:
        assert other != k
    assert json.loads(k)["machine"].startswith("jax ")
    assert json.loads(k)["platform"] == jax.default_backend()


def test_the_platform_without_jax_is_the_first_of_jax_platforms(monkeypatch):
    monkeypatch.delitem(sys.modules, "jax")  # as in `graphdl show`, which imports no JAX
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert autotune.platform() == "gpu"  # as jax.default_backend() says
    monkeypatch.delenv("JAX_PLATFORMS")
    assert autotune.platform() == "cpu"


@pytest.mark.parametrize("pick", ["xla", pytest.param("eigen", marks=CPU_ONLY), "slices",
                                  "patches"])
def test_each_pick_keeps_values_and_gradients(pick, monkeypatch):
    monkeypatch.setattr(measuring, "best_times",
                        lambda fns, args: {n: 0.0 if n == pick else 1.0 for n in fns})
    got = values_and_grads(CONVS, CONV_INPUTS, True)
    assert {e["pick"] for e in autotune.read_all().values()} == {pick}
    assert_same(got, values_and_grads(CONVS, CONV_INPUTS, False))


def test_autotune_off_measures_nothing_and_lowers_as_written(own_cache, monkeypatch):
    monkeypatch.setenv("GRAPHDL_AUTOTUNE", "off")
    got = values_and_grads(CONVS, CONV_INPUTS, True)
    assert own_cache == [] and autotune.read_all() == {}
    assert_same(got, values_and_grads(CONVS, CONV_INPUTS, False))


@CPU_ONLY
def test_an_eigen_pick_compiles_its_program_without_ynnpack_convolutions(monkeypatch):
    """The pick "eigen" is XLA's convolution with a compile option for the whole
    program (on a CPU): the train step's program is compiled with it."""
    monkeypatch.setattr(measuring, "best_times",
                        lambda fns, args: {n: 0.0 if n == "eigen" else 1.0 for n in fns})
    fn = loads(CONVS).compile("g")
    fn(fn.init(jax.random.key(0), *CONV_INPUTS), *CONV_INPUTS)
    assert {e["pick"] for e in autotune.read_all().values()} == {"eigen"}
    program = next(iter(fn._cache.values()))[1]
    assert program.options == conv_forms.COMPILE_OPTIONS["eigen"]["cpu"]


def _timer_by_conv(first_times: dict, second_times: dict):
    """A fake timer: these times for the first conv (2 input channels), those for the
    second; 9 ms for any other candidate."""
    def timer(fns, args):
        first = args[-1].shape[-1] == 2  # x, the last of the sorted operand names
        times = first_times if first else second_times
        return {n: times.get(n, 9.0) for n in fns}
    return timer


def _program_of(monkeypatch):
    """Compile and run CONVS; (its program, how many times a conv was lowered)."""
    lowered = []
    resolve = measuring.resolve
    monkeypatch.setattr(measuring, "resolve",
                        lambda *a, **k: (lowered.append(1), resolve(*a, **k))[1])
    fn = loads(CONVS).compile("g")
    fn(fn.init(jax.random.key(0), *CONV_INPUTS), *CONV_INPUTS)
    return next(iter(fn._cache.values()))[1], len(lowered)


@CPU_ONLY
def test_the_program_takes_the_options_its_convolutions_are_fastest_with(monkeypatch):
    """"eigen" and "xla" are one convolution compiled with or without an option for the
    whole program: the first conv gains 0.5 ms with it, the second loses 2 ms, so the
    program goes without, and the first conv is "xla" too."""
    monkeypatch.setattr(measuring, "best_times", _timer_by_conv({"eigen": 1.0, "xla": 1.5},
                                                                {"eigen": 3.0, "xla": 1.0}))
    program, lowered = _program_of(monkeypatch)
    assert program.options == {}
    assert lowered == 4  # the first conv had picked "eigen": traced again without
    assert sorted(e["pick"] for e in autotune.read_all().values()) == ["xla", "xla"]
    assert {e["options"] for e in autotune.read_all().values()} == {""}
    # the picks read back from the cache by a new program: the same, traced once
    program, lowered = _program_of(monkeypatch)
    assert program.options == {} and lowered == 2


@CPU_ONLY
def test_a_conv_takes_its_fastest_lowering_under_the_options_the_program_takes(monkeypatch):
    """The deck's CNN on XLA:CPU: its first conv is fastest as "slices" alone, but its
    second is so much faster as "eigen" that the program takes eigen's options, and
    under them the first conv's "slices" is slower than its own "eigen"."""
    monkeypatch.setattr(measuring, "best_times", _timer_by_conv(
        {"slices": 1.0, "slices+eigen": 3.0, "eigen": 2.0}, {"eigen": 1.0}))
    program, lowered = _program_of(monkeypatch)
    assert program.options == conv_forms.COMPILE_OPTIONS["eigen"]["cpu"]
    assert sorted(e["pick"] for e in autotune.read_all().values()) == ["eigen", "eigen"]
    assert lowered == 4  # the first conv had picked "slices": traced again
    got = values_and_grads(CONVS, CONV_INPUTS, True)  # the picks keep values and gradients
    assert_same(got, values_and_grads(CONVS, CONV_INPUTS, False))
    ir = run_passes(ir_of(CONVS))  # and `graphdl show --ir` prints them
    assert [n.attrs["lowering"] for _, n in nodes(ir) if n.op == "conv_lowered"] == \
        ["eigen", "eigen"]


def test_a_conv_fastest_forward_one_way_and_backward_another_takes_both(monkeypatch):
    """The forwards and the gradients are timed apart: the first conv's forward is
    fastest as "slices" and its gradients as "xla", so it lowers "slices/xla" (a
    custom_jvp); the values and gradients are those of the pool as written."""
    def timer(fns, args):
        gradients = len(args) == 4  # (the cotangent, b, w, x)
        first = args[-1].shape[-1] == 2
        best = ("xla" if gradients else "slices") if first else "patches"
        return {n: 1.0 if n == best else 5.0 for n in fns}
    monkeypatch.setattr(measuring, "best_times", timer)
    program, _ = _program_of(monkeypatch)
    assert program.options == {}
    assert sorted(e["pick"] for e in autotune.read_all().values()) == ["patches", "slices/xla"]
    entry = next(e for e in autotune.read_all().values() if e["pick"] == "slices/xla")
    assert entry["ms"]["slices"] == 1e3 * (1.0 + 5.0) and entry["grad"]["xla"] == 1e3
    ir = run_passes(ir_of(CONVS))
    assert [n.attrs["lowering"] for _, n in nodes(ir) if n.op == "conv_lowered"] == \
        ["slices/xla", "patches"]
    assert_same(values_and_grads(CONVS, CONV_INPUTS, True),
                values_and_grads(CONVS, CONV_INPUTS, False))


@pytest.mark.parametrize("lowering", ["slices/im2col", "slices/", "/xla", "a/b/c"])
def test_a_lowering_must_name_known_forms(lowering):
    bad = CONVS.replace("conv(x, 4, 3)", f'conv_lowered(x, 4, 3, lowering = "{lowering}")')
    with pytest.raises(GdlError, match="two of them as \"forward/gradient\""):
        loads(bad)


def test_a_symbolic_batch_is_not_measured(own_cache):
    """`graphdl export` traces with a symbolic batch: the kept pick for the other sizes,
    else XLA's convolution, and nothing measured."""
    class Symbolic:  # what np.shape sees of a tracer with a symbolic batch
        shape = ("B", 6, 5, 2)
    ir = run_passes(ir_of(CONVS))
    (first, n), _ = [(nid, n) for nid, n in nodes(ir) if n.op == "conv_lowered"]
    assert measuring.resolve(ir, n, {"x": Symbolic()}).attrs["lowering"] == "xla"
    autotune.record(measuring.tuning_key(ir, n, (6, 5, 2)), "patches", {"patches": 1.0})
    assert measuring.resolve(ir, n, {"x": Symbolic()}).attrs["lowering"] == "patches"
    assert own_cache == []


def test_the_timer_times_each_candidate():
    """The real timer (the tests' fake stands in for it elsewhere): seconds per candidate."""
    fns = {"double": jax.jit(lambda x: x * 2), "add": jax.jit(lambda x: x + 1)}
    times = REAL_TIMER(fns, (jnp.ones(4),))
    assert set(times) == {"double", "add"} and all(0 < t < 1 for t in times.values())


# -- scan_remat -------------------------------------------------------------------------
SCANS = """cell acc[H](x: f32[B, D]) -> f32[B, H] {
    state h: f32[B, H] = zeros
    h = tanh(sigmoid(dense(x, H) + 1.0) * tanh(h) + h * h - abs(h)) * (1.0 + dropout(h, 0.0))
    return h
}
graph g(xs: f32[B, T, 2], lengths: i32[B]) -> f32[] {
    run = scan(xs, lstm[3], axis = 1)
    back = scan(xs, acc[4], axis = 1, reverse = true, lengths = lengths)
    return sum(run.state.h * run.state.c) + sum(back.out * back.out) + sum(back.state.h)
}
"""
SCAN_INPUTS = [RNG.normal(size=(3, 5, 2)).astype(np.float32), np.array([5, 2, 4], np.int32)]


def test_scans_with_many_elementwise_values_per_matmul_are_marked():
    before = run_passes(ir_of(SCANS), rewrites=False)
    after = run_passes(ir_of(SCANS))
    assert [n.attrs.get("remat") for _, n in nodes(before) if n.op == "scan"] == [None, None]
    assert [n.attrs.get("remat") for _, n in nodes(after) if n.op == "scan"] == [True, True]
    assert [n.attrs["unroll"] for _, n in nodes(after) if n.op == "scan"] == [4, 4]
    # one matmul, one tanh: stored, not recomputed, not unrolled
    rnn = SCANS.replace("lstm[3]", "rnn[3]").replace("run.state.h * run.state.c", "run.state.h")
    after = run_passes(ir_of(rnn))
    assert [n.attrs.get("remat") for _, n in nodes(after) if n.op == "scan"] == [None, True]
    assert [n.attrs["unroll"] for _, n in nodes(after) if n.op == "scan"] == [1, 4]
    # an unroll the file asks for stays
    after = run_passes(ir_of(SCANS.replace("axis = 1)", "axis = 1, unroll = 2)")))
    assert [n.attrs["unroll"] for _, n in nodes(after) if n.op == "scan"] == [2, 4]


def scan_values_and_grads():
    fn = loads(SCANS).compile("g")
    variables = fn.init(jax.random.key(0), *SCAN_INPUTS)
    return jax.value_and_grad(lambda p: fn({"params": p}, *SCAN_INPUTS))(variables["params"])


def test_scan_remat_keeps_values_and_gradients(monkeypatch):
    from graphdl.passes import pipeline
    got = scan_values_and_grads()
    monkeypatch.setattr(pipeline, "PIPELINE",
                        tuple(p for p in PIPELINE if p.name != "scan_remat"))
    (vg, pg), (vw, pw) = got, scan_values_and_grads()
    np.testing.assert_allclose(vg, vw, rtol=1e-5, atol=1e-5)
    assert set(pg) == set(pw) and len(pg) == 10  # w and b: the lstm's 4 gates, acc's dense
    for k in pg:
        np.testing.assert_allclose(pg[k], pw[k], rtol=1e-4, atol=1e-5, err_msg=k)


# -- the switch ------------------------------------------------------------------------
def test_rewrite_passes_are_marked():
    assert {p.name for p in PIPELINE if p.rewrite} == {"fuse_dense", "pool_reshape",
                                                       "conv_lowering", "scan_remat"}


def rewritten_ops(ir) -> set[str]:
    return set(ops(ir)) & {"conv_lowered", "dense_split", "reshape"}


TWO = CONVS.replace("return sum(h * h)", "return sum(max_pool(h, 1) * dense(h, 3)) + "
                    "sum(dense(h, 2))")


@pytest.mark.parametrize("how", ["argument", "env", "api"])
def test_one_switch_turns_every_rewrite_off(how, monkeypatch):
    ir = ir_of(TWO)
    assert rewritten_ops(run_passes(ir)) == {"conv_lowered", "reshape"}
    if how == "argument":
        after = run_passes(ir, rewrites=False)
    elif how == "env":
        monkeypatch.setenv("GRAPHDL_REWRITES", "off")
        after = run_passes(ir)
    else:
        x = [RNG.normal(size=(2, 6, 5, 2)).astype(np.float32)]
        after, _ = loads(TWO, rewrites=False).compile("g").lowered(x)
        assert rewritten_ops(loads(TWO).compile("g").lowered(x)[0])
    assert rewritten_ops(after) == set()
    assert {"conv", "max_pool", "dense"} <= set(ops(after))


def test_the_api_switch_reaches_train_blocks():
    src = """graph t(x: f32[B, 8, 8, 1]) -> f32[] {
    h = conv(x, 4, 3) |> relu |> max_pool(2)
    return mean(dense(h, 2)) + mean(dense(h, 3))
}
data digits = dataset("digits", split = [0.8, 0.2], seed = 0)
train {
    data      = digits.train(batch = 8)
    loss      = t(data.image)
    optimizer = sgd(lr = 0.1)
    steps     = 1
    evaluate on digits.test every 1 epochs { m = t(data.image) }
}
"""
    plan = loads(src, rewrites=False).plan()
    for ir in (plan.ir, plan.evaluations[0].ir):
        assert rewritten_ops(run_passes(ir)) == set()
    plan = loads(src).plan()
    for ir in (plan.ir, plan.evaluations[0].ir):
        assert rewritten_ops(run_passes(ir)) == {"conv_lowered", "reshape"}


def test_no_rewrites_flag(tmp_path, capsys, monkeypatch):
    path = tmp_path / "g.gdl"
    path.write_text(TWO)
    assert main(["--no-rewrites", "show", str(path), "--ir", "--after", "conv_lowering"]) == 0
    out = capsys.readouterr().out
    assert "conv(" in out and "conv_lowered" not in out and "dense_split" not in out


def test_a_candidate_that_fails_to_compile_is_left_out():
    def broken(x):
        raise RuntimeError("INVALID_ARGUMENT: no such compile option")
    times = REAL_BEST_TIMES({"good": lambda x: x + 1, "bad": broken}, (jnp.ones(3),))
    assert set(times) == {"good"} and times["good"] >= 0


def test_several_processes_lower_every_conv_as_written(monkeypatch):
    """Each process would read its own cache or measure on its own; the SPMD program
    must be the same on all, so none uses a pick."""
    autotune.record(tuning_key_of_first_conv(), "slices", {"slices": 1.0})
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    n = next(n for _, n in nodes(run_passes(ir_of(CONVS))) if n.op == "conv_lowered")
    assert n.attrs["lowering"] == "slices"  # the pass writes the kept pick ...
    resolved = measuring.resolve(run_passes(ir_of(CONVS)), n, {"x": CONV_INPUTS[0]})
    assert resolved.attrs["lowering"] == "xla"  # ... the lowering of several processes not


def tuning_key_of_first_conv():
    ir = run_passes(ir_of(CONVS), rewrites=False)
    n = next(n for _, n in nodes(ir) if n.op == "conv")
    return tuning_key(ir, n)


def test_max_first_sends_the_gradient_to_the_first_maximum():
    """At ties, all of a window's gradient goes to its first maximum in row-major order
    over the axes (as select-and-scatter), in reverse and in forward mode alike."""
    from graphdl.ops.math import max_first

    x = jnp.asarray([[[1.0, 3.0], [3.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])  # [2, 2, 2]
    g = jax.grad(lambda x: jnp.sum(max_first(x, (1, 2)) * jnp.asarray([1.0, 2.0])))(x)
    np.testing.assert_array_equal(g, [[[0, 1], [0, 0]], [[2, 0], [0, 0]]])
    t = jnp.arange(8.0).reshape(2, 2, 2)
    _, tangent = jax.jvp(lambda x: max_first(x, (1, 2)), (x,), (t,))
    np.testing.assert_array_equal(tangent, [1.0, 4.0])  # the first maxima's tangents
    # over the first axis only, and integers (no gradient) as jnp.max
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(max_first(x, (0,))))(x),
                                  [[[1, 1], [1, 1]], [[0, 0], [0, 0]]])
    ints = jnp.asarray([[1, 5], [4, 2]])
    np.testing.assert_array_equal(max_first(ints, (1,)), [5, 4])


@pytest.mark.parametrize("lowering", ["slices/xla", "patches/slices"])
def test_a_paired_lowering_differentiates_in_both_modes_and_twice(lowering):
    """"F/G" is a custom_jvp: forward mode, reverse mode, and a gradient of a gradient
    (a gradient penalty) all give XLA's convolution's values."""
    x = jnp.asarray(RNG.normal(size=(2, 6, 5, 3)), jnp.float32)
    w = jnp.asarray(RNG.normal(size=(3, 3, 3, 4)), jnp.float32)
    paired, plain = (lambda x, w, f=f: f(x, w, 3, 1, "same", 1)
                     for f in (conv_forms.conv_by(lowering), conv_forms.conv_by_xla))
    for got, want in [
            (jax.jvp(paired, (x, w), (w.sum() * x, w))[1], jax.jvp(plain, (x, w), (w.sum() * x, w))[1]),
            (jax.grad(lambda w: jnp.sum(jnp.sin(paired(x, w))))(w),
             jax.grad(lambda w: jnp.sum(jnp.sin(plain(x, w))))(w)),
            (jax.grad(lambda w: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.sin(paired(x, w))))(x) ** 2))(w),
             jax.grad(lambda w: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.sin(plain(x, w))))(x) ** 2))(w))]:
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.max(jnp.abs(want))))


@CPU_ONLY
def test_eigens_option_keeps_reductions_with_ynnpack():
    """"eigen"'s option takes the convolutions from YNNPACK, and nothing else: a large
    reduction (a conv's bias gradient) stays a YNNPACK fusion, which XLA's own loop
    emitter ran 8x slower."""
    options = conv_forms.COMPILE_OPTIONS["eigen"]["cpu"]

    def f(x, w):
        y = conv_forms.conv_by_xla(x, w, 3, 1, "same", 1)
        return jnp.sum(y * y, (0, 1, 2))
    x = jax.ShapeDtypeStruct((128, 28, 28, 1), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 1, 32), jnp.float32)
    hlo = jax.jit(f, compiler_options=options).lower(x, w).compile().as_text()
    ynn = [line for line in hlo.splitlines() if "__ynn_fusion" in line]
    assert ynn and all("convolution" not in line for line in ynn)
    assert " convolution(" in hlo  # XLA's own: Eigen's


def test_max_first_over_a_large_window_takes_the_first_maximum_too():
    """Past SLICED_WINDOW positions (a max over a whole feature map, or every axis) the
    first maximum is found by an argmax, in the same row-major order, without one slice
    per position (a [128, 784] tensor would have been 100,352 slices)."""
    from graphdl.ops.math import SLICED_WINDOW, max_first

    x = jnp.zeros((2, 5, 4)).at[0, 3, 1].set(1.0).at[0, 4, 0].set(1.0)  # a tie in [0]
    assert x.shape[1] * x.shape[2] > SLICED_WINDOW
    g = jax.grad(lambda x: jnp.sum(max_first(x, (1, 2)) * jnp.asarray([1.0, 3.0])))(x)
    want = np.zeros((2, 5, 4))
    want[0, 3, 1] = 1.0  # the first of the tie, row-major
    want[1, 0, 0] = 3.0  # all zeros: the first position
    np.testing.assert_array_equal(g, want)
    big = jnp.asarray(RNG.normal(size=(128, 784)), jnp.float32)
    g = jax.jit(jax.grad(lambda x: max_first(x, (0, 1))))(big)
    assert float(g.sum()) == 1.0 and float(g.reshape(-1)[jnp.argmax(big)]) == 1.0
    # the two ways agree where both apply: a window of 2 x 2
    small = jnp.asarray(np.round(RNG.normal(size=(3, 2, 2, 4))), jnp.float32)
    from graphdl.ops.math import _first_by_argmax, _first_by_slices
    np.testing.assert_array_equal(_first_by_slices(small, (1, 2)),
                                  _first_by_argmax(small, (1, 2)))
