"""`--set` overrides of train settings, applied to the train block's syntax tree.

An override of a train setting (`train.epochs=5`, `train.optimizer=sgd(lr = 0.1)`,
`train.optimizer.lr=0.01`, `train.batch=32`, `train.schedule=cosine(lr = 1e-3)`) is
written into the train block as if the file said it, before the block is elaborated: so
it is checked by the very code that checks the file, with the same messages and
did-you-means. The statements it adds carry spans in a source of their own named
`<--set KEY>`, which is how the front ends tell an override's error from a file's
(`override_errors`) and print it as `error: --set KEY=VALUE: ...`.

Graph constants (`mlp.H=64`) are not here: `Program.consts_for` hands them to each graph.
"""

from __future__ import annotations

import json

from graphdl.errors import Diagnostic, Span, UserError
from graphdl.ops.training import DEFAULT_OPTIMIZER, OPTIMIZERS, SCHEDULES, TRAIN_SETTINGS
from graphdl.parse import ast as A
from graphdl.parse import parse_source

SOURCE_PREFIX = "<--set "
# the settings a `--set` may write whole, by name (`epochs`, ...) or as an expression
EXPRESSION_SETTINGS = ("optimizer", "schedule")
SIMPLE_SETTINGS = tuple(n for n, s in TRAIN_SETTINGS.items() if s.overridable)


def source_name(key: str) -> str:
    return f"{SOURCE_PREFIX}{key}>"


