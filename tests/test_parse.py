"""The parser: every construct of the language parses to the tree it means.

Expressions are compared as s-expressions (`(+ a (* b c))`), so a test states its meaning
in one line. Newline rules, soft keywords, comments and literals each have their own tests.
"""

from __future__ import annotations

import pytest
from conftest import source

from graphdl.errors import UserError
from graphdl.parse import ast as A
from graphdl.parse import parse_source


def sx(node) -> str:
    """An expression as an s-expression: `x |> f(1)` -> `(|> f x 1)`."""
    if isinstance(node, A.Name):
        return node.id
    if isinstance(node, A.Num):
        return repr(node.value)
    if isinstance(node, A.Str):
        return f'"{node.value}"'
    if isinstance(node, A.Bool):
        return "true" if node.value else "false"
    if isinstance(node, A.BinOp):
        return f"({node.op} {sx(node.left)} {sx(node.right)})"
    if isinstance(node, A.Neg):
        return f"(neg {sx(node.operand)})"
    if isinstance(node, A.Call):
        head = "|>" if node.piped else "call"
        parts = [sx(node.func)] + [sx(a) for a in node.args] + [sx(k) for k in node.kwargs]
        return f"({head} {' '.join(parts)})"
    if isinstance(node, A.Keyword):
        return f"{node.name}={sx(node.value)}"
    if isinstance(node, A.Index):
        return f"(index {sx(node.value)} {' '.join(sx(s) for s in node.subs)})"
    if isinstance(node, A.Slice):
        return "(slice " + " ".join("_" if p is None else sx(p)
                                    for p in (node.start, node.stop, node.step)) + ")"
    if isinstance(node, A.Field):
        return f"(. {sx(node.value)} {node.name})"
    if isinstance(node, A.ListLit):
        return "[" + " ".join(sx(i) for i in node.items) + "]"
    if isinstance(node, A.RecordLit):
        return "{" + " ".join(f"{k}={sx(v)}" for k, v in node.fields) + "}"
    raise TypeError(type(node))


def parse(text: str) -> list:
    return parse_source(source(text), "t.gdl").items


def body(text: str) -> list:
    """The statements of `text` written inside a graph body."""
    (graph,) = parse("graph g() {\n" + source(text) + "\n}\n")
    return graph.body


def expr(text: str) -> str:
    (ret,) = body(f"return {text}")
    assert len(ret.values) == 1
    return sx(ret.values[0])


# -- literals ------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [
    ("3", 3), ("-1", -1), ("0.5", 0.5), ("1e-3", 1e-3), ("2.5e+4", 2.5e4), (".5", 0.5),
    ("5.", 5.0), ("1E3", 1000.0), ("007", 7), ("-2.5", -2.5), ("0", 0),
])
def test_numeric_literals(text, value):
    (ret,) = body(f"return {text}")
    (num,) = ret.values
    assert isinstance(num, A.Num) and num.value == value and type(num.value) is type(value)


def test_negative_literal_is_folded_where_a_static_int_is_needed():
    assert expr("argmax(x, -1)") == "(call argmax x -1)"
    assert expr("-x") == "(neg x)"


@pytest.mark.parametrize("text, value", [
    ('"digits"', "digits"), ('""', ""), (r'"a\"b"', 'a"b'), (r'"tab\there"', "tab\there"),
    (r'"back\\slash"', "back\\slash"), ('"# not a comment"', "# not a comment"),
    ('"é ∘ 名"', "é ∘ 名"),
])
def test_strings(text, value):
    (ret,) = body(f"return {text}")
    assert ret.values[0].value == value


def test_booleans_and_lists_and_records():
    assert expr("true") == "true" and expr("false") == "false"
    assert expr("[0.8, 0.2]") == "[0.8 0.2]"
    assert expr("[]") == "[]"
    assert expr("[1, 2,]") == "[1 2]"
    assert expr("{h = a, c = b}") == "{h=a c=b}"


