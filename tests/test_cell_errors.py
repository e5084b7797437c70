"""Every error of cells, scan and generate: at its line and column, with its message and hint.

Each program has one mistake, and the check reports exactly one diagnostic for it: a cell
is elaborated on its own and again at each scan, and the same mistake must not be
reported twice (once with a symbolic dim, once with its value).
"""

from __future__ import annotations

import pytest

from graphdl.elaborate.check import check_program
from graphdl.runtime.data import SOURCES

# a cell with one state, and a decoder cell from tokens to logits over V = 8
C = 'cell c(x: f32[B, D]) -> f32[B, D] {\n    state h: f32[B, D] = zeros\n    h = tanh(x + h)\n    return h\n}\n'
T = ('cell dec[V = 8](tok: i32[B]) -> f32[B, V] {\n    state h: f32[B, 4] = zeros\n'
     '    h = tanh(dense(embedding(tok, vocab = V, dim = 4), 4) + h)\n    return dense(h, V)\n}\n')

# (program, line, column, message, hint)
CASES = {
    "state_outside_cell": (
        'graph g(x: f32[B, D]) -> f32[B, D] {\n    state h: f32[B, D] = zeros\n    return x\n}\n',
        2, 5, '`state` is only allowed inside a cell',
        'declare the recurrent part as `cell name(x: ...) { state h: ... }` and run it with scan'),
    "state_twice": (
        'cell c(x: f32[B, D]) -> f32[B, D] {\n    state h: f32[B, D] = zeros\n    state h: f32[B, D] = zeros\n    return x\n}\n',
        3, 5, 'state `h` is declared twice',
        None),
    "state_initializer": (
        'cell c(x: f32[B, D]) -> f32[B, D] {\n    state h: f32[B, D] = normal(0.1)\n    return x\n}\n',
        2, 26, 'a state starts from zeros or ones, not `normal`',
        'start from zeros and let the first step set it, or pass `init = {name = ...}` to scan'),
    "two_inputs": (
        'cell c(x: f32[B, D], y: f32[B, D]) -> f32[B, D] {\n    return x\n}\ngraph g(xs: f32[B, T, D]) {\n    return scan(xs, c).out\n}\n',
        1, 22, 'a cell takes one input per step; `c` declares 2',
        'join the inputs of one step into one tensor (concat them before the scan), or pass a fixed one as an initial state'),
    "no_input": (
        'cell c() -> f32[2, 3] {\n    return zeros([2, 3])\n}\n',
        1, 1, 'cell `c` needs an input argument',
        'a cell takes the input of one step: cell c(x: f32[B, D])'),
    "returns_tuple": (
        'cell c(x: f32[B, 4]) {\n    return split(x, 2)\n}\ngraph g(xs: f32[B, T, 4]) {\n    return scan(xs, c).out\n}\n',
        2, 5, 'a cell returns one tensor per step, got a tuple',
        'return one tensor; keep other values in a `state`, which scan also returns'),
    "state_not_tensor": (
        'cell c(x: f32[B, 4]) -> f32[B, 4] {\n    state h: f32[B, 4] = zeros\n    h = x |> split(2)\n    return x\n}\ngraph g(xs: f32[B, T, 4]) {\n    return scan(xs, c).out\n}\n',
        3, 5, 'state `h` must be assigned a tensor f32[B, 4], got a tuple',
        None),
    "state_next_type": (
        'cell c(x: f32[B, D]) -> f32[B, D] {\n    state h: f32[B, D] = zeros\n    h = sum(x, -1)\n    return x\n}\ngraph g(xs: f32[B, T, 4]) {\n    return scan(xs, c).out\n}\n',
        3, 5, 'state `h` is f32[B, D] but its next value is f32[B]',
        None),
    "step_type": (
        C + 'graph g(xs: f32[B, T]) {\n    return scan(xs, c).out\n}\n',
        7, 12, 'one step of the input of c has rank 1 (f32[B]), but f32[B, D] is declared',
        None),
    "scan_not_tensor": (
        C + 'graph g(xs: f32[B, T, 3]) {\n    return scan(3, c).out\n}\n',
        7, 17, 'scan runs over a tensor, got a constant',
        'scan(xs, cell): xs is the sequence, e.g. f32[B, T, D]'),
    "scan_not_cell": (
        C + 'graph g(xs: f32[B, T, 3]) {\n    return scan(xs, relu).out\n}\n',
        7, 21, 'the second argument of scan must be a cell, got an operation',
        'declare one step as `cell NAME(x: ...)`; std.nn has rnn[H], lstm[H] and gru[H]'),
    "scan_axis_tensor": (
        C + 'graph g(xs: f32[B, T, 3], a: i32[B]) {\n    return scan(xs, c, axis = a).out\n}\n',
        7, 24, '`axis` of scan must be a constant integer',
        'axis = 1 runs over T of [B, T, D]'),
    "scan_reverse": (
        C + 'graph g(xs: f32[B, T, 3]) {\n    return scan(xs, c, reverse = 1).out\n}\n',
        7, 24, '`reverse` of scan must be true or false',
        None),
    "scan_unroll": (
        C + 'graph g(xs: f32[B, T, 3]) {\n    return scan(xs, c, unroll = 0).out\n}\n',
        7, 24, '`unroll` of scan must be an integer >= 1',
        None),
    "scan_axis_range": (
        C + 'graph g(xs: f32[B, T, 3]) {\n    return scan(xs, c, axis = 5).out\n}\n',
        7, 24, 'axis 5 is out of range for f32[B, T, 3]',
        None),
    "init_not_record": (
        C + 'graph g(xs: f32[B, T, 3]) {\n    return scan(xs, c, init = 1.0).out\n}\n',
        7, 24, '`init` must be a record of states like {h = ...}, got a constant',
        None),
    "init_unknown_state": (
        C + 'graph g(xs: f32[B, T, 3], h0: f32[B, 3]) {\n    return scan(xs, c, init = {hh = h0}).out\n}\n',
        7, 24, 'c has no state `hh`',
        'its states are h'),
    "init_type": (
        C + 'graph g(xs: f32[B, T, 3], h0: f32[B, 4]) {\n    return scan(xs, c, init = {h = h0}).out\n}\n',
        7, 24, 'initial state `h` is f32[B, 4], but c declares f32[B, 3]',
        None),
    "generate_not_cell": (
        T + 'graph g(s: i32[B]) {\n    return generate(relu, start = s, steps = 3).out\n}\n',
        7, 21, 'the first argument of generate must be a cell, got an operation',
        'generate(cell, start = tokens, steps = N): the cell maps a token to logits'),
    "generate_start_float": (
        T + 'graph g(s: f32[B]) {\n    return generate(dec, start = s, steps = 3).out\n}\n',
        7, 26, '`start` of generate must be integer tokens like i32[B], got f32[B]',
        'the first input token of each sequence, e.g. zeros([B], "i32")'),
    "generate_steps": (
        T + 'graph g(s: i32[B]) {\n    return generate(dec, start = s, steps = 0).out\n}\n',
        7, 37, '`steps` of generate must be a constant integer >= 1',
        None),
    "generate_pick": (
        T + 'graph g(s: i32[B]) {\n    return generate(dec, start = s, steps = 3, pick = best).out\n}\n',
        7, 55, '`pick` of generate is argmax, sample or beam(k)',
        'argmax takes the most likely token (greedy decoding)'),
    "generate_beam_zero": (
        T + 'graph g(s: i32[B]) {\n    return generate(dec, start = s, steps = 3, pick = beam(0)).out\n}\n',
        7, 55, 'beam(k) needs one integer k >= 1, the beam width',
        None),
    "generate_stop_negative": (
        T + 'graph g(s: i32[B]) {\n    return generate(dec, start = s, steps = 3, stop = -1).out\n}\n',
        7, 48, '`stop` of generate must be a constant token id >= 0',
        None),
    "generate_stop_vocab": (
        T + 'graph g(s: i32[B]) {\n    return generate(dec, start = s, steps = 3, stop = 8).out\n}\n',
        7, 48, '`stop` of generate is token 8, but the vocabulary has 8 tokens',
        None),
    "generate_temperature": (
        T + 'graph g(s: i32[B]) {\n    return generate(dec, start = s, steps = 3, pick = sample, temperature = 0).out\n}\n',
        7, 63, '`temperature` of generate must be a constant number > 0',
        None),
    "generate_temperature_argmax": (
        T + 'graph g(s: i32[B]) {\n    return generate(dec, start = s, steps = 3, temperature = 0.5).out\n}\n',
        7, 48, '`temperature` applies to pick = sample only; with pick = argmax it would change nothing',
        'drop `temperature`, or sample: pick = sample'),
    "cell_called": (
        C + 'graph g(x: f32[B, 3]) {\n    return c(x)\n}\n',
        7, 12, '`c` is a cell (one time step); run it over a sequence with scan(xs, c)',
        None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cell_error_is_located(name):
    text, line, col, message, hint = CASES[name]
    result = check_program("m.gdl", text, sources=SOURCES)
    got = [(d.span.file, d.span.line, d.span.col, d.message, d.hint) for d in result.diagnostics]
    assert got == [("m.gdl", line, col, message, hint)]
