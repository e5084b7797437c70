"""User errors: each one at its exact `file:line:col`, with its exact message and hint.

A diagnostic is written for a person, in the style of Elm and Rust: what is wrong in a
sentence, the span at fault, where the conflicting facts came from, and a fix. When a
message here reads badly, improve the compiler, not the test.
"""

from __future__ import annotations

import pytest

from graphdl.elaborate.check import check_program
from graphdl.errors import render_all
from graphdl.runtime.data import SOURCES

# (source, [(line, col, message, hint), ...]) -- every diagnostic of the file, in order
CASES = [
    pytest.param(
        """\
        graph mlp[H = 128, C = 10](x: f32[B, D]) -> f32[B, C] {
            return x |> dense(H) |> relux |> dense(C)
        }
        """,
        [
            (2, 29, 'unknown operation `relux`',
             'did you mean `relu`?'),
        ],
        id="unknown_op",
    ),
    pytest.param(
        """\
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(20)
        }
        """,
        [
            (2, 12, 'the result of mlp is f32[B, 20], but f32[B, 10] is declared',
             None),
        ],
        id="return_shape",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 3], w: f32[4, 5]) -> f32[B, 5] {
            return x @ w
        }
        """,
        [
            (2, 12, 'cannot multiply f32[B, 3] @ f32[4, 5]: inner dims 3 and 4 differ',
             'the last axis of the left side must equal the second-to-last of the right'),
        ],
        id="matmul",
    ),
    pytest.param(
        """\
        graph cnn(x: f32[B, 8, 8, 1]) -> f32[B, 10] {
            h = x |> conv(8, kernel = 3 |> relu
            return h |> flatten |> dense(10)
        }
        """,
        [
            (2, 40, "expected ')' to close the call opened at 2:18",
             'the next line starts with `return`; a new line inside brackets does not end the statement'),
        ],
        id="missing_paren",
    ),
    pytest.param(
        """\
        graph cnn(x: f32[B, D]) -> f32[B, 10] {
            h = x |> dense(10)
            return h
        """,
        [
            (3, 13, "the file ended inside the `graph cnn` body opened at 1:1; a '}' is missing",
             None),
        ],
        id="eof_body",
    ),
    pytest.param(
        """\
        graph policy(l: f32[B, 4]) -> i32[B] {
            a ~ categorical(logits = l) by reparam
            return a
        }
        """,
        [
            (2, 36, '`reparam` needs a continuous distribution, but categorical is discrete',
             'use `by reinforce`, `by enumerate`, or onehot_categorical with `by gumbel_softmax(...)`'),
        ],
        id="reparam",
    ),
    pytest.param(
        """\
        data digits = dataset("digits")
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(10)
        }
        train {
            data = digits.train(batch = 32)
            loss = mean(cross_entropy(mlp(data.x), data.y))
            optimizer = adam(learning_rate = 1e-3)
            epochs = 1
        }
        """,
        [
            (8, 22, 'adam() has no keyword `learning_rate`',
             'its keywords are lr, b1, b2, eps; did you mean `lr`?'),
        ],
        id="kw",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            h = relu(x)
            return hh
        }
        """,
        [
            (3, 12, 'undefined name `hh`',
             'did you mean `h`?'),
        ],
        id="undefined",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            state h: f32[B, D] = zeros
            return x
        }
        """,
        [
            (2, 5, '`state` is only allowed inside a cell',
             'declare the recurrent part as `cell name(x: ...) { state h: ... }` and run it with scan'),
        ],
        id="state_outside",
    ),
    pytest.param(
        """\
        graph pair(a: f32[B, T], b: f32[B, T]) -> f32[B, T] {
            return a + b
        }
        graph main(x: f32[8, 100], y: f32[8, 40]) -> f32[8, 100] {
            return pair(x, y)
        }
        """,
        [
            (5, 20, 'dim T is 40 here, but it was bound to 100 at m.gdl:5:17',
             None),
        ],
        id="dim_twice",
    ),
    pytest.param(
        """\
        data digits = dataset("digits")
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(10)
        }
        train {
            data = digits.train(batch = 32)
            loss = mean(cross_entropy(mlp(data.x), data.y))
            optimizer = adam(lr = 1e-3)
            epoch = 3
        }
        """,
        [
            (9, 5, 'unknown setting `epoch`',
             'did you mean `epochs`?'),
        ],
        id="unknown_setting",
    ),
    pytest.param(
        """\
        data digits = dataset("digits")
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(10)
        }
        train {
            data = digits.train(batch = 32)
            loss = cross_entropy(mlp(data.x), data.y)
            optimizer = adam(lr = 1e-3)
            epochs = 1
        }
        """,
        [
            (7, 5, 'a train `loss` must be a scalar, but this is f32[32]',
             'reduce it explicitly, e.g. `loss = mean(...)`'),
        ],
        id="nonscalar_loss",
    ),
    pytest.param(
        """\
        graph g(l: f32[B, 4]) -> i32[B] {
            a ~ categorical(logits = l) by reinforse
            return a
        }
        """,
        [
            (2, 36, 'unknown estimator `reinforse`',
             'did you mean `reinforce`?'),
        ],
        id="unknown_estimator",
    ),
    pytest.param(
        """\
        data digits = dataset("digits", split = [0.8, 0.3])
        """,
        [
            (1, 33, "the fractions in 'split' sum to 1.1, not 1",
             'e.g. split = [0.8, 0.2] or [0.7, 0.1, 0.2]'),
        ],
        id="bad_data_arg",
    ),
    pytest.param(
        """\
        data digits = dataset("digits", seeds = 1)
        """,
        [
            (1, 33, 'dataset() has no keyword `seeds`',
             'its keywords are name, split, seed, path, n, T, level, vocab, lower; did you '
             'mean `seed`?'),
        ],
        id="bad_data_kw",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return x
        }
        graph g(x: f32[B, D]) -> f32[B, D] {
            return relu(x)
        }
        """,
        [
            (4, 1, '`g` is defined twice',
             None),
        ],
        id="duplicate",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 6]) -> f32[B, 2] {
            a, b = split(x, 3)
            return a
        }
        """,
        [
            (2, 5, 'cannot unpack 3 value(s) into 2 names',
             None),
        ],
        id="unpack",
    ),
    pytest.param(
        """\
        graph g(x: float32[B, D]) -> f32[B, D] {
            return x
        }
        """,
        [
            (1, 12, 'unknown dtype `float32`',
             'did you mean `f32`?'),
        ],
        id="dtype",
    ),
    pytest.param(
        """\
        graph vae(x: f32[B, 784]) -> f32[B, 20] {
            skip = x |> dense(32)
            h = dense(x, 20) + skip
            return h
        }
        """,
        [
            (3, 9, 'cannot add f32[B, 20] and f32[B, 32]',
             'broadcasting needs equal sizes or 1 in each axis'),
        ],
        id="broadcast",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, 10] {
            return dense(x, unit = 10)
        }
        """,
        [
            (2, 21, 'dense() has no keyword `unit`',
             'its keywords are x, units, bias; did you mean `units`?'),
        ],
        id="op_keyword",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, 10] {
            return dense(x)
        }
        """,
        [
            (2, 12, 'dense() is missing its argument `units`',
             'its signature is dense(x, units: int, bias: bool = true)'),
        ],
        id="missing_arg",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, 10] {
            return dense(units = 10, x)
        }
        """,
        [
            (2, 30, 'a positional argument cannot follow a keyword argument',
             'put positional arguments first'),
        ],
        id="positional_after_kw",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> bool[B, D] {
            return 0 < x < 1
        }
        """,
        [
            (2, 18, 'comparisons do not chain: `a < b < c` is not allowed',
             'compare two values at a time, with parentheses: (a == b) == c'),
        ],
        id="chained",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            y = relu(x); return y
        }
        """,
        [
            (2, 16, "unexpected character ';'",
             'statements are separated by new lines, not semicolons'),
        ],
        id="semicolon",
    ),
    pytest.param(
        """\
        data d = dataset('digits')
        """,
        [
            (1, 18, 'unexpected character "\'"',
             'strings use double quotes'),
        ],
        id="single_quotes",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            graph h(y: f32[B, D]) -> f32[B, D] {
                return y
            }
            return x
        }
        """,
        [
            (2, 5, 'a graph cannot be defined inside another body',
             'move the `graph` definition to the top level of the file'),
        ],
        id="nested_graph",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, 4] {
            param W: f32[D, 4] = glorott
            return x @ W
        }
        """,
        [
            (2, 26, 'unknown initializer `glorott`',
             'did you mean `glorot`?'),
        ],
        id="unknown_init",
    ),
    pytest.param(
        """\
        cell acc(x: f32[B, D]) -> f32[B, D] {
            state s: f32[B, D] = zeros
            s = s + x
            return s
        }
        graph g(xs: f32[B, T, D]) -> f32[B, D] {
            return acc(xs)
        }
        """,
        [
            (7, 12, '`acc` is a cell (one time step); run it over a sequence with scan(xs, acc)',
             None),
        ],
        id="cell_called",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return g(x)
        }
        """,
        [
            (2, 12, 'graph `g` calls itself (directly or through other graphs)',
             'graphs are inlined, so they cannot be recursive'),
        ],
        id="recursion",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 6]) -> f32[B, 4] {
            return reshape(x, [B, 4])
        }
        """,
        [
            (2, 23, 'cannot reshape f32[B, 6] (6 * B elements) to [B, 4] (4 * B elements)',
             None),
        ],
        id="reshape",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 784]) -> f32[B, 28, 28, 8] {
            return conv(x, 8)
        }
        """,
        [
            (2, 17, 'conv takes [B, L, C] (1-D) or [B, H, W, C] (2-D) tensors, got f32[B, 784]',
             'add a channel axis with reshape(x, [B, L, 1])'),
        ],
        id="conv_rank",
    ),
    pytest.param(
        """\
        graph classify(xs: f32[B, T, D]) -> f32[B, 10] {
            run = scan(xs, lstm[64])
            return run.state.hidden |> dense(10)
        }
        """,
        [
            (3, 12, '`run.state` has no field `hidden`',
             'its fields are h, c'),
        ],
        id="record_field",
    ),
    pytest.param(
        """\
        graph g(xs: f32[B, T, D]) -> f32[B, 64] {
            enc = scan(xs, lstm[64])
            dec = scan(xs, gru[64], init = enc.state)
            return dec.state.h
        }
        """,
        [
            (3, 29, 'gru has no state `c`',
             'its states are h'),
        ],
        id="scan_init",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> i32[B, D] {
            return cast(x, "int32")
        }
        """,
        [
            (2, 20, 'unknown dtype "int32"',
             'did you mean `i32`?'),
        ],
        id="cast_dtype",
    ),
    pytest.param(
        """\
        graph g(x: i32[B, D]) -> f32[B, 4] {
            return dense(x, 4)
        }
        """,
        [
            (2, 18, 'dense needs a floating-point tensor, got i32[B, D]',
             'convert with cast(x, "f32")'),
        ],
        id="int_dense",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return x |> 2
        }
        """,
        [
            (2, 17, 'the right side of `|>` must be a name or a call',
             'write `x |> f` or `x |> f(a, b)`'),
        ],
        id="pipe_literal",
    ),
    pytest.param(
        """\
        data ring = gaussian_ring(8)
        graph generator(z: f32[B, 2]) -> f32[B, 2] {
            return z |> dense(2)
        }
        train {
            data = ring.train(batch = 64)
            step g {
                loss = mean(generator(data.x))
                optimizer = adam(lr = 1e-3)
                over generatr
            }
            steps = 10
        }
        """,
        [
            (10, 9, '`over generatr`: no graph named `generatr` in this file',
             'did you mean `generator`?'),
        ],
        id="over_unknown",
    ),
    pytest.param(
        """\
        graph g(xs: f32[B, T, D]) -> f32[B, 8] {
            run = scan(xs, lstm)
            return run.state.h
        }
        """,
        [
            (2, 11, 'lstm needs a value for its constant `H`',
             'write lstm[H = ...]'),
        ],
        id="missing_const",
    ),
    pytest.param(
        """\
        data digits = dataset("digits")
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(10)
        }
        train {
            data = digits.valid(batch = 32)
            loss = mean(cross_entropy(mlp(data.x), data.y))
            optimizer = adam(lr = 1e-3)
            epochs = 1
        }
        """,
        [
            (6, 12, 'data source `digits` has no split `valid`',
             'its splits are train, test'),
        ],
        id="unknown_split",
    ),
    pytest.param(
        """\
        data digits = dataset("digits")
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(10)
        }
        train {
            data = digits.train(batch = 32)
            loss = mean(cross_entropy(mlp(data.x), data.y))
            optimizer = adam(lr = 1e-3)
            epochs = 1
            evaluate on digits.test every 1 epoch {
                accuracy = argmax(mlp(data.x), -1) == data.y
            }
        }
        """,
        [
            (11, 9, 'metric `accuracy` must be a scalar, but it is bool[256]',
             'reduce it, e.g. with mean(...); a binding used by a later line of the block is '
             'an intermediate and may have any shape'),
        ],
        id="metric_not_scalar",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return x $ 2
        }
        """,
        [
            (2, 14, "unexpected character '$'",
             None),
        ],
        id="unexpected_char",
    ),
    pytest.param(
        r"""
        use "models\mlp.gdl"
        """,
        [
            (1, 12, 'unknown escape `\\m` in a string',
             'the escapes are \\\\ \\" \\n \\t \\r; write \\\\ for a backslash'),
        ],
        id="escape",
    ),
    pytest.param(
        """\
        cell c(x: f32[B, D]) -> f32[B, D] {
            state h: f32[B, D] = zeros
            h = dense(x, 8)
            return x
        }
        """,
        [
            (3, 5, 'state `h` is f32[B, D] but its next value is f32[B, 8]',
             None),
        ],
        id="state_next_type",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return x[:, :D]
        }
        """,
        [
            (2, 18, 'a slice end must be a constant integer',
             None),
        ],
        id="unknown_dim_name",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> (f32[B, D], f32[B, D]) {
            return x
        }
        """,
        [
            (2, 5, 'g returns 1 value(s), but its signature declares 2',
             None),
        ],
        id="return_count",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            y = relu(x)
        }
        """,
        [
            (1, 1, 'graph `g` has no `return`',
             'end the body with `return <value>`'),
        ],
        id="no_return",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return x
            y = relu(x)
        }
        """,
        [
            (3, 5, 'this statement comes after `return` and never runs',
             None),
        ],
        id="after_return",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            relu(x)
            return x
        }
        """,
        [
            (2, 5, "this expression's value is not used",
             'bind it to a name (`y = ...`) or return it'),
        ],
        id="unused_expr",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return relu(x))
        }
        """,
        [
            (2, 19, "expected '}' to close the `graph g` body opened at 1:1, found ')'",
             None),
        ],
        id="unmatched",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return concat([x, x), -1)
        }
        """,
        [
            (2, 24, "expected ']' to close the bracket opened at 2:19, found ')'",
             None),
        ],
        id="wrong_closer",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            z ~ normal(x, 1) by gumbel_softmax
            return z
        }
        """,
        [
            (2, 25, '`gumbel_softmax` does not apply to normal (continuous)',
             'normal admits reparam, reinforce'),
        ],
        id="reinforce_normal_bad",
    ),
    pytest.param(
        """\
        graph g(l: f32[B, 4]) -> i32[B] {
            a ~ categorical(logits = l)
            return a
        }
        """,
        [
            (2, 9, 'categorical is discrete, so `a ~ categorical(...)` needs an estimator',
             'add `by reinforce`, `by enumerate`, or onehot_categorical with `by gumbel_softmax(...)`'),
        ],
        id="discrete_no_estimator",
    ),
    pytest.param(
        """\
        data digits = dataset("digits")
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(10)
        }
        train {
            data = digits.train(batch = 32)
            loss = mean(cross_entropy(mlp(data.image), data.y))
            optimizer = adam(lr = 1e-3)
            epochs = 1
        }
        """,
        [
            (7, 35, 'argument `x` of mlp has rank 4 (f32[32, 8, 8, 1]), but f32[B, D] is declared',
             None),
        ],
        id="rank_mismatch",
    ),
    pytest.param(
        """\
        use std.nnn
        """,
        [
            (1, 1, 'unknown module `std.nnn`',
             'did you mean `std.nn`?'),
        ],
        id="unknown_module",
    ),
    pytest.param(
        """\
        data d = datasett("digits")
        """,
        [
            (1, 10, 'unknown data source `datasett`',
             'did you mean `dataset`?'),
        ],
        id="unknown_source",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 4], y: f32[B, 8]) -> f32[B, 3] {
            layer d = dense(3)
            return d(x) + d(y)
        }
        """,
        [
            (3, 19, 'the shared layer `g.d.w` is used with f32[8, 3] here but f32[4, 3] before',
             'a shared layer keeps one parameter shape'),
        ],
        id="layer_shape",
    ),
    pytest.param(
        """\
        graph g[H = 3](x: f32[B, D]) -> f32[B, H] {
            return dense(x, H)
        }
        graph h(x: f32[B, D]) -> f32[B, 3] {
            return g[K = 3](x)
        }
        """,
        [
            (5, 14, 'g has no constant `K`',
             'its constants are H'),
        ],
        id="unknown_kw_graph",
    ),
    pytest.param(
        """\
        cell step(tok: i32[B]) -> f32[B, 2, 8] {
            return zeros([B, 2, 8])
        }
        graph g(bos: i32[B]) -> i32[B, 5] {
            return generate(step, start = bos, steps = 5).out
        }
        """,
        [
            (5, 12, 'generate needs a cell that returns logits over the vocabulary, like f32[B, V]; `step` returns f32[B, 2, 8]',
             'end the cell with a dense layer to the vocabulary size'),
        ],
        id="generate_logits",
    ),
    pytest.param(
        """\
        cell step[V](tok: i32[B]) -> f32[B, V] {
            return embedding(tok, vocab = V, dim = V)
        }
        graph g(bos: i32[B]) -> i32[B, 5] {
            return generate(step[10], start = bos, steps = 5, pick = greedy).out
        }
        """,
        [
            (5, 62, '`pick` of generate is argmax, sample or beam(k)',
             'argmax takes the most likely token (greedy decoding)'),
        ],
        id="generate_pick",
    ),
    pytest.param(
        """\
        cell step[V](tok: i32[B]) -> f32[B, V] {
            return embedding(tok, vocab = V, dim = V)
        }
        graph g(bos: f32[B]) -> i32[B, 5] {
            return generate(step[10], start = bos, steps = 5).out
        }
        """,
        [
            (5, 31, '`start` of generate must be integer tokens like i32[B], got f32[B]',
             'the first input token of each sequence, e.g. zeros([B], "i32")'),
        ],
        id="generate_start",
    ),
    pytest.param(
        """\
        cell step[V](tok: i32[B]) -> f32[B, V] {
            return embedding(tok, vocab = V, dim = V)
        }
        graph g(bos: i32[B]) -> i32[B, 5] {
            return generate(step[10], start = bos, steps = 0).out
        }
        """,
        [
            (5, 44, '`steps` of generate must be a constant integer >= 1',
             None),
        ],
        id="generate_steps",
    ),
    pytest.param(
        """\
        cell step[V](tok: i32[B]) -> f32[B, V] {
            return embedding(tok, vocab = V, dim = V)
        }
        graph g(bos: i32[B]) -> i32[B, 5] {
            return generate(step[10], start = bos, steps = 5, pick = beam(0)).out
        }
        """,
        [
            (5, 62, 'beam(k) needs one integer k >= 1, the beam width',
             None),
        ],
        id="generate_beam",
    ),
    pytest.param(
        """\
        cell step[V](tok: i32[B]) -> f32[B, V] {
            return embedding(tok, vocab = V, dim = V)
        }
        graph g(bos: i32[B]) -> i32[B, 5] {
            return generate(step[10], steps = 5).out
        }
        """,
        [
            (5, 12, 'generate() is missing its argument `start`',
             'its signature is generate(cell, init = none, start, steps, pick = "argmax", '
             'stop = none, temperature = 1.0)'),
        ],
        id="generate_missing",
    ),
    pytest.param(
        """\
        graph g(xs: f32[B, T, D]) -> f32[B, T, 8] {
            return scan(xs, rnn[8], axis = "1").out
        }
        """,
        [
            (2, 29, '`axis` of scan must be a constant integer',
             'axis = 1 runs over T of [B, T, D]'),
        ],
        id="scan_axis",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return x |> relu + 1
        }
        """,
        [
            (2, 22, '`|>` binds loosest, so `+` cannot follow its right side',
             'put the pipe in parentheses: `(x |> f) + 1`'),
        ],
        id="pipe_precedence",
    ),
    pytest.param(
        """\
        data d = dataset("digits)
        """,
        [
            (1, 18, 'this string is not closed on its line',
             'a string ends with " on the line where it starts'),
        ],
        id="unterminated_string",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) => f32[B, D] {
            return x
        }
        """,
        [
            (1, 23, "expected '->' or '{', found '='",
             'the result type follows `->`'),
        ],
        id="arrow",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            if x > 0 {
                return x
            }
        }
        """,
        [
            (2, 5, '`if` is not a GDL statement',
             'GDL has no `if`: select with where(cond, a, b)'),
        ],
        id="if_statement",
    ),
    pytest.param(
        """\
        graph g(x: f32<B, D>) -> f32[B, D] {
            return x
        }
        """,
        [
            (1, 15, "expected '[', found '<'",
             'a tensor type is written dtype[dims], e.g. f32[B, D]'),
        ],
        id="angle_type",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D]
            return x
        }
        """,
        [
            (1, 35, "expected '{' to start the body, found the end of the line",
             "the body's '{' goes on the same line as its header"),
        ],
        id="missing_brace",
    ),
    pytest.param(
        """\
        graph café(x: f32[B, D]) -> f32[B, D] {
            return x
        }
        """,
        [
            (1, 10, "unexpected character 'é'",
             'names are ASCII letters, digits and `_`; other text belongs in a string or a comment'),
        ],
        id="non_ascii_name",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            y = x x
            return y
        }
        """,
        [
            (2, 11, "expected '}' or a new line, found 'x'",
             'two values in a row: is an operator missing, or a new line?'),
        ],
        id="two_values",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            y = x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x
            return y
        }
        """,
        [
            (2, 5, 'this is nested too deeply (more than 100 levels)',
             'split the expression into several named bindings'),
        ],
        id="deep_nesting",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            y = 2 ** 100000
            return x * y
        }
        """,
        [
            (2, 9, 'cannot compute `2 ** 100000`: the result is too large',
             None),
        ],
        id="too_large",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return x + "1"
        }
        """,
        [
            (2, 12, 'cannot apply `+` to a tensor f32[B, D] and the string "1"',
             'operators work on tensors and numbers'),
        ],
        id="string_plus",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, 3]) -> f32[B, 4] {
            param W: f32[3, 4] = glorot
            param W: f32[3, 4] = zeros
            return x @ W
        }
        """,
        [
            (3, 5, 'param `W` is declared twice',
             'give each one its own name'),
        ],
        id="param_twice",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, -3]) -> f32[B, 3] {
            return x
        }
        """,
        [
            (1, 19, 'a dim cannot be negative, got -3',
             None),
        ],
        id="negative_dim",
    ),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, 0] {
            return dense(x, 0)
        }
        """,
        [
            (2, 21, '`units` of dense() must be at least 1, got 0',
             'its signature is dense(x, units: int, bias: bool = true)'),
        ],
        id="dense_zero",
    ),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_error(check, text, expected):
    result = check(text)
    got = [(d.span.line, d.span.col, d.message, d.hint) for d in result.diagnostics]
    assert got == expected
    assert all(d.span.file == "m.gdl" for d in result.diagnostics)


