"""The import-layers contract of DESIGN.md ("arrows point down only"), read from the source
with ast: no import cycles, no private names imported across modules (``_core`` excepted),
and every import of one posfast unit by another allowed by the layer table below.

Units are the flat storage modules and the service subpackages (sync, reconcile, printing,
cli): a module inside a subpackage may import its siblings freely.  Imports inside
functions count too (a lazy import is still an arrow).
"""
import ast
import pathlib


import posfast

PKG = pathlib.Path(posfast.__file__).resolve().parent      # the checkout's or the wheel's

# unit -> the units it may import (directly).  DESIGN.md layers and issue 11's arrows.
STORAGE = {"records", "index", "archive", "journal", "payments", "dayclose", "retention",
           "receipt", "storage", "totals", "errors", "_files", "_core", "_version"}
ALLOWED = {
    "errors": set(),
    "_version": set(),
    "_files": {"errors"},
    "_core": {"errors"},
    "records": {"errors", "_core"},                 # (the core packs validated columns into rows)
    "index": {"records", "errors", "_files", "_core"},
    "totals": {"records"},                          # day totals kept as records are appended
    "storage": {"index", "records"},               # the protocol the journal's parts see
    "archive": {"index", "records", "errors", "_files", "_core"},
    "payments": {"dayclose", "storage", "records", "errors"},
    "dayclose": {"storage", "receipt", "records", "errors", "_core"},
    "receipt": {"records", "errors"},
    "retention": {"journal", "records", "errors", "_files", "_core"},
    "journal": {"payments", "dayclose", "archive", "index", "storage", "totals", "records",
                "errors", "_files", "_core"},
    # services use the storage layer's public API (a Journal handed to them), never above it
    "printing": STORAGE - {"_core"},
    "sync": {"records", "errors", "_files", "_core", "receipt"},   # (receipt: amounts as the currency writes them)
    "reconcile": {"sync"} | (STORAGE - {"_core"}),
    # the local agent: a front door beside the CLI, over the services and the storage layer
    "agent": {"sync", "printing"} | (STORAGE - {"_core"}),
    "cli": {"sync", "reconcile", "printing", "agent"} | STORAGE,
    "__init__": STORAGE,
    "__main__": {"cli"},
    # compatibility modules of the 0.1 layout: each re-exports its new home, nothing else
    "escpos": {"printing"},
    "server": {"sync"},
}
SUBPACKAGES = {"sync", "reconcile", "printing", "cli", "agent"}


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts), path.name == "__init__.py"


def _unit(dotted):
    """posfast.sync.syncer -> sync; posfast.records -> records; posfast -> __init__."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path):
    """(line, imported module, imported name or None) of every posfast import in a file."""
    dotted, is_pkg = _dotted(path)
    package = dotted if is_pkg else dotted.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "posfast":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "posfast":
                continue
            for alias in node.names:
                # `from . import journal` / `from posfast import sync` import a module
                yield node.lineno, module, alias.name


def _resolve(module, name, known):
    """The module an import refers to, and the private name if it imports one."""
    if name is not None and "%s.%s" % (module, name) in known:
        return "%s.%s" % (module, name), None
    return module, name if name and name.startswith("_") and not name.startswith("__") else None


def _graph():
    known = {_dotted(p)[0] for p in _modules()} | {"posfast._core"}
    edges, violations = {}, []
    for path in _modules():
        src, _ = _dotted(path)
        rel = path.relative_to(PKG.parent)
        for line, module, name in _imports(path):
            target, private = _resolve(module, name, known)
            if target == src:
                continue
            edges.setdefault(src, set()).add(target)
            su, tu = _unit(src), _unit(target)
            if private and tu != "_core" and su != tu:
                violations.append("%s:%d: %s imports private %s.%s (rule: no private names "
                                  "across modules; make it public or move it)"
                                  % (rel, line, src, target, private))
            if su == tu:
                continue
            if tu == "__init__":
                violations.append("%s:%d: %s imports the package root %s (rule: import the "
                                  "module that defines the name)" % (rel, line, src, target))
                continue
            if su not in ALLOWED:
                violations.append("%s:%d: %s imports %s: %r is not a unit of the layer table "
                                  "(a module of the old layout? it belongs in a subpackage)"
                                  % (rel, line, src, target, su))
                continue
            if tu not in ALLOWED[su]:
                violations.append("%s:%d: %s imports %s%s (rule: layer %r may import only %s)"
                                  % (rel, line, src, target, "." + name if name else "", su,
                                     ", ".join(sorted(ALLOWED[su])) or "nothing"))
    return edges, violations


def _cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_the_package():
    edges, _ = _graph()
    assert "posfast.journal" in edges and "posfast.records" in edges["posfast.journal"]


def test_imports_follow_the_layers_without_cycles_or_private_names():
    edges, violations = _graph()
    problems = list(violations)
    # only the module-level graph counts for cycles between units; lazy imports are listed above
    for comp in _cycles(edges):
        problems.append("import cycle: %s (rule: arrows point down only)" % " -> ".join(comp))
    assert not problems, "import-layers contract broken:\n  " + "\n  ".join(problems)
