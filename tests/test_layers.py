"""The package's floors: imports go down only, no circle, no import hidden in a function to dodge one, and the
model floor free of Hydra and config files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "gan"
# Each module's floor; a module may import its own wing and lower floors. Wings on one floor do not import each
# other. The commands (python -m gan.X) are the top floor.
FLOORS = {
    "gan.errors": 0,
    "gan.images": 0,
    "gan.files": 0,
    "gan.data": 1,
    "gan.model": 1,
    "gan.eval": 2,
    "gan.runs": 3,
    "gan.study": 4,
}
COMMANDS = ("gan.train", "gan.sample", "gan.evaluate", "gan.evaluator", "gan.report", "gan.bench")
# Function-local imports that may stay, with their reason: Hydra imports the launcher plugin while it scans for
# plugins, and torch + Lightning would slow every command's start.
LAZY_ALLOWED = {"gan.runs.launcher"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wing(name: str) -> str:
    """The wing a module belongs to: its subpackage, "ground" for the ground floor's modules (they may import each
    other), else the module itself."""
    found = next((w for w in sorted(FLOORS, key=len, reverse=True) if name == w or name.startswith(w + ".")), name)
    return "ground" if FLOORS.get(found) == 0 else found


def floor(name: str) -> int:
    if name in COMMANDS:
        return 5
    return next(f for w, f in FLOORS.items() if name == w or name.startswith(w + "."))


def imports(path: Path) -> list[tuple[str, bool]]:
    """(the gan module imported, whether the import sits inside a function) for each import of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gan":
            names = [f"{node.module}.{a.name}" for a in node.names]
            target = next((n for n in names if n in MODULES), node.module)
            found.append((target, node.col_offset > 0))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.col_offset > 0) for a in node.names if a.name.split(".")[0] == "gan"]
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
EDGES = {name: imports(path) for name, path in MODULES.items()}


def test_every_module_has_a_floor():
    assert all(floor(name) >= 0 for name in MODULES if name != "gan")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "gan"))
def test_imports_go_down_only(name):
    for target, _ in EDGES[name]:
        if target in ("gan",) or wing(target) == wing(name):
            continue
        assert floor(target) < floor(name), f"{name} (floor {floor(name)}) imports {target} (floor {floor(target)})"


def test_no_import_circle():
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        seen[name] = 1
        for target, _ in EDGES.get(name, []):
            if target not in MODULES or target == name:
                continue
            assert seen.get(target) != 1, "import circle: " + " -> ".join([*path, name, target])
            if target not in seen:
                visit(target, [*path, name])
        seen[name] = 2

    for name in MODULES:
        if name not in seen:
            visit(name, [])


def test_no_function_local_import_dodges_a_circle():
    local = sorted({name for name, edges in EDGES.items() for _, inside in edges if inside} - LAZY_ALLOWED)
    assert local == []


def test_the_model_floor_reads_no_config():
    for name, path in MODULES.items():
        if wing(name) != "gan.model":
            continue
        tree = ast.parse(path.read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in modules if m.split(".")[0] in ("hydra", "omegaconf")}, name