def gdl_text(value) -> str:
    """A Python value as GDL source (`True` -> `true`, a list -> `[...]`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(gdl_text(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def value_text(key: str, value) -> str:
    """The GDL text an override stands for: an optimizer or schedule is given as GDL
    text (`sgd(lr = 0.1)`), every other value is a literal."""
    if key.rsplit(".", 1)[-1] in EXPRESSION_SETTINGS and isinstance(value, str):
        return value
    return gdl_text(value)


def split_key(key: str, train_names: list[str]) -> tuple[list[str], list[str]] | None:
    """`gan.optimizer.lr` -> (["gan"], ["optimizer", "lr"]): the train blocks a key
    addresses and the setting path in them; None for a key that is no train setting's
    (a graph constant, or a mistake that `unknown_override` names)."""
    parts = key.split(".")
    if len(parts) == 1:  # `epochs`: every train block
        return (list(train_names), parts) if parts[0] in SIMPLE_SETTINGS else None
    head, rest = parts[0], parts[1:]
    if head in train_names:
        blocks = [head]
    elif head == "train":
        blocks = list(train_names)
    else:
        return None
    if not blocks:
        return None
    if len(rest) == 1 and rest[0] in (*SIMPLE_SETTINGS, *EXPRESSION_SETTINGS, "batch"):
        return blocks, rest
    if len(rest) == 2 and rest[0] in EXPRESSION_SETTINGS and rest[1]:
        return blocks, rest
    return None


def known_keys(train_names: list[str]) -> set[str]:
    """The train-setting keys, spelled out (for did-you-means)."""
    keys = set(SIMPLE_SETTINGS)
    keywords = {k.split("=")[0].strip() for o in OPTIMIZERS.values() for k in o.signature.split(",")}
    for prefix in {"train", *train_names}:
        keys.update(f"{prefix}.{s}" for s in (*SIMPLE_SETTINGS, *EXPRESSION_SETTINGS, "batch"))
        keys.update(f"{prefix}.optimizer.{k}" for k in keywords)
    return keys


def suggestion(key: str, train_names: list[str]) -> str | None:
    """`train.lr` -> did you mean `train.optimizer.lr`? (an optimizer's keyword)."""
    parts = key.split(".")
    keywords = {k.split("=")[0].strip() for o in OPTIMIZERS.values() for k in o.signature.split(",")}
    if parts[-1] in keywords and "optimizer" not in parts:
        prefix = parts[0] if len(parts) > 1 and (parts[0] in train_names or parts[0] == "train") \
            else "train"
        return f"did you mean `{prefix}.optimizer.{parts[-1]}`?"
    return None


def parse_value(program, key: str, value) -> A.Node | None:
    """The override's value as a GDL expression whose spans lie in `<--set KEY>`."""
    text = value_text(key, value)
    name = source_name(key)
    source = f"train _set {{\n    _value = {text}\n}}\n"
    program.sources[name] = source
    if "\n" in text or "\r" in text:
        program.error(f"the value is not a GDL expression: {text!r}", Span(name, 2, 14, 2, 15))
        return None
    try:
        module = parse_source(source, name)
        statement = module.items[0].body[0]
        if len(module.items) != 1 or len(module.items[0].body) != 1 \
                or not isinstance(statement, A.Assign):
            raise ValueError
    except UserError as err:
        del err  # its line and column are of the wrapper this function parses
        program.error(f"`{text}` is not a GDL expression", Span(name, 2, 14, 2, 14 + len(text)))
        return None
    except (ValueError, AttributeError, IndexError):
        program.error(f"`{text}` is not a GDL expression", Span(name, 2, 14, 2, 14 + len(text)))
        return None
    return statement.value


def apply_train_overrides(program) -> None:
    """Write every train-setting override into the train blocks it addresses."""
    names = [t.name or "train" for t in program.trains]
    for key, value in program.overrides.items():
        where = split_key(key, names)
        if where is None:
            continue
        blocks, path = where
        at = Span(source_name(key), 2, 5, 2, 5 + len(value_text(key, value)) + 9)
        node = parse_value(program, key, value)
        if node is None:
            continue
        for tdef in program.trains:
            if (tdef.name or "train") in blocks:
                _apply(program, tdef, path, node, at)


def _assignments(tdef: A.TrainDef, name: str, in_steps: bool):
    """(body, index) of each `name = ...` of the block (and of its steps)."""
    for i, st in enumerate(tdef.body):
        if isinstance(st, A.Assign) and st.targets == [name]:
            yield tdef.body, i
        elif in_steps and isinstance(st, A.Step):
            for j, inner in enumerate(st.body):
                if isinstance(inner, A.Assign) and inner.targets == [name]:
                    yield st.body, j


def _insert(tdef: A.TrainDef, statement: A.Node) -> None:
    """Add a setting to the block's shared statements (before its steps and evaluations)."""
    for i, st in enumerate(tdef.body):
        if isinstance(st, (A.Step, A.Evaluate, A.Checkpoint)):
            tdef.body.insert(i, statement)
            return
    tdef.body.append(statement)


def _set_keyword(call: A.Call, name: str, node: A.Node, at: Span) -> None:
    """Give `call` the keyword `name = node` (its errors point at the override)."""
    call.kwargs[:] = [kw for kw in call.kwargs if kw.name != name]
    call.kwargs.append(A.Keyword(at, name, node))


def _apply(program, tdef: A.TrainDef, path: list[str], node: A.Node, at: Span) -> None:
    block = tdef.name or "train"
    setting = path[0]
    if setting == "batch":
        found = False
        for body in (tdef.body, *(s.body for s in tdef.body if isinstance(s, A.Step))):
            for st in body:
                if isinstance(st, A.Assign) and _reads_a_split(program, st.value):
                    _set_keyword(st.value, "batch", node, at)  # the file's line keeps its span
                    found = True
        if not found:
            program.error(f"train block `{block}` reads no data split, so it has no batch "
                          "size to set", at,
                          hint="its data is read by a line like `data = digits.train(batch = 64)`")
        return
    in_steps = TRAIN_SETTINGS[setting].in_step
    if len(path) == 1:
        found = False
        for body, i in list(_assignments(tdef, setting, in_steps)):
            body[i] = A.Assign(at, [setting], node)
            found = True
        if not found:
            _insert(tdef, A.Assign(at, [setting], node))
        return
    keyword = path[1]
    found = False
    for body, i in list(_assignments(tdef, setting, in_steps)):
        value = body[i].value
        if not isinstance(value, A.Call):
            program.error(f"the {setting} of train block `{block}` is not written as a call, so "
                          f"`{keyword}` cannot be set on its own", at,
                          hint=f"set the whole {setting}: --set {block}.{setting}=...")
            return
        _set_keyword(value, keyword, node, at)
        body[i] = A.Assign(at, body[i].targets, value)  # a follow-on error is the override's
        found = True
    if found:
        return
    if setting == "optimizer":  # the block's optimizer is the default one
        call = A.Call(at, A.Name(at, DEFAULT_OPTIMIZER), [], [A.Keyword(at, keyword, node)])
        _insert(tdef, A.Assign(at, ["optimizer"], call))
        return
    program.error(f"train block `{block}` has no schedule, so `{keyword}` cannot be set on its own",
                  at, hint="give one whole: --set train.schedule=cosine(lr = 1e-3) "
                           f"(schedules: {', '.join(SCHEDULES)})")


def _reads_a_split(program, node) -> bool:
    """`digits.train(batch = 64)`: a call of a data source's split."""
    return (isinstance(node, A.Call) and isinstance(node.func, A.Field)
            and isinstance(node.func.value, A.Name) and node.func.value.id in program.data_defs)


def override_errors(diagnostics: list[Diagnostic]) -> tuple[list[tuple[str, str]], list[Diagnostic]]:
    """Split diagnostics into the overrides' ([(key, message)], each key once) and the rest."""
    mine: dict[str, str] = {}
    rest = []
    for d in diagnostics:
        if d.span is not None and d.span.file.startswith(SOURCE_PREFIX):
            key = d.span.file[len(SOURCE_PREFIX):-1]
            if key not in mine:
                mine[key] = d.message + (f"; {d.hint}" if getattr(d, "hint", None) else "")
        else:
            rest.append(d)
    return list(mine.items()), rest