def test_at_least_thirty_distinct_errors():
    messages = {m for _, expected in (c.values for c in CASES) for _, _, m, _ in expected}
    assert len(messages) >= 30


def test_rendered_with_line_and_caret(check):
    result = check("""\
        graph mlp[H = 128, C = 10](x: f32[B, D]) -> f32[B, C] {
            return x |> dense(H) |> relux |> dense(C)
        }
        """)
    assert render_all(result.diagnostics, result.program.sources) == (
        "m.gdl:2:29: error: unknown operation `relux`\n"
        "  |\n"
        "2 |     return x |> dense(H) |> relux |> dense(C)\n"
        "  |                             ^^^^^\n"
        "  = hint: did you mean `relu`?"
    )


def test_broadcast_names_both_shapes_and_where_they_came_from(check):
    result = check("""\
        graph vae(x: f32[B, 784]) -> f32[B, 20] {
            skip = x |> dense(32)
            h = dense(x, 20) + skip
            return h
        }
        """)
    (d,) = result.diagnostics
    assert d.message == "cannot add f32[B, 20] and f32[B, 32]"
    assert d.notes == ["`dense(x, 20)` is f32[B, 20]", "`skip` is f32[B, 32], bound at 2:5"]
    text = render_all(result.diagnostics, result.program.sources)
    assert "3 |     h = dense(x, 20) + skip\n  |         ^^^^^^^^^^^^^^^^^^^\n" in text


