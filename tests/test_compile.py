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
