"""The import graph runs one way and has no cycles, function-level imports included.

`lint-imports` (contracts in pyproject.toml: layers, no typer/rich in libraries) sees module-level and
function-level imports alike; it also runs in .ci/run before pytest. The cycle check below is ours: import-linter
does not look for cycles inside a layer, and the four cycles the architecture review found (quantize <->
quantize_tflite, train <-> distributed, device_agents.runtime <-> live, supernet.quantize <-> hwnas.pipeline) all
hid behind imports inside functions.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("supernet", "latency_tables", "nas", "device_agents", "hwnas")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Modules of the five packages that ``mod`` imports anywhere (functions included; TYPE_CHECKING excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in mods)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                if f"{target}.{a.name}" in mods:
                    out.add(f"{target}.{a.name}")
                elif target in mods:
                    out.add(target)
    return {d for d in out if d != mod and not mod.startswith(d + ".")}


def import_cycles(mods: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components (more than one module) of the import graph (Tarjan)."""
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycles_even_through_function_level_imports() -> None:
    assert import_cycles(_modules()) == []


def test_the_cycle_check_sees_a_function_level_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "supernet"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from supernet.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from supernet.a import g\n")
    mods = {"supernet": pkg / "__init__.py", "supernet.a": pkg / "a.py", "supernet.b": pkg / "b.py"}
    assert import_cycles(mods) == [["supernet.a", "supernet.b"]]


def test_no_package_imports_the_benchmark_scripts() -> None:
    """benchmarks/ sits above hwnas; it is a folder of scripts, so import-linter cannot check it."""
    offenders = []
    for mod, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{mod} imports {n}" for n in names if n == "benchmarks" or n.startswith("benchmarks.")]
    assert offenders == []


def test_import_linter_contracts_hold() -> None:
    """The layers contract: hwnas > device_agents > latency_tables | nas > supernet; no typer/rich below hwnas."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    p = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