# -- precedence ----------------------------------------------------------------------
@pytest.mark.parametrize("text, tree", [
    ("x @ W + b |> relu", "(|> relu (+ (@ x W) b))"),
    ("-x ** 2", "(neg (** x 2))"),
    ("a + b * c", "(+ a (* b c))"),
    ("a - b - c", "(- (- a b) c)"),
    ("a / b % c", "(% (/ a b) c)"),
    ("a ** b ** c", "(** a (** b c))"),
    ("a + 1 == b * 2", "(== (+ a 1) (* b 2))"),
    ("(x |> f) + 1", "(+ (|> f x) 1)"),
    ("x |> f + 1", None),  # `|>` binds loosest: its right side is a name, call or subscript
    ("a |> f(b, c)", "(|> f a b c)"),
    ("a |> f", "(|> f a)"),
    ("x |> dense(H) |> relu |> dropout(0.1) |> dense(C)",
     "(|> dense (|> dropout (|> relu (|> dense x H)) 0.1) C)"),
    ("x |> scan(lstm[128], axis = 1)", "(|> scan x (index lstm 128) axis=1)"),
    ("run.state.h |> dense(10)", "(|> dense (. (. run state) h) 10)"),
    ("f(x)(y)", "(call (call f x) y)"),
    ("x[:, -1]", "(index x (slice _ _ _) -1)"),
    ("x[1:3]", "(index x (slice 1 3 _))"),
    ("x[:5]", "(index x (slice _ 5 _))"),
    ("x[2:]", "(index x (slice 2 _ _))"),
    ("x[::2]", "(index x (slice _ _ 2))"),
    ("x[1:7:3]", "(index x (slice 1 7 3))"),
    ("x[::-1]", "(index x (slice _ _ -1))"),
    ("v[i]", "(index v i)"),
    ("mlp[H = 256](x)", "(call (index mlp H=256) x)"),
    ("mean(argmax(mlp(x), -1) == y)", "(call mean (== (call argmax (call mlp x) -1) y))"),
    ("-(a + b)", "(neg (+ a b))"),
    ("a < b", "(< a b)"), ("a >= b", "(>= a b)"), ("a != b", "(!= a b)"),
])
def test_precedence(text, tree):
    if tree is None:
        with pytest.raises(UserError):
            expr(text)
    else:
        assert expr(text) == tree


def test_comparisons_do_not_chain():
    with pytest.raises(UserError, match="comparisons do not chain"):
        expr("a < b < c")


def test_pipe_and_call_are_the_same_node():
    piped, called = expr("a |> f(b, c = 1)"), expr("f(a, b, c = 1)")
    assert piped.replace("|>", "call") == called


# -- newlines ------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["+", "-", "*", "/", "@", "%", "**", "==", "!=", "<", "<=",
                                ">", ">="])
def test_newline_after_a_binary_operator_continues(op):
    (st,) = body(f"y = a {op}\n    b")
    assert sx(st.value) == f"({op} a b)"


def test_newline_after_comma_equals_and_tilde_continues():
    first, second, third = body("""
        a, b =
            split(x, 2)
        z ~
            normal(mu, 1)
        y = f(x,
              1)
        """)
    assert first.targets == ["a", "b"] and sx(first.value) == "(call split x 2)"
    assert isinstance(second, A.Sample) and sx(second.dist) == "(call normal mu 1)"
    assert sx(third.value) == "(call f x 1)"


def test_newline_before_pipe_continues():
    (st,) = body("""
        y = x
            |> dense(10)
            |> relu
        """)
    assert sx(st.value) == "(|> relu (|> dense x 10))"


def test_newlines_inside_brackets_are_ignored():
    (st,) = body("""
        y = concat(
            [a,
             b
            ],
            -1
        )
        """)
    assert sx(st.value) == "(call concat [a b] -1)"


def test_newline_ends_a_statement():
    a, b = body("y = x\nz = y")
    assert sx(a.value) == "x" and sx(b.value) == "y"


def test_blank_lines_and_comments_between_statements():
    stmts = body("""

        # a comment on its own line
        y = x   # a comment after a statement

        z = y # another
        # trailing comment
        """)
    assert [s.targets for s in stmts] == [["y"], ["z"]]


def test_comment_inside_brackets_and_after_an_operator():
    (st,) = body("""
        y = f(x,   # first argument
              2) + # then the rest
            1
        """)
    assert sx(st.value) == "(+ (call f x 2) 1)"


def test_backslash_continues_a_line():
    (st,) = body("y = a \\\n    + b")
    assert sx(st.value) == "(+ a b)"


