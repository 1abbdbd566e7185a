"""Import a script of ``benchmarks/`` (not a package) as a module, for the benchmark tests of every package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as module ``bench_<name>_script``, registered in `sys.modules` (dataclasses and
    pickling look their module up there)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}_script", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