def test_return_shape_says_which_axis_and_where_declared(check):
    result = check("""\
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(20)
        }
        """)
    (d,) = result.diagnostics
    assert d.notes == ["axis 1 is 20 here, but 10 is declared", "declared at m.gdl:1:28"]


def test_dim_bound_twice_says_where_it_was_bound(check):
    result = check("""\
        graph pair(a: f32[B, T], b: f32[B, T]) -> f32[B, T] {
            return a + b
        }
        graph main(x: f32[8, 100], y: f32[8, 40]) -> f32[8, 100] {
            return pair(x, y)
        }
        """)
    (d,) = result.diagnostics
    assert (d.span.line, d.span.col) == (5, 20)
    assert d.message == "dim T is 40 here, but it was bound to 100 at m.gdl:5:17"
    assert d.notes == ["argument `b` of pair is f32[8, 40]"]


def test_several_errors_in_source_order_with_a_count(check):
    result = check("""\
        graph h(x: f32[B, D]) -> f32[B, D] {
            state s: f32[B, D] = zeros
            return x
        }
        graph g(x: f32[B, D]) -> f32[B, D] {
            a = relux(x)
            b = x @ dense(x, 3)
            return missing
        }
        data d = dataset("digits", split = [0.8, 0.3])
        """)
    got = [(d.span.line, d.span.col, d.message) for d in result.diagnostics]
    assert got == [
        (2, 5, "`state` is only allowed inside a cell"),
        (6, 9, "unknown operation `relux`"),
        (7, 9, "cannot multiply f32[B, D] @ f32[B, 3]: inner dims D and B differ"),
        (8, 12, "undefined name `missing`"),
        (10, 28, "the fractions in 'split' sum to 1.1, not 1"),
    ]
    text = render_all(result.diagnostics, result.program.sources)
    assert text.endswith("\n5 errors")
    assert text.count(": error: ") == 5
    heads = [line for line in text.splitlines() if ": error: " in line]
    assert heads == [f"m.gdl:{line}:{col}: error: {msg}" for line, col, msg in got]