def test_multiline_record_and_signature():
    (graph,) = parse("""
        graph g(
            x: f32[B, D],
            y: f32[B, D],
        ) -> (f32[B, D],
              f32[B, D]) {
            s = {
                h = x,
                c = y,
            }
            return x, y
        }
        """)
    assert [a.name for a in graph.args] == ["x", "y"]
    assert len(graph.returns) == 2
    assert sx(graph.body[0].value) == "{h=x c=y}"


def test_crlf_bom_and_a_missing_final_newline():
    items = parse_source("\ufeffgraph g() {\r\n    return 1\r\n}", "t.gdl").items
    assert items[0].name == "g"
    items = parse_source("graph g() {\r    return 1\r}\r", "t.gdl").items
    assert items[0].body[0].span.line == 2


def test_empty_and_comment_only_files():
    assert parse("") == []
    assert parse("# nothing here\n\n# at all") == []


# -- soft keywords -------------------------------------------------------------------
def test_data_is_a_keyword_only_before_a_name():
    (data, train) = parse("""
        data digits = dataset("digits")
        train {
            data = digits.train(batch = 64, shuffle = true)
            logits = mlp(data.x)
        }
        """)
    assert isinstance(data, A.DataDef) and data.name == "digits"
    first, second = train.body
    assert isinstance(first, A.Assign) and first.targets == ["data"]
    assert sx(first.value) == "(call (. digits train) batch=64 shuffle=true)"
    assert sx(second.value) == "(call mlp (. data x))"


@pytest.mark.parametrize("word", ["data", "state", "param", "layer", "step", "over",
                                  "checkpoint", "evaluate", "by", "on", "every", "frozen",
                                  "train", "use", "graph", "cell"])
def test_keywords_are_good_binding_names_inside_a_body(word):
    first, second = body(f"{word} = 3\ny = {word} + 1")
    assert first.targets == [word] and sx(second.value) == f"(+ {word} 1)"


def test_soft_keywords_in_their_statements():
    (graph,) = parse("""
        graph g(x: f32[B, D]) -> f32[B, 4] {
            param W: f32[D, 4] = glorot frozen
            param V: f32[4, 4] = normal(0.02)
            layer embed = embedding(vocab = 10, dim = 4)
            layer dec = lstm[128]
            z ~ normal(mu, 1) by reinforce(baseline = moving_average(0.9))
            a ~ categorical(logits = l) by enumerate
            b = every + on
            return x @ W @ V
        }
        """)
    w, v, embed, dec, z, a, b, _ = graph.body
    assert isinstance(w, A.Param) and w.frozen and sx(w.init) == "glorot"
    assert w.type.dtype == "f32" and [sx(d) for d in w.type.dims] == ["D", "4"]
    assert isinstance(v, A.Param) and not v.frozen and sx(v.init) == "(call normal 0.02)"
    assert isinstance(embed, A.Layer) and sx(embed.value) == "(call embedding vocab=10 dim=4)"
    assert sx(dec.value) == "(index lstm 128)"
    assert isinstance(z, A.Sample) and z.target == "z"
    assert sx(z.estimator) == "(call reinforce baseline=(call moving_average 0.9))"
    assert sx(a.estimator) == "(call enumerate)"
    assert sx(b.value) == "(+ every on)"


# -- definitions ---------------------------------------------------------------------
def test_use_forms():
    a, b = parse('use std.nn\nuse "path/other.gdl"\n')
    assert (a.module, a.path) == ("std.nn", None)
    assert (b.module, b.path) == (None, "path/other.gdl")


def test_graph_header():
    (graph,) = parse("""
        graph mlp[H = 128, C, K = 2 * 8](x: f32[B, D + H], m: bool[B]) -> f32[B, C] {
            return x
        }
        """)
    assert graph.kind == "graph" and graph.name == "mlp"
    assert [(c.name, None if c.default is None else sx(c.default)) for c in graph.consts] == [
        ("H", "128"), ("C", None), ("K", "(* 2 8)")]
    x, m = graph.args
    assert (x.name, x.type.dtype, [sx(d) for d in x.type.dims]) == ("x", "f32", ["B", "(+ D H)"])
    assert (m.type.dtype, [sx(d) for d in m.type.dims]) == ("bool", ["B"])
    (ret,) = graph.returns
    assert [sx(d) for d in ret.dims] == ["B", "C"]


