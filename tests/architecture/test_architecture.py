"""The package's shape (docs/architecture.md): no import cycles, Beam only in pipeline/beam.py, in-function
imports of ssrp's own modules only where a heavy dependency or the CLI's start-up time asks for one."""

import ast
import os
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "ssrp")
# module -> the ssrp modules it may import inside a function, and why (the site has a comment too)
LAZY_ALLOWED = {
    "ssrp.pipeline.run": {"ssrp.pipeline.beam", "ssrp.pipeline.beam_dask"},  # Beam
    "ssrp.translate.stage": {"ssrp.translate.decode"},  # fairseq
}


def _modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def _imports(path: str):
    """(module imported, inside a function?) for every import in the file, TYPE_CHECKING blocks included."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from ((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                yield from ((f"{child.module}.{a.name}", in_function) for a in child.names)
            else:
                yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
    yield from walk(ast.parse(open(path).read()), False)


def _resolve(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycles():
    modules = _modules()
    graph = defaultdict(set)
    for mod, path in modules.items():
        for name, inner in _imports(path):
            target = _resolve(name, modules) if name.startswith("ssrp") else None
            if target and not inner and target != mod:
                graph[mod].add(target)
    state: dict[str, int] = {}

    def visit(mod, trail):
        state[mod] = 1
        for nxt in graph[mod]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, mod, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, mod])
        state[mod] = 2

    for mod in modules:
        if mod not in state:
            visit(mod, [])


def test_beam_is_imported_by_the_pipeline_alone():
    for mod, path in _modules().items():
        if any(name.startswith("apache_beam") for name, _ in _imports(path)):
            assert mod in ("ssrp.pipeline.beam", "ssrp.pipeline.beam_dask", "ssrp.pipeline.run"), f"{mod} imports Beam"


def test_in_function_imports_of_ssrp_modules_only_where_allowed():
    modules = _modules()
    found = []
    for mod, path in modules.items():
        for name, inner in _imports(path):
            target = _resolve(name, modules) if name.startswith("ssrp") else None
            if inner and target and not mod.endswith(".cli") and target not in LAZY_ALLOWED.get(mod, ()):
                found.append(f"{mod} -> {target}")
    assert not found, found