def test_one_error_has_no_count_line(check):
    result = check("""\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return hh
        }
        """)
    assert not render_all(result.diagnostics, result.program.sources).endswith("error")


def test_import_cycle(tmp_path):
    a, b = tmp_path / "a.gdl", tmp_path / "b.gdl"
    a.write_text('use "b.gdl"\ngraph fa(x: f32[B]) -> f32[B] {\n    return x\n}\n')
    b.write_text('use "a.gdl"\ngraph fb(x: f32[B]) -> f32[B] {\n    return x\n}\n')
    result = check_program(str(a), a.read_text(), sources=SOURCES)
    (d,) = result.diagnostics
    assert d.message == "import cycle: a.gdl is already being imported"
    assert d.hint == "a.gdl -> b.gdl -> a.gdl"
    assert d.span.file == str(tmp_path / "b.gdl")
    assert (d.span.line, d.span.col) == (1, 1)
    assert "fa" in result.program.graphs and "fb" in result.program.graphs


def test_import_of_a_missing_file(check, tmp_path):
    result = check("""\
        use "missing.gdl"
        """)
    (d,) = result.diagnostics
    assert (d.span.line, d.span.col, d.message) == (1, 1, "cannot find missing.gdl")
    assert d.hint == (f"looked for {tmp_path / 'missing.gdl'}; a path in a .gdl file is "
                      "relative to that file")