def test_scalar_types_tuple_returns_and_dim_arithmetic():
    (graph,) = parse("""
        graph enc(x: f32[B, T, D]) -> (f32[B, Z], f32[], f32[B, T / 2, 2 * H - 1]) {
            return a, b, c
        }
        """)
    z, scalar, half = graph.returns
    assert scalar.dims == [] and [sx(d) for d in z.dims] == ["B", "Z"]
    assert [sx(d) for d in half.dims] == ["B", "(/ T 2)", "(- (* 2 H) 1)"]
    assert [sx(v) for v in graph.body[0].values] == ["a", "b", "c"]


def test_cell_with_state():
    (cell,) = parse("""
        cell rnn[H](x: f32[B, D]) -> f32[B, H] {
            state h: f32[B, H] = zeros
            h = tanh(dense(concat([x, h], -1), H))
            return h
        }
        """)
    assert cell.kind == "cell"
    state, update, _ = cell.body
    assert isinstance(state, A.State) and state.name == "h" and sx(state.init) == "zeros"
    assert sx(update.value) == "(call tanh (call dense (call concat [x h] -1) H))"


def test_train_block_with_steps_evaluate_and_checkpoint():
    (data, train) = parse("""
        data ring = gaussian_ring(8)
        train gan {
            data = ring.train(batch = 256, shuffle = true)
            z ~ normal(0, 1, shape = [256, 2])
            step discriminator {
                loss = mean(bce(discriminator(data.x), 1))
                optimizer = adam(lr = 2e-4, b1 = 0.5)
                over discriminator, critic
            }
            evaluate on ring.test every 2 epochs {
                accuracy = mean(x)
            }
            checkpoint every 100 steps
            early_stop(accuracy, patience = 3)
            steps = 20000
        }
        """)
    assert isinstance(data, A.DataDef) and sx(data.value) == "(call gaussian_ring 8)"
    assert isinstance(train, A.TrainDef) and train.name == "gan"
    _, sample, step, evaluate, checkpoint, early, steps = train.body
    assert isinstance(sample, A.Sample) and sx(sample.dist) == "(call normal 0 1 shape=[256 2])"
    assert isinstance(step, A.Step) and step.name == "discriminator"
    assert isinstance(step.body[2], A.Over) and step.body[2].names == ["discriminator", "critic"]
    assert isinstance(evaluate, A.Evaluate) and sx(evaluate.source) == "(. ring test)"
    assert sx(evaluate.every) == "2" and evaluate.unit == "epochs"
    assert isinstance(checkpoint, A.Checkpoint) and sx(checkpoint.every) == "100"
    assert checkpoint.unit == "steps"
    assert isinstance(early, A.ExprStmt) and sx(early.value) == "(call early_stop accuracy patience=3)"
    assert steps.targets == ["steps"]


def test_unnamed_train_and_evaluate_without_every():
    (train,) = parse("""
        train {
            evaluate on digits.test {
                a = 1
            }
        }
        """)
    assert train.name is None
    (evaluate,) = train.body
    assert evaluate.every is None and evaluate.unit is None


def test_several_definitions_in_one_file():
    items = parse("""
        use std.nn
        graph a(x: f32[B]) -> f32[B] {
            return x
        }
        cell c(x: f32[B]) -> f32[B] {
            return x
        }
        data d = dataset("digits")
        train t {
            loss = 1
        }
        """)
    assert [type(i).__name__ for i in items] == ["Use", "GraphDef", "GraphDef", "DataDef",
                                                 "TrainDef"]


# -- spans ---------------------------------------------------------------------------
def test_spans_point_at_the_source():
    (graph,) = parse("""
        graph g(x: f32[B, D]) -> f32[B, 10] {
            h = x |> dense(10)
            return h
        }
        """)
    assign, ret = graph.body
    assert (assign.span.line, assign.span.col) == (2, 5)
    assert (assign.value.span.line, assign.value.span.col) == (2, 9)
    assert (assign.value.span.end_line, assign.value.span.end_col) == (2, 23)
    assert (ret.values[0].span.line, ret.values[0].span.col) == (3, 12)
    assert graph.args[0].span.col == 9 and graph.span.file == "t.gdl"


def test_the_spec_examples_parse():
    from pathlib import Path
    spec = Path(__file__).resolve().parent / "spec"
    names = sorted(p.stem for p in spec.glob("*.gdl"))
    assert names == ["gan", "lstm", "mlp", "stochastic"]
    for path in spec.glob("*.gdl"):
        assert parse_source(path.read_text(encoding="utf-8"), str(path)).items
