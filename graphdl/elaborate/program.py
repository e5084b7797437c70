"""A checked program: the file, its imports, `std.nn`, data sources and what names mean.

`check_program` runs the front end over a file: parse, resolve imports (cycle-checked),
open data sources (shapes only), then build every graph and cell on its own with
symbolic dims and every train block with the shapes of its data.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import ClassVar, Protocol

from graphdl.elaborate.binding import Arg, bind
from graphdl.elaborate.forms import Forms
from graphdl.elaborate.overrides import apply_train_overrides, known_keys, split_key, suggestion
from graphdl.elaborate.values import Const, GraphRef, OpRef, Poison, SourceRef, Special
from graphdl.errors import Diagnostic, Span, UserError, did_you_mean
from graphdl.ops import REGISTRY
from graphdl.parse import ast as A
from graphdl.parse import parse_source
from graphdl.parse.parser import normalize_source
from graphdl.reading import FileRefused, inside, read_gdl_text

STD_MODULES = {"std.nn": "nn.gdl"}


@functools.cache
def std_source(name: str) -> str:
    return (resources.files("graphdl") / "std" / STD_MODULES[name]).read_text()


@functools.cache
def std_module(name: str) -> A.Module:
    """The parsed standard library, once per process (the passes only read the tree)."""
    return parse_source(std_source(name), f"<{name}>")


class SourceKind(Protocol):
    """One kind of data source (`dataset`, `npz`, ...), as the front end needs it.

    The front end does not import the runtime: the caller of `check_program` hands in a
    table of these (`graphdl.runtime.data.SOURCES`). The front end binds a `data` line's
    arguments to `params` (a param missing from `defaults` is required) and calls `open`
    with them; `open` raises `error` for a user mistake, with `.message`, `.hint` and
    `.arg` (the argument at fault, for the caret). If the opened source has a `locate`
    method, the front end calls it with the source's name, the span of its call, the
    spans of its arguments and the file's text, so an error found later, when the data
    are loaded, points at the `data` line too.
    """

    name: str
    params: tuple[str, ...]
    defaults: Mapping[str, object]
    error: ClassVar[type[Exception]]

    def open(self, args: dict, base_dir: Path) -> object: ...


class Program:
    def __init__(self, path: str, text: str, consts: dict | None = None, *, forms: Forms,
                 sources: Mapping[str, SourceKind] | None = None,
                 data_root: str | Path | None = None):
        self.path = path
        # --data-root: every path the file names must resolve inside this folder
        self.data_root = Path(data_root).resolve() if data_root is not None else None
        self.base = Path(path).resolve().parent if not path.startswith("<") else Path.cwd()
        self.sources: dict[str, str] = {path: text}
        self.diagnostics: list[Diagnostic] = []
        self.graphs: dict[str, A.GraphDef] = {}
        self.std_graphs: dict[str, A.GraphDef] = {}
        self.data: dict[str, SourceRef] = {}
        self.data_defs: dict[str, A.DataDef] = {}
        self.trains: list[A.TrainDef] = []
        self.overrides = consts or {}  # --set graph.H=256
        self.forms = forms  # the built-in forms (specials.FORMS), for every Builder
        self.source_kinds = sources  # None: this caller cannot open data
        self.module = self._load(path, text, stack=[], own=True)
        self._load_std()
        apply_train_overrides(self)  # `--set train.epochs=5`: as if the block said it

    # -- loading -------------------------------------------------------------
    def _parse(self, path: str, text: str) -> A.Module | None:
        text = normalize_source(text)
        self.sources[path] = text
        try:
            return parse_source(text, path)
        except UserError as err:
            self.diagnostics.append(err.diagnostic)
            return None

    def _load(self, path: str, text: str, stack: list[str], own: bool) -> A.Module | None:
        module = self._parse(path, text)
        if module is None:
            return None
        for item in module.items:
            if isinstance(item, A.Use) and item.path is not None:
                self._import(item, path, stack + [str(Path(path).resolve())])
        for item in module.items:
            if isinstance(item, A.GraphDef):
                self._define(item)
            elif isinstance(item, A.DataDef) and own:
                if item.name in self.data_defs:
                    self.error(f"data source `{item.name}` is defined twice", item.span,
                               notes=[f"first defined at {self.data_defs[item.name].span}"])
                    continue
                self.data_defs[item.name] = item
            elif isinstance(item, A.TrainDef) and own:
                named = [t for t in self.trains if (t.name or "train") == (item.name or "train")]
                if named:
                    self.error(f"train block `{item.name or 'train'}` is defined twice", item.span,
                               notes=[f"first defined at {named[0].span}"],
                               hint="give each train block its own name: train NAME { ... }")
                    continue
                self.trains.append(item)
            elif isinstance(item, A.Use) and item.module is not None and item.module not in STD_MODULES:
                self.error(f"unknown module `{item.module}`", item.span,
                           did_you_mean(item.module, STD_MODULES) or "the standard library is std.nn")
        return module

    def _import(self, use: A.Use, importer: str, stack: list[str]) -> None:
        if "\0" in use.path or not use.path.strip():
            self.error(f"cannot read {use.path!r}: not a file name", use.span)
            return
        target = (Path(importer).resolve().parent / use.path) if not importer.startswith("<") \
            else Path(use.path)
        if not self.allowed(target, use.span, "use"):
            return
        key = str(target.resolve())
        if key in stack:
            self.error(f"import cycle: {use.path} is already being imported", use.span,
                       hint=" -> ".join(Path(s).name for s in stack + [key]))
            return
        if key in getattr(self, "_imported", set()):
            return
        self.__dict__.setdefault("_imported", set()).add(key)
        if not target.name.endswith(".gdl") or not Path(key).name.endswith(".gdl"):
            # refused before reading: a file that is not GDL is never parsed, so no
            # diagnostic can quote its lines (/etc/passwd, /proc/self/environ); a
            # symlink named x.gdl must point at a .gdl file too
            self.error(f"use: {use.path} is not a .gdl file", use.span,
                       hint="`use` imports graphs from another .gdl file")
            return
        try:
            text = read_gdl_text(target)
        except FileNotFoundError:
            self.error(f"cannot find {use.path}", use.span,
                       hint=f"looked for {target}; a path in a .gdl file is relative to that file")
            return
        except FileRefused as err:
            self.error(f"cannot read {use.path}: it {err.reason}", use.span)
            return
        except OSError as err:
            self.error(f"cannot read {use.path}: {err.strerror or err}", use.span)
            return
        shown = str(Path(importer).parent / use.path) if not importer.startswith("<") else use.path
        self._load(shown, text, stack, own=False)

    def allowed(self, target: Path, span: Span, what: str) -> bool:
        """Whether `target` lies inside --data-root (always, without one); else an error."""
        if self.data_root is None or inside(target, self.data_root):
            return True
        try:
            shown = target.resolve()
        except (OSError, RuntimeError):
            shown = target
        self.error(f"{what}: {shown} is outside the data root {self.data_root}", span,
                   hint="with --data-root DIR, a .gdl file may only name files inside DIR "
                        "(after following symlinks)")
        return False

    def _load_std(self) -> None:
        for name, _file in STD_MODULES.items():
            path = f"<{name}>"
            self.sources[path] = std_source(name)
            module = std_module(name)
            for item in module.items:
                if isinstance(item, A.GraphDef):
                    self.std_graphs[item.name] = item

    def _define(self, item: A.GraphDef) -> None:
        for kind, names in (("constant", [c.name for c in item.consts]),
                            ("argument", [a.name for a in item.args])):
            seen: dict[str, A.Node] = {}
            for node, name in zip(item.consts if kind == "constant" else item.args, names):
                if name in seen:
                    self.error(f"{item.kind} `{item.name}` declares the {kind} `{name}` twice",
                               node.span, notes=[f"first declared at {seen[name].span}"])
                seen[name] = node
        if item.name in self.graphs:
            first = self.graphs[item.name]
            if first.span == item.span:
                return
            self.error(f"`{item.name}` is defined twice", item.span,
                       notes=[f"first defined at {first.span}"])
            return
        self.graphs[item.name] = item

    def error(self, message: str, span: Span | None, hint: str | None = None, notes=()) -> None:
        self.diagnostics.append(UserError(message, span, hint, notes).diagnostic)

    # -- names ---------------------------------------------------------------
    def consts_for(self, gdef: A.GraphDef) -> dict:
        out = {}
        for c in gdef.consts:
            for key in (f"{gdef.name}.{c.name}", c.name):
                if key in self.overrides:
                    out[c.name] = self.overrides[key]
                    break
        return out

    def lookup_global(self, name: str, trained: bool):
        gdef = self.graphs.get(name) or self.std_graphs.get(name)
        if gdef is not None:
            instance = name if trained and gdef.kind == "graph" else None
            return GraphRef(gdef, self.consts_for(gdef), instance)
        if name in self.data:
            return self.data[name]
        if name in self.data_defs:  # declared, but it failed to open: that error is reported
            return Poison()
        if name in self.forms.calls:
            return Special(name)
        if name in REGISTRY and name not in ("const", "index", "getitem"):
            return OpRef(name)
        return None

    def global_names(self) -> list[str]:
        hidden = ("const", "index", "getitem")
        return [*self.graphs, *self.std_graphs, *self.data, *self.forms.calls,
                *(n for n in REGISTRY if n not in hidden)]

    def snippet(self, span: Span) -> str:
        text = self.sources.get(span.file)
        if text is None:
            return "this"
        lines = text.split("\n")
        if span.line == span.end_line and span.line <= len(lines):
            return "`" + lines[span.line - 1][span.col - 1:span.end_col - 1] + "`"
        return "this expression"

    def resolve_path(self, path: str, span: Span, what: str = "load") -> Path | None:
        """`path` relative to the file `span` is in; None (an error reported at `span`) if
        it lies outside --data-root."""
        file = Path(span.file)
        base = file.resolve().parent if not span.file.startswith("<") else Path.cwd()
        full = base / Path(path).expanduser()
        return full if self.allowed(full, span, what) else None

    # -- data ----------------------------------------------------------------
    def open_data(self) -> None:
        for name, item in self.data_defs.items():
            call = item.value
            if not (isinstance(call, A.Call) and isinstance(call.func, A.Name)):
                self.error("a data source is a call like dataset(\"digits\")", item.value.span)
                continue
            if self.source_kinds is None:
                self.error("no data sources are available here", item.span,
                           hint="the caller of check_program opens them: pass "
                                "sources=graphdl.runtime.data.SOURCES")
                continue
            kind = call.func.id
            sources = self.source_kinds
            if kind not in sources:
                self.error(f"unknown data source `{kind}`", call.func.span,
                           did_you_mean(kind, sources) or f"sources are {', '.join(sources)}")
                continue
            args, kwargs, ok = [], {}, True
            for a in call.args:
                v = literal(a)
                ok = ok and v is not None
                args.append(Const(v))
            for k in call.kwargs:
                v = literal(k.value)
                ok = ok and v is not None
                kwargs[k.name] = Const(v)
            if not ok:
                self.error("data source arguments must be literals", call.span)
                continue
            sdef = sources[kind]
            signature = [Arg(p, "any", sdef.defaults[p]) if p in sdef.defaults else Arg(p, "any")
                         for p in sdef.params]
            bound = bind(self, kind, signature, args, kwargs, call.span,
                         [a.span for a in call.args], {k.name: k.span for k in call.kwargs})
            if bound is None:
                continue
            base = self.base if not item.span.file.startswith("<") else Path.cwd()
            if self.data_root is not None and not self._data_paths_allowed(kind, bound, base):
                continue
            try:
                source = sdef.open({k: v.value for k, v in bound.items()}, base)
            except sdef.error as err:
                at = bound.spans.get(err.arg, call.span)
                self.error(err.message, at, err.hint)
                continue
            except Exception as err:  # a source that fails to open is a data error, not a crash
                self.error(f"cannot open data source `{name}`: {err}", call.span)
                continue
            if hasattr(source, "locate"):
                source.locate(name, call.span, dict(bound.spans),
                              self.sources.get(item.span.file, ""))
            self.data[name] = SourceRef(name, source, item.span)

    def _data_paths_allowed(self, kind: str, bound, base: Path) -> bool:
        """Every `path` argument (the one parameter of a source that names a file or
        folder) must lie inside --data-root; dataset("mnist") without one downloads into
        the cache, which a data root forbids too."""
        value = bound.get("path").value if "path" in bound else None
        if value is None:
            if kind == "dataset" and bound.get("name") and bound["name"].value == "mnist":
                self.error('dataset("mnist") without `path` downloads outside the data root',
                           bound.span("name"),
                           hint='give path = "folder" of the IDX files inside the data root')
                return False
            return True
        if not isinstance(value, str):
            return True  # the source reports a bad type itself
        return self.allowed(base / Path(value).expanduser(), bound.span("path"),
                            f"{kind}(path)")


def override_keys(program: Program) -> set[str]:
    """What `--set K=V` (and `graphdl.load(path, K=V)`) may name, spelled out: graph
    constants (`mlp.H`, `H`) and train settings (`train.epochs`, `train.optimizer.lr`, ...;
    an optimizer's or schedule's keyword is checked against its signature when the
    block is elaborated)."""
    known = set()
    for g in {**program.std_graphs, **program.graphs}.values():
        for c in g.consts:
            known.update({f"{g.name}.{c.name}", c.name})
    if program.trains:
        known |= known_keys([t.name or "train" for t in program.trains])
    return known


def unknown_override(program: Program, key: str) -> str | None:
    """None if `key` names a constant or setting, else what is wrong with it."""
    known = override_keys(program)
    names = [t.name or "train" for t in program.trains]
    if key in known or split_key(key, names) is not None:
        return None
    near = suggestion(key, names) if program.trains else None
    near = near or did_you_mean(key, known)
    return f"no graph constant or train setting is called `{key}`" + (f"; {near}" if near else "")


def literal(node: A.Node):
    """The Python value of a literal expression, or None."""
    if isinstance(node, (A.Num, A.Str, A.Bool)):
        return node.value
    if isinstance(node, A.ListLit):
        items = [literal(i) for i in node.items]
        return None if any(i is None for i in items) else items
    return None