def test_error_inside_an_imported_file_names_that_file(tmp_path):
    (tmp_path / "lib.gdl").write_text("graph f(x: f32[B]) -> f32[B] {\n    return relux(x)\n}\n")
    main = tmp_path / "main.gdl"
    main.write_text('use "lib.gdl"\ngraph g(x: f32[B]) -> f32[B] {\n    return f(x)\n}\n')
    result = check_program(str(main), main.read_text(), sources=SOURCES)
    spans = [(d.span.file, d.span.line, d.span.col, d.message) for d in result.diagnostics]
    assert (str(tmp_path / "lib.gdl"), 2, 12, "unknown operation `relux`") in spans
    text = render_all(result.diagnostics, result.program.sources)
    assert "2 |     return relux(x)" in text


def test_syntax_error_names_tokens_as_written(check):
    result = check("""\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return concat([x, x), -1)
        }
        """)
    (d,) = result.diagnostics
    for token_name in ("RPAR", "RSQB", "LPAR", "_NL", "$END", "NAME"):
        assert token_name not in d.message


def test_a_user_error_never_renders_a_traceback(check):
    result = check("""\
        graph g(x: f32[B, D]) -> f32[B, D] {
            y = x[1:2:3:4]
            return x
        }
        """)
    text = render_all(result.diagnostics, result.program.sources)
    assert "Traceback" not in text and text.startswith("m.gdl:2:")


