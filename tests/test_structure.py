"""The layout of `lib`: the method and its machinery at the top, each chapter's reporting code in
`lib.chapters`; no import circle; the method never imports a chapter; each notebook reads its own chapter."""

import ast
import json
import re

import pytest

from lib.config import ROOT

LIB = ROOT / "lib"
SHARED_REPORTING = {"plots", "study", "style", "figcheck", "swap"}  # report helpers every chapter uses


def _module(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(dotted: str) -> bool:
    p = ROOT / dotted.replace(".", "/")
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def lib_imports() -> dict[str, set[str]]:
    """Dotted lib module -> the lib modules it imports, following `from . import x`, `from .x import y`,
    `from ..x import y` and absolute `lib.` imports, anywhere in the file."""
    graph = {}
    for path in sorted(LIB.rglob("*.py")):
        mod = _module(path)
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                if origin.split(".")[0] != "lib":
                    continue
                for a in node.names:  # `from pkg import module` names a module; otherwise the origin is the module
                    deps.add(f"{origin}.{a.name}" if _exists(f"{origin}.{a.name}") else origin)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
        graph[mod] = deps - {mod}
    return graph


def test_the_import_graph_sees_relative_imports():
    graph = lib_imports()
    assert "lib.plan" in graph["lib.cli"] and "lib.rules" in graph["lib.predict"]
    assert "lib.chapters.plots" in graph["lib.chapters.ch06.report"]  # `from .. import plots`


def test_lib_has_no_import_cycle():
    graph, state = lib_imports(), {}

    def visit(m, stack):
        if state.get(m) == "open":
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(m) :] + [m]))
        if state.get(m) != "done":
            state[m] = "open"
            for d in sorted(graph.get(m, ())):
                visit(d, stack + [m])
            state[m] = "done"

    for m in graph:
        visit(m, [])


def test_the_method_never_imports_a_chapter():
    for mod, deps in lib_imports().items():
        if not mod.startswith("lib.chapters"):
            assert not [d for d in deps if d.startswith("lib.chapters")], mod


def test_nothing_imports_the_command_line_back():
    importers = [m for m, deps in lib_imports().items() if "lib.cli" in deps]
    assert importers == ["lib.train"]  # the `python -m lib.train` entry point only
    assert not [m for m, deps in lib_imports().items() if "lib.train" in deps]


def test_each_notebook_imports_chapter_code_only_from_its_own_chapter():
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        number = nb.name[:2]
        source = "\n".join(
            "".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"
        )
        used = set(re.findall(r"lib\.chapters(?:\.(\w+))?", source))
        used |= {m for line in re.findall(r"from lib\.chapters import ([\w, ]+)", source) for m in line.split(", ")}
        chapters = {u for u in used if u and u not in SHARED_REPORTING}
        assert chapters <= {f"ch{number}"}, (nb.name, chapters)
        assert f"ch{number}" in chapters or number == "08", nb.name


def test_lib_top_level_holds_no_chapter_module():
    for path in LIB.glob("*.py"):
        assert not re.match(r"ch\d\d", path.stem), path.name


def test_no_lib_module_calls_another_modules_private_names():
    for path in sorted(LIB.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        pytest.fail(f"{path.name} imports the private {node.module}.{a.name}")
        aliases = {
            a.asname or a.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level and node.module is None
            for a in node.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                if node.attr.startswith("_") and not node.attr.startswith("__"):
                    pytest.fail(f"{path.relative_to(ROOT)} uses the private {node.value.id}.{node.attr}")


def test_no_lib_module_is_longer_than_about_400_lines():
    long = {str(p.relative_to(LIB)): n for p in LIB.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long
