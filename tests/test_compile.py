"""One compile entry (graphdl.lower.compile) and the stage boundaries it relies on."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphdl.lower import compile as compile_module
from graphdl.lower.compile import compile_fn

PACKAGE = Path(__file__).resolve().parents[1] / "graphdl"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8")
            for p in PACKAGE.rglob("*.py")}


def test_jax_jit_is_called_in_one_module():
    callers = sorted(name for name, text in _sources().items() if "jax.jit(" in text)
    assert callers == ["lower/compile.py"], callers


@pytest.mark.parametrize("stage, forbidden", [
    ("runtime", ("graphdl.api", "graphdl.cli", "graphdl.elaborate")),
    ("lower", ("graphdl.runtime", "graphdl.api", "graphdl.cli", "graphdl.elaborate")),
])
def test_a_stage_imports_no_later_stage(stage, forbidden):
    """Function-local imports count too: any `import` or `from` line anywhere."""
    found = []
    for name, text in _sources().items():
        if not name.startswith(stage + "/"):
            continue
        for line in text.splitlines():
            m = re.match(r"\s*(?:from\s+(\S+)\s+import|import\s+(\S+))", line)
            module = m and (m.group(1) or m.group(2))
            if module and module.startswith(forbidden):
                found.append(f"{name}: {line.strip()}")
    assert not found, found


def test_compile_fn_compiles_with_static_arguments():
    fn = compile_fn(lambda x, scale=1: x * scale, static_argnames=("scale",))
    np.testing.assert_allclose(fn(jnp.ones(3), scale=3), [3.0, 3.0, 3.0])


def test_compile_fn_donates_buffers():
    fn = compile_fn(lambda p, x: {k: v + x for k, v in p.items()}, donate_argnums=(0,))
    params = {"w": jnp.ones(4)}
    out = fn(params, 1.0)
    np.testing.assert_allclose(out["w"], 2.0)
    assert params["w"].is_deleted()  # the caller's copy is gone: it must not be reused


@pytest.mark.parametrize("kwargs, error", [
    ({"mesh": "gpu:0"}, TypeError),
    ({"donate_argnums": (-1,)}, ValueError),
    ({"donate_argnums": ("params",)}, ValueError),
    ({"in_shardings": jax.sharding.PartitionSpec()}, ValueError),  # a spec needs a mesh
])
def test_compile_fn_validates_its_options(kwargs, error):
    with pytest.raises(error):
        compile_fn(lambda x: x, **kwargs)


def test_compile_fn_accepts_a_mesh():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    assert float(compile_fn(lambda x: x * 2, mesh=mesh)(2.0)) == 4.0


def test_compile_fn_places_partition_specs_on_the_mesh():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    spec = jax.sharding.PartitionSpec
    fn = compile_fn(lambda d: {"y": d["x"] * 2}, mesh=mesh, in_shardings=(spec("data"),),
                    out_shardings={"y": spec()})
    out = fn({"x": np.ones((4, 3), np.float32)})
    assert out["y"].sharding == jax.sharding.NamedSharding(mesh, spec())
    np.testing.assert_allclose(out["y"], 2.0)


def test_the_compilation_cache_folder_is_set_once(monkeypatch, tmp_path):
    updates = []
    monkeypatch.setattr(compile_module, "_cache_dir", None)
    monkeypatch.setattr(compile_module.jax.config, "update", lambda *a: updates.append(a))
    compile_fn(lambda x: x, cache_dir=tmp_path)
    compile_fn(lambda x: x, cache_dir=tmp_path)  # the same folder again: nothing to do
    assert [u for u in updates if u[0] == "jax_compilation_cache_dir"] == \
        [("jax_compilation_cache_dir", str(tmp_path))]
    assert ("jax_persistent_cache_min_compile_time_secs", 0.0) in updates  # small programs too
    with pytest.raises(ValueError, match="already"):
        compile_fn(lambda x: x, cache_dir=tmp_path / "other")


# -- XLA options that the traced program asks for ---------------------------------------
YNN = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU option")
def test_a_program_compiles_with_the_options_its_trace_asks_for():
    traces = []

    def fn(x, w):
        traces.append(1)
        compile_module.ask_options(YNN)
        return _conv(x, w)
    program = compile_fn(fn)
    x, w = jnp.ones((4, 8, 8, 32)), jnp.ones((3, 3, 32, 32))  # YNNPACK's by default
    np.testing.assert_allclose(program(x, w), _conv(x, w), rtol=1e-5)
    assert program.options == YNN
    assert len(traces) == 1  # the trace that found the options is the one compiled
    # the options reach XLA: its YNNPACK convolutions are off in the compiled program
    text = program.lower(x, w).compile().as_text()
    assert "ynn" not in text and "convolution(" in text
    plain = compile_fn(_conv)
    assert "ynn" in plain.lower(x, w).compile().as_text() and plain.options == {}


def test_options_asked_outside_a_trace_or_by_a_nested_program_stay_there():
    compile_module.ask_options(YNN)  # no program being traced: nothing to do
    inner = compile_fn(lambda x: (compile_module.ask_options(YNN), x * 2)[1])

    def outer(x):
        with jax.ensure_compile_time_eval():
            inner(jnp.ones(2))  # compiled and run on its own, inside the trace
        return x + 1
    program = compile_fn(outer)
    assert float(program(1.0)) == 2.0
    assert inner.options == YNN and program.options == {}


def test_a_compiled_program_is_what_jax_export_takes():
    exported = jax.export.export(compile_fn(lambda x: x * 3))(jax.ShapeDtypeStruct((2,), jnp.float32))
    np.testing.assert_allclose(exported.call(jnp.ones(2)), [3.0, 3.0])


# -- executables kept on disk, keyed on the trace (graphdl/lower/executables.py) ----------
from graphdl.lower import executables  # noqa: E402


@pytest.fixture
def exec_cache(monkeypatch, tmp_path):
    """A folder of its own for the executables' cache (the compilation cache's folder)."""
    monkeypatch.setattr(compile_module, "_cache_dir", str(tmp_path))
    monkeypatch.setattr(executables, "_bytes", {})
    return tmp_path / "executables"


def _step(p, x):
    return {k: jnp.tanh(v * x) for k, v in p.items()}


def test_a_second_program_of_the_same_trace_loads_its_executable(exec_cache, monkeypatch):
    params = {"w": jnp.arange(4.0), "b": jnp.ones(2)}
    first = compile_fn(_step)(params, 0.5)
    assert len(list(exec_cache.glob("*.bin"))) == 1

    def no_lowering(*args, **kwargs):
        raise AssertionError("lowered again")
    monkeypatch.setattr(jax.stages.Traced, "lower", no_lowering)
    again = compile_fn(_step)  # as in a new process: a new jit, a new trace
    out = again(params, 0.5)
    for k in params:
        np.testing.assert_array_equal(out[k], first[k])
    out = again(params, 2.0)  # the same executable for another value
    np.testing.assert_allclose(out["w"], np.tanh(np.arange(4.0) * 2.0), rtol=1e-6)


def test_a_program_not_to_keep_writes_nothing(exec_cache):
    """The autotuner's measurements run once: `keep=False` compiles them as before."""
    out = compile_fn(_step, keep=False)({"w": jnp.arange(3.0)}, 1.0)
    np.testing.assert_allclose(out["w"], np.tanh(np.arange(3.0)), rtol=1e-6)
    assert not exec_cache.exists() or not list(exec_cache.glob("*.bin"))