def test_early_stop_assigned_a_constant_is_reported(check):
    result = check("""\
        data digits = dataset("digits")
        graph mlp(x: f32[B, D]) -> f32[B, 10] {
            return x |> dense(10)
        }
        train {
            data = digits.train(batch = 32)
            loss = mean(cross_entropy(mlp(data.x), data.y))
            optimizer = adam(lr = 1e-3)
            early_stop = 3
        }
        """)
    assert [(d.span.line, d.span.col) for d in result.diagnostics] == [(9, 5)]


def test_a_parameter_given_twice_under_two_names(check):
    result = check("""\
        graph g(l: f32[B, 3], p: f32[B, 3]) -> i32[B] {
            a ~ categorical(logits = l, probs = p) by reinforce
            return a
        }
        """)
    assert [(d.span.line, d.span.col, d.message) for d in result.diagnostics] == [
        (2, 33, "categorical() got `logits` twice (as `probs`)")]


def test_nll_takes_integer_labels(check):
    result = check("""\
        graph g(logp: f32[B, 3], target: f32[B, 3]) -> f32[B] {
            return nll(logp, target)
        }
        """)
    assert [(d.span.line, d.message) for d in result.diagnostics] == [
        (2, "nll takes integer labels, got f32[B, 3]")]


def test_a_train_block_reads_one_split(check):
    result = check("""\
        graph net(x: f32[B, 64]) -> f32[B, 10] {
            return x |> dense(10)
        }
        data digits = dataset("digits")
        data ring = gaussian_ring(8, n = 2000)
        train {
            data = digits.train(batch = 16)
            other = ring.train(batch = 8)
            loss = mean(cross_entropy(net(data.x), data.y)) + mean(other.x)
            steps = 3
        }
        """)
    assert [(d.span.line, d.message) for d in result.diagnostics] == [
        (8, "a train block reads one data split; this one already reads digits.train")]


