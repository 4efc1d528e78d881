"""The HTTP package has no import circle: data flows one way (style.md). The graph counts every
import of a ``confd.http`` module, those inside functions too (a deferred import is still a
circle, only hidden)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import confd.http

PACKAGE = "confd.http"


def _imports(path: Path, module: str) -> Set[str]:
    """The ``confd.http`` modules that ``module`` imports, anywhere in its file."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: from . import x
                base = ".".join(module.split(".")[: -node.level] + [node.module])
            found.add(base)
            # "from confd.http import auth" imports the module confd.http.auth
            found.update(base + "." + a.name for a in node.names)
    return {name for name in found if name.startswith(PACKAGE + ".")}


def import_graph() -> Dict[str, Set[str]]:
    root = Path(confd.http.__file__).parent
    modules = {PACKAGE + "." + p.stem: p for p in root.glob("*.py") if p.stem != "__init__"}
    return {name: _imports(path, name) & set(modules) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every module that can reach itself, with one path that shows how."""
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        seen: Set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    found.append(path + [start])
                    stack.clear()
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return found


def test_the_http_package_has_no_import_circle():
    graph = import_graph()
    assert PACKAGE + ".app" in graph and graph[PACKAGE + ".app"], graph
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"]]