def test_another_signature_falls_back_to_the_jitted_function(exec_cache):
    program = compile_fn(_step, donate_argnums=(0,))
    program({"w": jnp.ones(3)}, 1.0)
    out = program({"w": jnp.ones((2, 2))}, 1.0)  # another shape: not the kept executable
    np.testing.assert_allclose(out["w"], np.tanh(np.ones((2, 2))), rtol=1e-6)
    params = {"w": jnp.ones(3)}
    program(params, 1.0)
    assert params["w"].is_deleted()  # donation holds on either path

    def outer(x):  # called inside another trace: the jitted function, traced inline
        return program({"w": x}, 2.0)["w"].sum()
    np.testing.assert_allclose(jax.grad(outer)(jnp.zeros(3)), 2.0, rtol=1e-6)


def _key(fn, *args, donate=(), options=None):
    return executables.program_key(jax.jit(fn).trace(*args), args, {}, donate, options or {})


def test_the_key_holds_what_the_trace_does_not_show():
    x = jnp.ones(3)
    base = _key(lambda x: x * 2, x)
    assert base is not None and base == _key(lambda x: x * 2, x)  # the same trace
    scale = np.float32(3.0) * np.ones(3, np.float32)
    other = np.float32(4.0) * np.ones(3, np.float32)
    assert _key(lambda x: x * scale, x) != _key(lambda x: x * other, x)  # a constant's value
    assert _key(lambda x: x * 2, x, donate=(0,)) != base
    assert _key(lambda x: x * 2, x, options=YNN) != base
    assert _key(lambda x: x * 2, np.ones(3, np.float32)) != base  # a NumPy array
    assert _key(lambda x: x * 2, jnp.ones(3, jnp.int32)) != base
    # one jaxpr, two results' trees (two evaluate blocks' metrics) or weak types
    assert _key(lambda x: {"m": x * 2}, x) != _key(lambda x: {"m2": x * 2}, x)
    assert _key(lambda x: 2.0, x) != _key(lambda x: jnp.float32(2.0), x)


