"""The library's shape: no import circles, no cross-module private reaches, no mixin that lives
off its host's fields, and every package's ``__all__`` sorted and exact (checked both ways).

Import edges count module-level, function-local and ``TYPE_CHECKING`` imports alike: a circle
hidden inside a function is still a circle for the reader.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
from collections import defaultdict
from collections.abc import Iterator

import pytest

import lion_nb

ROOT = pathlib.Path(lion_nb.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("lion_nb",) + path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)
        found[name] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _imported(name: str, path: pathlib.Path, tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(imported name as a dotted path, module it comes from) for every lion_nb import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").startswith("lion_nb"):
                module = node.module or ""
            else:
                continue
            for alias in node.names:
                yield f"{module}.{alias.name}", module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lion_nb"):
                    yield alias.name, alias.name


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for dotted, module in _imported(name, path, TREES[name]):
            target = dotted if dotted in MODULES else module
            # a package's __init__ reached only on the way to a sibling is no tie to it
            if target in MODULES and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the import graph may be deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in MODULES:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_circles():
    circles = _strongly_connected(_import_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def _private_names_defined() -> dict[str, set[str]]:
    """Private methods and attributes each module's classes define for themselves."""
    defined: dict[str, set[str]] = defaultdict(set)
    for name, tree in TREES.items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for node in ast.walk(cls):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    attr = node.name
                elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                      and isinstance(node.value, ast.Name) and node.value.id == "self"):
                    attr = node.attr
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    attr = node.target.id
                else:
                    continue
                if attr.startswith("_") and not attr.startswith("__"):
                    defined[name].add(attr)
    return defined


def test_no_module_reaches_into_another_modules_private_attributes():
    defined = _private_names_defined()
    reaches = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in defined[name]:
                continue
            if any(node.attr in names for other, names in defined.items() if other != name):
                reaches.append(f"{name}:{node.lineno} .{node.attr}")
    assert not reaches, "private reaches: " + ", ".join(reaches)


def test_no_mixin_lives_off_its_hosts_private_fields():
    """A class that only annotates private fields someone else assigns is a cut class."""
    cut = []
    for name, tree in TREES.items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            bases = {getattr(b, "id", getattr(b, "attr", "")) for b in cls.bases}
            decorated = bool(cls.decorator_list)
            if decorated or bases & {"Protocol", "NamedTuple", "TypedDict"}:
                continue
            declared = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)
                        and isinstance(n.target, ast.Name) and n.value is None
                        and n.target.id.startswith("_") and not n.target.id.startswith("__")}
            assigned = {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute)
                        and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)
                        and n.value.id == "self"}
            slots = any(isinstance(n, ast.Assign)
                        and any(getattr(t, "id", "") == "__slots__" for t in n.targets)
                        for n in cls.body)
            if declared - assigned and not slots:
                cut.append(f"{name}.{cls.name} uses {sorted(declared - assigned)}")
    assert not cut, "mixins living off their host: " + "; ".join(cut)


PACKAGES = sorted(n for n, p in MODULES.items() if p.name == "__init__.py")


def _public_bindings(tree: ast.Module) -> set[str]:
    """Public names an ``__init__`` binds at top level: lion_nb re-exports and definitions.

    Helpers it imports from the standard library (``typing.Any``, ``importlib``) are
    tools of the module, not its surface.
    """
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith("lion_nb")):
            names.update(a.asname or a.name for a in node.names)  # re-exports, not helpers
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_all_is_sorted_and_lists_exactly_its_public_names(package):
    tree = TREES[package]
    module = importlib.import_module(package)
    listed = getattr(module, "__all__", None)
    assert listed is not None, f"{package} has no __all__"
    assert list(listed) == sorted(listed), f"{package}.__all__ is not sorted"
    bound = _public_bindings(tree)
    unlisted = bound - set(listed)
    assert not unlisted, f"{package} binds public names missing from __all__: {sorted(unlisted)}"
    missing = [n for n in listed if not hasattr(module, n)]
    assert not missing, f"{package}.__all__ lists names it does not have: {missing}"


def test_no_test_imports_a_private_module():
    tests = pathlib.Path(__file__).parent
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for mod in modules:
                if mod.startswith("lion_nb") and any(
                        p.startswith("_") and not p.startswith("__") for p in mod.split(".")):
                    offenders.append(f"{path.relative_to(tests)}:{node.lineno} {mod}")
    assert not offenders, "tests import private modules: " + ", ".join(offenders)
