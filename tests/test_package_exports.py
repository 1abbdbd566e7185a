"""Lazily exported package names (PEP 562 ``__getattr__``) stay visible to the type checker.

A package that resolves names in ``__getattr__`` must also import each of them under ``if TYPE_CHECKING:`` and
define ``__getattr__`` only outside the type checker's view; otherwise mypy accepts any attribute of the package
(``latency_tables.LatencyTabel`` would pass). Read from the source, so no heavy module is imported.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAZY_PACKAGES = {"latency_tables": "_EXPORTS", "nas": "_LAZY", "nas.strategies": "_LAZY", "device_agents": None}


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def _parse(package: str) -> tuple[set[str], set[str], bool, dict[str, str] | None]:
    """Names imported under ``if TYPE_CHECKING:``, ``__all__``, whether ``__getattr__`` is hidden, the lazy map."""
    tree = ast.parse((ROOT / package.replace(".", "/") / "__init__.py").read_text())
    checked: set[str] = set()
    all_names: set[str] = set()
    hidden = True
    lazy: dict[str, str] | None = None
    for node in tree.body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            checked |= {a.asname or a.name for n in node.body if isinstance(n, ast.ImportFrom) for a in n.names}
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            hidden = False  # defined at top level: mypy then types every unknown attribute as its return type
        if isinstance(node, ast.Assign):
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "__all__":
            all_names = set(ast.literal_eval(value))
        if isinstance(target, ast.Name) and target.id == LAZY_PACKAGES[package]:
            lazy = ast.literal_eval(value)
    return checked, all_names, hidden, lazy


@pytest.mark.parametrize("package", sorted(LAZY_PACKAGES))
def test_lazy_names_are_visible_to_the_type_checker(package: str) -> None:
    checked, all_names, hidden, lazy = _parse(package)
    assert hidden, f"{package}.__getattr__ must be defined under `if not TYPE_CHECKING:`"
    lazy_names = set(lazy) if lazy is not None else {"plot_timeline"}
    assert lazy_names <= checked, f"{package}: lazy names not imported under TYPE_CHECKING: {lazy_names - checked}"
    module = importlib.import_module(package)
    for name in all_names | lazy_names:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError, match="no attribute"):
        module.NoSuchName  # noqa: B018