def test_a_program_that_calls_back_into_python_is_not_kept():
    def fn(x):
        return jax.pure_callback(lambda v: np.asarray(v) * 2, jax.ShapeDtypeStruct((3,), x.dtype), x)
    assert _key(fn, jnp.ones(3)) is None


def test_an_entry_that_does_not_load_is_compiled_again(exec_cache):
    x = jnp.arange(3.0)
    compile_fn(lambda x: x + 1)(x)
    [entry] = exec_cache.glob("*.bin")
    entry.write_bytes(b"not a pickle")
    np.testing.assert_allclose(compile_fn(lambda x: x + 1)(x), [1.0, 2.0, 3.0])
    assert entry.read_bytes() != b"not a pickle"  # replaced by a good one


def test_the_least_recently_used_entries_go_past_the_bound(exec_cache, monkeypatch):
    for i in range(3):
        compile_fn(lambda x, i=i: x + i)(jnp.ones(2))
    entries = sorted(exec_cache.glob("*.bin"), key=lambda p: p.stat().st_mtime)
    assert len(entries) == 3
    size = max(p.stat().st_size for p in entries)
    monkeypatch.setattr(executables, "MAX_BYTES", 3 * size - 1)
    monkeypatch.setattr(executables, "_bytes", {})
    compile_fn(lambda x: x + 10)(jnp.ones(2))  # a fourth: the oldest go
    left = set(exec_cache.glob("*.bin"))
    assert entries[0] not in left and len(left) <= 3


LOWERINGS = """
import jax, jax.numpy as jnp, numpy as np
from jax import monitoring
from graphdl.lower.compile import compile_fn
lowered = []
monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: lowered.append(1) if event.endswith("to_mlir_module_duration") else None)
out = compile_fn(lambda p, x: {k: jnp.tanh(v @ x) for k, v in p.items()})(
    {"w": np.ones((8, 8), np.float32)}, np.arange(8, dtype=np.float32))  # no eager jax op
print(len(lowered), float(out["w"].sum()))
"""


@pytest.mark.parametrize("devices", [1, 4])
def test_a_second_process_runs_the_kept_executable_without_lowering(tmp_path, devices):
    """With 4 (simulated) devices, the executable is loaded on the one it was compiled for."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "GRAPHDL_CACHE": str(tmp_path), "PYTHONPATH": str(PACKAGE.parent),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env.pop("GRAPHDL_COMPILE_CACHE", None)
    runs = [subprocess.run([sys.executable, "-c", LOWERINGS], env=env, capture_output=True,
                           text=True, timeout=120) for _ in range(2)]
    (cold, value), (warm, again) = (r.stdout.split() for r in runs)
    assert int(cold) >= 1 and int(warm) == 0  # the second process lowered nothing
    assert value == again
    env["GRAPHDL_COMPILE_CACHE"] = "off"  # and the switch turns this cache off too
    off = subprocess.run([sys.executable, "-c", LOWERINGS], env=env, capture_output=True,
                         text=True, timeout=120)
    assert int(off.stdout.split()[0]) >= 1


JAX_FIRST = """
import os, sys, jax, jax.numpy as jnp, numpy as np
def f(x, y):
    return jnp.where(x > 0, x * 2, y[None, :]).sum() + jnp.tanh(x).mean()
args = (np.linspace(-1, 1, 64 * 32, dtype=np.float32).reshape(64, 32), np.ones(32, np.float32))
if sys.argv[1] == "jax":  # plain JAX, its persistent cache in graphdl's folder
    jax.config.update("jax_compilation_cache_dir", os.environ["GRAPHDL_CACHE"] + "/xla")
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    print(float(jax.jit(f)(*args)))
else:
    from graphdl.lower.compile import compile_fn
    print(float(compile_fn(f)(*args)))
"""


def test_a_program_in_jaxs_cache_is_kept_compiled_afresh(tmp_path):
    """An executable JAX loaded from its own cache serialises without its functions: the
    executables' cache compiles its programs afresh, so the one it loads runs."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "GRAPHDL_CACHE": str(tmp_path), "PYTHONPATH": str(PACKAGE.parent)}
    env.pop("GRAPHDL_COMPILE_CACHE", None)
    out = [subprocess.run([sys.executable, "-c", JAX_FIRST, mode], env=env, text=True,
                          capture_output=True, timeout=120)
           for mode in ("jax", "graphdl", "graphdl")]
    assert [o.returncode for o in out] == [0, 0, 0], out[-1].stderr[-2000:]
    assert out[0].stdout == out[1].stdout == out[2].stdout
    assert len(list((tmp_path / "xla" / "executables").glob("*.bin"))) == 1
