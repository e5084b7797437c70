"""Shape and dtype inference: every node's type is known before any JAX code runs.

Covers symbolic dims (unification, arithmetic, `T / 2`), reshape with -1, convolution and
pooling sizes, broadcasting, the dtypes of comparisons and reductions, distributions,
scan's record results, tuple returns, and the hierarchical names of parameters.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graphdl.errors import render_all
from graphdl.ir import node, nodes

SPEC = Path(__file__).resolve().parent / "spec"


def checked_ok(check, text):
    result = check(text)
    assert not result.diagnostics, render_all(result.diagnostics, result.program.sources)
    return result


def out_types(check, text, graph="g") -> list[str]:
    result = checked_ok(check, text)
    ir = result.irs[graph]
    return [str(node(ir, o).type) for o in ir.graph["outputs"]]


def typeof(check, args: str, expression: str, lines: str = "") -> str:
    """The type of `expression` in `graph g(args)`, after the statements in `lines`."""
    body = "".join(f"    {line}\n" for line in lines.splitlines() if line.strip())
    (t,) = out_types(check, f"graph g({args}) {{\n{body}    return {expression}\n}}\n")
    return t


def params(result, graph="g") -> dict[str, str]:
    ir = result.irs[graph]
    out = {}
    for _, n in nodes(ir):
        if n.op in ("param", "stat"):
            out[n.attrs["name"]] = str(n.type)
        body = n.attrs.get("body")
        if body is not None:
            for sub in body.nodes:
                if node(body, sub).op in ("param", "stat"):
                    out[node(body, sub).attrs["name"]] = str(node(body, sub).type)
    return out


# -- symbolic dims -------------------------------------------------------------------
@pytest.mark.parametrize("args, expression, expected", [
    ("x: f32[B, D], h: f32[B, H]", "concat([x, h], -1)", "f32[B, D + H]"),
    ("x: f32[B, D], h: f32[B, H]", "concat([x, h, x], -1)", "f32[B, 2 * D + H]"),
    ("x: f32[B, D], y: f32[C, D]", "concat([x, y], 0)", "f32[B + C, D]"),
    ("x: f32[B, T, D]", "reshape(x, [B, T / 2, 2 * D])", "f32[B, T / 2, 2 * D]"),
    ("x: f32[B, T, D]", "reshape(x, [B, -1])", "f32[B, D * T]"),
    ("x: f32[B, T, D]", "reshape(x, [-1, D])", "f32[B * T, D]"),
    ("x: f32[B, 6, 4]", "reshape(x, [B, 3, -1])", "f32[B, 3, 8]"),
    ("x: f32[4, 6]", "reshape(x, [-1])", "f32[24]"),
    ("x: f32[B, T, D]", "flatten(x)", "f32[B, D * T]"),
    ("x: f32[B, D]", "dense(x, 2 * D)", "f32[B, 2 * D]"),
    ("x: f32[B, D]", "dense(x, D / 2)", "f32[B, D / 2]"),
    ("x: f32[B, D], w: f32[D, H]", "x @ w", "f32[B, H]"),
    ("x: f32[B, T, D], w: f32[D, H]", "x @ w", "f32[B, T, H]"),
    ("x: f32[B, D], v: f32[D]", "x @ v", "f32[B]"),
    ("x: f32[B, T, D]", "transpose(x, [0, 2, 1])", "f32[B, D, T]"),
    ("x: f32[B, T, D]", "transpose(x)", "f32[D, T, B]"),
    ("x: f32[B, D]", "expand_dims(x, 1)", "f32[B, 1, D]"),
    ("x: f32[B, 1, D]", "squeeze(x, 1)", "f32[B, D]"),
    ("x: f32[B, 6]", "split(x, 3)[1]", "f32[B, 2]"),
    ("x: f32[B, D], y: f32[B, D]", "stack([x, y], 1)", "f32[B, 2, D]"),
    ("x: f32[B, T, D]", "x[:, -1]", "f32[B, D]"),
    ("x: f32[B, T, D]", "x[0]", "f32[T, D]"),
    ("x: f32[B, 8]", "x[:, 1:3]", "f32[B, 2]"),
    ("x: f32[B, 8]", "x[:, :5]", "f32[B, 5]"),
    ("x: f32[B, 8]", "x[:, ::2]", "f32[B, 4]"),
    ("x: f32[B, 8]", "x[:, -3:]", "f32[B, 3]"),
    ("x: f32[B, T]", "x[:, ::-1]", "f32[B, T]"),
    ("v: f32[V, E], i: i32[B, T]", "v[i]", "f32[B, T, E]"),
    ("x: f32[B, D]", "zeros([B, 3])", "f32[B, 3]"),
    ("x: f32[B, D]", "arange(D)", "i32[D]"),
])
def test_symbolic_shapes(check, args, expression, expected):
    assert typeof(check, args, expression) == expected


def test_dims_unify_at_each_call(check):
    text = """\
        graph pair(a: f32[B, T], b: f32[B, T]) -> f32[B, 2 * T] {
            return concat([a, b], -1)
        }
        graph g(x: f32[8, 100]) -> f32[8, 200] {
            return pair(x, x)
        }
        """
    assert out_types(check, text) == ["f32[8, 200]"]


def test_dim_arithmetic_in_a_signature_is_checked_once_bound(check):
    text = """\
        graph halve(x: f32[B, T], y: f32[B, T / 2]) -> f32[B, T + T / 2] {
            return concat([x, y], -1)
        }
        graph g(x: f32[4, 10], y: f32[4, 5]) -> f32[4, 15] {
            return halve(x, y)
        }
        """
    assert out_types(check, text) == ["f32[4, 15]"]
    bad = check("""\
        graph halve(x: f32[B, T], y: f32[B, T / 2]) -> f32[B, T] {
            return x
        }
        graph g(x: f32[4, 9], y: f32[4, 4]) -> f32[4, 9] {
            return halve(x, y)
        }
        """)
    (d,) = bad.diagnostics
    assert d.message == ("axis 1 of argument `y` of halve is declared `f32[B, T / 2]`, which "
                         "makes it 9 / 2: not a whole number")
    assert any(n.startswith("T = 9, bound at m.gdl:5:") for n in d.notes)


def test_constants_are_dims(check):
    text = """\
        graph g[H = 16](x: f32[B, D]) -> f32[B, 2 * H] {
            return concat([dense(x, H), dense(x, H)], -1)
        }
        """
    assert out_types(check, text) == ["f32[B, 32]"]


# -- convolution and pooling sizes -------------------------------------------------------
@pytest.mark.parametrize("expression, expected", [
    ('conv(x, 8)', "f32[B, 28, 28, 8]"),
    ('conv(x, 8, kernel = 3, padding = "valid")', "f32[B, 26, 26, 8]"),
    ('conv(x, 8, kernel = 3, stride = 2, padding = "valid")', "f32[B, 13, 13, 8]"),
    ('conv(x, 8, kernel = 3, stride = 2)', "f32[B, 14, 14, 8]"),
    ('conv(x, 8, kernel = 5, padding = "valid", dilation = 2)', "f32[B, 20, 20, 8]"),
    ('conv(x, 8, kernel = [3, 5], padding = "valid")', "f32[B, 26, 24, 8]"),
    ('max_pool(x, 2)', "f32[B, 14, 14, 1]"),
    ('max_pool(x, 3, stride = 2)', "f32[B, 13, 13, 1]"),
    ('avg_pool(x, 2, padding = "same")', "f32[B, 14, 14, 1]"),
    ('global_avg_pool(x)', "f32[B, 1]"),
    ('global_max_pool(x)', "f32[B, 1]"),
    ('upsample(x, 2)', "f32[B, 56, 56, 1]"),
    ('conv_transpose(x, 4)', "f32[B, 56, 56, 4]"),
    ('conv_transpose(x, 4, kernel = 3, stride = 2, padding = "valid")', "f32[B, 57, 57, 4]"),
    ('random_crop(x, 24)', "f32[B, 24, 24, 1]"),
    ('x |> conv(8) |> relu |> max_pool(2) |> conv(16) |> max_pool(2) |> flatten',
     "f32[B, 784]"),
])
def test_conv_and_pool_sizes(check, expression, expected):
    assert typeof(check, "x: f32[B, 28, 28, 1]", expression) == expected


def test_one_dimensional_conv_and_symbolic_length(check):
    assert typeof(check, "x: f32[B, 40, 1]", 'conv(x, 8, kernel = 5, padding = "valid")') == \
        "f32[B, 36, 8]"
    assert typeof(check, "x: f32[B, L, C]", "conv(x, 8)") == "f32[B, L, 8]"
    assert typeof(check, "x: f32[B, L, C]", "max_pool(x, 2)") == "f32[B, L / 2, C]"
    assert typeof(check, "x: f32[B, L, C]", 'conv(x, 4, stride = 2, padding = "valid")') == \
        "f32[B, (L - 1) / 2, 4]"
    assert typeof(check, "x: f32[B, L, C]", "conv(x, 4, stride = 2)") == "f32[B, L / 2, 4]"


def test_max_pool_with_indices_and_unpool(check):
    text = """\
        graph g(x: f32[B, 8, 8, 3]) {
            y, idx = max_pool(x, 2, indices = true)
            return y, idx, max_unpool(y, idx)
        }
        """
    assert out_types(check, text) == ["f32[B, 4, 4, 3]", "i32[B, 4, 4, 3]", "f32[B, 8, 8, 3]"]


# -- broadcasting and dtypes ---------------------------------------------------------------
@pytest.mark.parametrize("args, expression, expected", [
    ("x: f32[B, 1, D], y: f32[T, D]", "x + y", "f32[B, T, D]"),
    ("x: f32[B, D], y: f32[D]", "x * y", "f32[B, D]"),
    ("x: f32[B, D]", "x * 2", "f32[B, D]"),
    ("x: f32[B, D]", "2 - x", "f32[B, D]"),
    ("x: f32[B, D], y: f32[]", "x / y", "f32[B, D]"),
    ("x: f32[B, 1], y: f32[1, D]", "x - y", "f32[B, D]"),
    ("x: f32[B, D]", "x > 0", "bool[B, D]"),
    ("x: f32[B, D], y: f32[B, 1]", "x == y", "bool[B, D]"),
    ("x: f32[B, C]", "argmax(x, -1)", "i32[B]"),
    ("x: f32[B, C]", "argmin(x, 0)", "i32[C]"),
    ("x: f32[B, D]", "mean(x > 0)", "f32[]"),
    ("x: f32[B, D]", "sum(x > 0, axis = 1)", "i32[B]"),
    ("x: f32[B, T, D]", "mean(x, axis = [1, 2])", "f32[B]"),
    ("x: f32[B, T, D]", "max(x, axis = 1, keepdims = true)", "f32[B, 1, D]"),
    ("x: i32[B, D]", "x / 2", "f32[B, D]"),
    ("x: i32[B, D], y: f32[B, D]", "x + y", "f32[B, D]"),
    ("x: i32[B, D]", "x * 2", "i32[B, D]"),
    ("x: f16[B, D], y: bf16[B, D]", "x + y", "f32[B, D]"),
    ("x: f32[B, D]", 'cast(x, "i32")', "i32[B, D]"),
    ("y: i32[B]", "onehot(y, 10)", "f32[B, 10]"),
    ("t: i32[B, T]", "embedding(t, vocab = 100, dim = 16)", "f32[B, T, 16]"),
    ("x: f32[B, D]", "where(x > 0, x, 0)", "f32[B, D]"),
    ("x: f32[B, C], y: i32[B]", "cross_entropy(x, y)", "f32[B]"),
    ("x: f32[B, C], y: f32[B, C]", "cross_entropy(x, y)", "f32[B]"),
    ("x: f32[B, 1], y: f32[B, 1]", "bce(x, y)", "f32[B, 1]"),
    ("x: f32[B, D], y: f32[B, D]", "mse(x, y)", "f32[B]"),
    ("x: f32[B, D]", "softmax(x)", "f32[B, D]"),
    ("x: f32[B, D]", "stop_gradient(x) |> layer_norm |> batch_norm |> dropout(0.5)",
     "f32[B, D]"),
])
def test_broadcasting_and_dtypes(check, args, expression, expected):
    assert typeof(check, args, expression) == expected


def test_accuracy_metric_is_a_float_scalar(check):
    assert typeof(check, "x: f32[B, C], y: i32[B]", "mean(argmax(x, -1) == y)") == "f32[]"


# -- graphs: tuples, composition ---------------------------------------------------------------
def test_tuple_return_and_unpack(check):
    text = """\
        graph encoder(x: f32[B, D]) -> (f32[B, 8], f32[B, 8]) {
            h = x |> dense(32) |> relu
            return dense(h, 8), dense(h, 8)
        }
        graph g(x: f32[B, D]) -> f32[B, 8] {
            mu, logvar = encoder(x)
            return mu + exp(0.5 * logvar)
        }
        """
    result = checked_ok(check, text)
    enc = result.irs["encoder"]
    assert [str(node(enc, o).type) for o in enc.graph["outputs"]] == ["f32[B, 8]", "f32[B, 8]"]


def test_pipe_and_call_spellings_give_the_same_ir(check):
    from graphdl.ir import format_ir
    a = checked_ok(check, "graph g(x: f32[B, D]) {\n    return relu(dense(x, 3))\n}\n")
    b = checked_ok(check, "graph g(x: f32[B, D]) {\n    return x |> dense(3) |> relu\n}\n")

    def strip(ir):  # drop the `# line:col` of each node: only the spellings differ
        return [line.split("  #")[0] for line in format_ir(ir).splitlines()]
    assert strip(a.irs["g"]) == strip(b.irs["g"])


# -- parameter names -------------------------------------------------------------------------
def test_parameter_names_follow_binding_and_position(check):
    result = checked_ok(check, """\
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            h = x |> dense(64) |> relu |> dense(64)
            return h |> dense(10)
        }
        """)
    assert params(result, "mlp") == {
        "mlp.h.dense.w": "f32[D, 64]", "mlp.h.dense.b": "f32[64]",
        "mlp.h.dense_1.w": "f32[64, 64]", "mlp.h.dense_1.b": "f32[64]",
        "mlp.out.dense.w": "f32[64, 10]", "mlp.out.dense.b": "f32[10]",
    }


def test_layer_sharing_gives_one_parameter_set(check):
    result = checked_ok(check, """\
        graph sub(x: f32[B, D]) -> f32[B, 4] {
            return x |> dense(4)
        }
        graph g(x: f32[B, D]) -> f32[B, 4] {
            layer shared = dense(4)
            layer block = sub
            a = shared(x) + (x |> shared)
            b = block(x) + block(x)
            return a + b
        }
        """)
    assert sorted(params(result)) == ["g.block.out.dense.b", "g.block.out.dense.w",
                                      "g.shared.b", "g.shared.w"]
    ir = result.irs["g"]
    dense_weights = [node(ir, n).inputs[1] for n in ir.nodes if node(ir, n).op == "dense"]
    assert len(dense_weights) == 4 and len(set(dense_weights)) == 2


def test_each_call_site_of_a_graph_has_its_own_parameters(check):
    result = checked_ok(check, """\
        graph sub(x: f32[B, D]) -> f32[B, 4] {
            return x |> dense(4)
        }
        graph g(x: f32[B, D]) -> f32[B, 4] {
            a = sub(x)
            b = sub(x) + sub(x)
            return a + b
        }
        """)
    assert sorted(n for n in params(result) if n.endswith(".w")) == [
        "g.a.sub.out.dense.w", "g.b.sub.out.dense.w", "g.b.sub_1.out.dense.w"]


def test_param_statement_and_frozen(check):
    result = checked_ok(check, """\
        graph g(x: f32[B, 3]) -> f32[B, 4] {
            param W: f32[3, 4] = glorot frozen
            param b: f32[4] = zeros
            return x @ W + b
        }
        """)
    ir = result.irs["g"]
    params = {node(ir, n).attrs["name"]: node(ir, n) for n in ir.nodes
             if node(ir, n).op == "param"}
    assert params["g.W"].attrs["frozen"] is True and params["g.b"].attrs["frozen"] is False
    assert params["g.W"].attrs["init"] == ("glorot",)


def test_a_trained_graph_is_one_instance_in_train_and_evaluate(check):
    result = checked_ok(check, (SPEC / "mlp.gdl").read_text())
    (plan,) = result.trains
    train_params = {node(plan.ir, n).attrs["name"]: str(node(plan.ir, n).type)
                    for n in plan.ir.nodes if node(plan.ir, n).op == "param"}
    assert train_params == {"mlp.out.dense.w": "f32[64, 128]", "mlp.out.dense.b": "f32[128]",
                            "mlp.out.dense_1.w": "f32[128, 10]", "mlp.out.dense_1.b": "f32[10]"}
    (evaluation,) = plan.evaluations
    eval_ir = evaluation.ir
    names = [node(eval_ir, n).attrs["name"] for n in eval_ir.nodes
             if node(eval_ir, n).op == "param"]
    assert sorted(names) == sorted(train_params)  # the two mlp(...) calls share


def test_gan_discriminator_calls_share_one_instance(check):
    result = checked_ok(check, (SPEC / "gan.gdl").read_text())
    (plan,) = result.trains
    names = [node(plan.ir, n).attrs["name"] for n in plan.ir.nodes
             if node(plan.ir, n).op == "param"]
    assert len(names) == len(set(names)) == 8
    assert {n.split(".")[0] for n in names} == {"generator", "discriminator"}
    assert [s.name for s in plan.steps] == ["discriminator", "generator"]
    assert [s.over for s in plan.steps] == [["discriminator"], ["generator"]]


# -- cells and scan -------------------------------------------------------------------------
def test_scan_result_types(check):
    result = checked_ok(check, (SPEC / "lstm.gdl").read_text())
    ir = result.irs["classify"]
    (scan,) = [n for n in ir.nodes if node(ir, n).op == "scan"]
    assert [str(t) for t in node(ir, scan).type] == [
        "f32[B, T, 128]", "f32[B, 128]", "f32[B, 128]"]
    assert node(ir, scan).attrs["states"] == ["h", "c"]
    body = node(ir, scan).attrs["body"]
    assert [(a, b) for a, b, d in body.edges(data=True) if d.get("delay")]  # state edges
    (out,) = ir.graph["outputs"]
    assert str(node(ir, out).type) == "f32[B, 10]"
    assert "classify.run.lstm.f.dense.w" in params(result, "classify")


@pytest.mark.parametrize("expression, expected", [
    ("scan(xs, lstm[32], axis = 1).out", "f32[B, T, 32]"),
    ("scan(xs, lstm[32]).state.h", "f32[B, 32]"),
    ("scan(xs, lstm[32]).state.c", "f32[B, 32]"),
    ("scan(xs, gru[16], axis = 1, reverse = true, unroll = 2).out", "f32[B, T, 16]"),
    ("(xs |> scan(rnn[8])).state.h", "f32[B, 8]"),
    ("scan(transpose(xs, [1, 0, 2]), rnn[8], axis = 0).out", "f32[T, B, 8]"),
])
def test_scan_over_std_cells(check, expression, expected):
    assert typeof(check, "xs: f32[B, T, D]", expression) == expected


def test_scan_init_from_another_scan(check):
    text = """\
        graph seq2seq(src: f32[B, S, D], tgt: f32[B, T, D]) -> f32[B, T, 32] {
            enc = scan(src, lstm[32])
            dec = scan(tgt, lstm[32], init = enc.state)
            again = scan(tgt, lstm[32], init = {h = dec.state.h, c = enc.state.c})
            return dec.out + again.out
        }
        """
    assert out_types(check, text, "seq2seq") == ["f32[B, T, 32]"]


def test_a_cell_checked_on_its_own(check):
    result = checked_ok(check, (SPEC / "lstm.gdl").read_text())
    body = result.irs["lstm"].graph["cell_body"]
    assert set(body.graph["states"]) == {"h", "c"}
    (out,) = body.graph["outputs"]
    assert str(node(body, out).type) == "f32[B, H]"


GENERATE = """\
    cell dec[V, H](tok: i32[B]) -> f32[B, V] {
        state h: f32[B, H] = zeros
        e = embedding(tok, vocab = V, dim = 16)
        h = tanh(dense(concat([e, h], -1), H))
        return dense(h, V)
    }
    """


@pytest.mark.parametrize("expression, expected", [
    ("generate(d, start = bos, steps = 12, pick = argmax).out", "i32[B, 12]"),
    ("generate(d, init = enc.state, start = bos, steps = 12).out", "i32[B, 12]"),
    ("generate(dec[100, 32], start = bos, steps = 7, pick = sample).out", "i32[B, 7]"),
    ("generate(d, start = bos, steps = 3, pick = beam(4)).state.h", "f32[B, 32]"),
])
def test_generate_result_types(check, expression, expected):
    text = GENERATE + f"""\
    graph g(src: f32[B, S, D], bos: i32[B]) {{
        enc = scan(src, gru[32])
        layer d = dec[100, 32]
        return {expression}
    }}
    """
    assert out_types(check, text) == [expected]


def test_generate_node_keeps_the_cell_body(check):
    result = checked_ok(check, GENERATE + """\
    graph g(bos: i32[B]) -> i32[B, 5] {
        return generate(dec[50, 8], start = bos, steps = 5, pick = beam(3)).out
    }
    """)
    ir = result.irs["g"]
    (gen,) = [n for _, n in nodes(ir) if n.op == "generate"]
    assert gen.attrs["steps"] == 5 and gen.attrs["pick"] == ["beam", 3]
    assert gen.attrs["vocab"] == 50 and gen.attrs["states"] == ["h"]
    body = gen.attrs["body"]
    (out,) = body.graph["outputs"]
    assert str(node(body, out).type) == "f32[B, 50]"
    assert "g.out.dec.out.dense.w" in params(result)


# -- distributions --------------------------------------------------------------------------
def test_sample_types_of_each_estimator(check):
    result = checked_ok(check, (SPEC / "stochastic.gdl").read_text())
    ir = result.irs["stochastic"]
    samples = {node(ir, n).attrs["name"] + ":" + node(ir, n).attrs["estimator"]:
               str(node(ir, n).type) for n in ir.nodes if node(ir, n).op == "sample"}
    assert samples == {"z:reparam": "f32[B, 4]", "a:reinforce": "i32[B]",
                       "g:gumbel_softmax": "f32[B, 4]", "b:straight_through": "f32[B, 4]"}
    assert len(ir.graph["stochastic"]) == 5


@pytest.mark.parametrize("expression, expected", [
    ("log_prob(normal(l, 1), l)", "f32[B, 4]"),
    ("entropy(normal(l, 1))", "f32[B, 4]"),
    ("kl(normal(l, 1), normal(0, 1))", "f32[B, 4]"),
    ("entropy(categorical(l))", "f32[B]"),
    ("entropy(onehot_categorical(l))", "f32[B]"),
    ("kl(onehot_categorical(l), onehot_categorical(l + 1))", "f32[B]"),
    ("log_prob(onehot_categorical(l), l)", "f32[B]"),
    ("mean(categorical(l))", "i32[B]"),
    ("mean(bernoulli(l))", "f32[B, 4]"),
])
def test_distribution_function_shapes(check, expression, expected):
    assert typeof(check, "l: f32[B, 4]", expression) == expected


def test_sample_with_an_explicit_shape(check):
    assert typeof(check, "x: f32[B, D]", "z", "z ~ normal(0, 1, shape = [B, 2])") == "f32[B, 2]"


# -- data and train blocks --------------------------------------------------------------------
def test_check_binds_dims_from_the_data_source(check):
    result = checked_ok(check, (SPEC / "mlp.gdl").read_text())
    (plan,) = result.trains
    inputs = {node(plan.ir, n).attrs["name"]: str(node(plan.ir, n).type)
              for n in plan.ir.graph["inputs"]}
    assert inputs["data.x"] == "f32[64, 64]" and inputs["data.y"] == "i32[64]"
    (loss,) = plan.ir.graph["outputs"]
    assert str(node(plan.ir, loss).type) == "f32[]"
    assert plan.batch.batch == 64 and plan.batch.shuffle is True


@pytest.mark.parametrize("name", ["mlp", "lstm", "gan", "stochastic"])
def test_spec_examples_check_in_process(check, name):
    checked_ok(check, (SPEC / f"{name}.gdl").read_text())
