"""The house's shape, read from the code (``ast``, nothing imported): rooms by stage,
imports only downwards, no loops, small modules.

``LAYERS`` is the declared order, lowest first; a room is a top-level module
or a subpackage of ``phdcli``. A module may import from its own room and
from rooms in lower layers only: two rooms of one layer stay independent.
Every import counts, those inside functions and under ``TYPE_CHECKING``
included: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "phdcli"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("phdcli", "errors", "defaults"),  # "phdcli": the package's own face (__version__, NOTICE)
    ("paths",),
    ("fsutil", "procs", "config"),
    ("media",),
    ("sources",),
    ("features",),
    ("ranking",),
    ("history",),
    ("cluster",),  # Ray plumbing both engines share (address, session, feature actors)
    ("suggest", "training"),
    ("doctor",),
    ("cli",),
    ("__main__",),
)
MAX_MODULE_LINES = 400
MAX_TOP_LEVEL_MODULES = 8  # __init__ and __main__ included


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (a package is its __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports (parents of a submodule
    count as the submodule's package only when nothing deeper is known)."""
    known = set(known)
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate not in known and "." in candidate:
                candidate = candidate.rpartition(".")[0]
            if candidate in known and candidate != name:
                targets.add(candidate)
    return targets


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> modules it imports, leaving out a package importing its own
    submodules and a submodule importing its package (Python's own plumbing)."""
    mods = modules(root)
    edges = {}
    for name, path in mods.items():
        edges[name] = {t for t in imported(name, path, mods)
                       if not t.startswith(name + ".") and not name.startswith(t + ".")}
    return edges


def room(module: str) -> str:
    """``phdcli.features.cache`` -> ``features``; ``phdcli.paths`` -> ``paths``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(name: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int:
    for index, rooms in enumerate(layers):
        if name in rooms:
            return index
    raise KeyError(f"room {name!r} is in no layer of LAYERS: add it where it belongs")


def upward_imports(edges: dict[str, set[str]],
                   layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Every import from a room to a room not strictly below it."""
    wrong = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            a, b = room(source), room(target)
            if a != b and layer_of(b, layers) >= layer_of(a, layers):
                wrong.append(f"{source} -> {target} ({a} may not import {b})")
    return wrong


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


# -- the house ------------------------------------------------------------------------
def test_no_import_loops() -> None:
    assert cycles(graph()) == []


def test_imports_only_go_down_the_layers() -> None:
    assert upward_imports(graph()) == []


def test_every_room_has_a_layer() -> None:
    for name in modules():
        layer_of(room(name))  # raises for a new room nobody placed


def test_modules_stay_small() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these along their jobs (at most {MAX_MODULE_LINES} lines)"


def test_few_modules_stay_directly_in_phdcli() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_package_says_what_it_is() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 80, f"{init} needs a docstring that says what the room holds"


# -- the checks themselves can fail ---------------------------------------------------
def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "phdcli" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "phdcli"


def test_the_checks_find_a_loop_and_an_upward_import(tmp_path: Path) -> None:
    pkg = _write_package(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "media/__init__.py": "",
        "media/probe.py": "from phdcli.media.decode import x\n",
        "media/decode.py": "def f():\n    from phdcli.media import probe\n",
        "features/__init__.py": "",
        "features/cache.py": "from phdcli.errors import E\nfrom phdcli.media.probe import probe\n",
        # a lower stage reaching up, hidden from the type checker's eyes only
        "media/gifs.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from phdcli.features.cache import ClipCache\n",
    })
    edges = graph(pkg)
    assert cycles(edges) == [["phdcli.media.decode", "phdcli.media.probe"]]
    assert upward_imports(edges) == [
        "phdcli.media.gifs -> phdcli.features.cache (media may not import features)"]


def test_rooms_of_one_layer_may_not_import_each_other(tmp_path: Path) -> None:
    pkg = _write_package(tmp_path, {
        "__init__.py": "",
        "suggest/__init__.py": "",
        "suggest/pipeline.py": "import phdcli.training.fit\n",
        "training/__init__.py": "",
        "training/fit.py": "from phdcli import NOTICE\n",
    })
    assert upward_imports(graph(pkg)) == [
        "phdcli.suggest.pipeline -> phdcli.training.fit (suggest may not import training)"]


def test_a_relative_import_is_resolved(tmp_path: Path) -> None:
    pkg = _write_package(tmp_path, {
        "__init__.py": "",
        "paths.py": "from .cli import app\n",
        "cli/__init__.py": "from ..paths import x\n",
    })
    assert upward_imports(graph(pkg)) == ["phdcli.paths -> phdcli.cli (paths may not import cli)"]


@pytest.mark.parametrize("name", ["phdcli.nowhere"])
def test_a_room_without_a_layer_is_refused(name: str) -> None:
    with pytest.raises(KeyError, match="in no layer"):
        layer_of(room(name))