def test_over_may_name_a_std_nn_graph(check):
    result = check("""\
        data digits = dataset("digits")
        train {
            data = digits.train(batch = 16)
            step fit {
                loss = mean(cross_entropy(mlp(data.x), data.y))
                over mlp
            }
        }
        """)
    assert result.diagnostics == []


def test_a_tensor_baseline_is_one_value_per_example(check):
    result = check("""\
        graph g(l: f32[B, 3], base: f32[7, 5]) -> i32[B] {
            a ~ categorical(logits = l) by reinforce(baseline = base)
            return a
        }
        graph h(l: f32[B, 3], base: f32[B]) -> i32[B] {
            a ~ categorical(logits = l) by reinforce(baseline = base)
            return a
        }
        """)
    assert [(d.span.line, d.message) for d in result.diagnostics] == [
        (2, "a baseline is one value per example (f32[B]), got f32[7, 5]")]


# One binder (graphdl/elaborate/binding.py) words every call's argument errors the same
# way, whatever is called, and puts the caret on the argument at fault.
BINDER_CASES = [
    pytest.param(
        """\
        graph f(x: f32[B, D]) -> f32[B, D] {
            return x
        }
        graph g(x: f32[B, D]) -> f32[B, D] {
            return f(x, x)
        }
        """,
        (5, 17, "f() takes at most 1 argument, got 2", "its signature is f(x)"),
        id="graph_too_many"),
    pytest.param(
        """\
        graph f(x: f32[B, D]) -> f32[B, D] {
            return x
        }
        graph g(x: f32[B, D]) -> f32[B, D] {
            return f(x, xs = x)
        }
        """,
        (5, 17, "f() has no keyword `xs`", "its keywords are x; did you mean `x`?"),
        id="graph_keyword"),
    pytest.param(
        """\
        graph g(x: f32[B, D]) -> f32[B, D] {
            return dense(x, 4, units = 4)
        }
        """,
        (2, 24, "dense() got `units` twice",
         "`units` is also given by position; its signature is "
         "dense(x, units: int, bias: bool = true)"),
        id="op_twice"),
    pytest.param(
        """\
        cell c(x: f32[B, D]) -> f32[B, D] {
            return x
        }
        graph g(xs: f32[B, T, D]) -> f32[B, T, D] {
            return scan(xs, c, 1, 2, 3, 4, 5, 6).out
        }
        """,
        (5, 39, "scan() takes at most 7 arguments, got 8",
         "its signature is scan(xs, cell, axis = 1, init = none, reverse = false, unroll = 1, "
         "lengths = none)"),
        id="form_too_many"),
    pytest.param(
        """\
        graph g(x: f32[B, 2]) -> f32[B, 2] {
            param W: f32[2, 2] = normal(0.1, 2)
            return x @ W
        }
        """,
        (2, 38, "normal() takes at most 1 argument, got 2", "its signature is normal(std = 1.0)"),
        id="initializer_too_many"),
    pytest.param(
        """\
        graph g(x: f32[B, 2]) -> f32[B, 2] {
            param W: f32[2, 2] = zeros(1)
            return x @ W
        }
        """,
        (2, 32, "zeros() takes no arguments, got 1", "its signature is zeros()"),
        id="initializer_no_arguments"),
    pytest.param(
        """\
        data digits = dataset("digits")
        train {
            data = digits.train(64, true, 3)
            loss = mean(cross_entropy(flatten(data.x) |> dense(10), data.y))
            optimizer = adam()
        }
        """,
        (3, 35, "digits.train() takes at most 2 arguments, got 3",
         "its signature is digits.train(batch = 32, shuffle = false)"),
        id="split_too_many"),
    pytest.param(
        """\
        data digits = dataset("digits")
        train {
            data = digits.train(batch = 32)
            loss = mean(cross_entropy(flatten(data.x) |> dense(10), data.y))
            optimizer = adam()
            evaluate on digits.test {
                accuracy = mean(argmax(flatten(data.x) |> dense(10), -1) == data.y)
            }
            early_stop(accuracy, patiense = 3)
        }
        """,
        (9, 26, "early_stop() has no keyword `patiense`",
         "its keywords are metric, patience, mode; did you mean `patience`?"),
        id="early_stop_keyword"),
    pytest.param(
        """\
        data digits = dataset("digits", [0.8, 0.3])
        """,
        (1, 33, "the fractions in 'split' sum to 1.1, not 1",
         "e.g. split = [0.8, 0.2] or [0.7, 0.1, 0.2]"),
        id="data_positional_caret"),
    pytest.param(
        """\
        data digits = dataset()
        """,
        (1, 15, "dataset() is missing its argument `name`",
         "its signature is dataset(name, split = none, seed = 0, path = none, n = none, "
         "T = none, level = none, vocab = none, lower = none)"),
        id="data_missing"),
]


@pytest.mark.parametrize("text, expected", BINDER_CASES)
def test_binder_error(check, text, expected):
    result = check(text)
    assert [(d.span.line, d.span.col, d.message, d.hint) for d in result.diagnostics] == [expected]


def test_a_data_line_without_data_sources_is_a_located_error():
    result = check_program("<m.gdl>", 'data digits = dataset("digits")\n')
    assert [(d.span.line, d.span.col, d.message) for d in result.diagnostics] == [
        (1, 1, "no data sources are available here")]


def test_a_data_source_that_failed_to_open_gives_no_follow_on_errors():
    """Its uses are not `undefined name` errors (with a did-you-mean of some op): the one
    error is the source's own."""
    src = ('data ring = dataset("gaussian_ring", seed = 0)\n'
           "graph g(x: f32[B, D]) -> f32[B, 2] {\n    return dense(x, 2)\n}\n"
           "train {\n    data = ring.train(batch = 8)\n"
           "    loss = mean(cross_entropy(g(data.x), data.y))\n    optimizer = adam()\n}\n")
    result = check_program("<m.gdl>", src, sources=SOURCES)
    assert [(d.span.line, d.message.split(";")[0]) for d in result.diagnostics] == [
        (1, "unknown dataset 'gaussian_ring'")]
