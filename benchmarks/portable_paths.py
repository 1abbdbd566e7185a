"""Paths in benchmark results, written so the files read the same on every machine.

A results file under ``benchmarks/results/`` is committed: an absolute path in it names the machine it ran on.
`portable_paths` rewrites every string of a JSON-able value that is an absolute path: inside the repository it
becomes repository-relative (``benchmarks/results/x.png``), inside a named folder outside it (the run's scratch
``work``, the ``results`` folder) ``<work>/...`` / ``<results>/...``; other strings are left as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

PathLike = str | os.PathLike[str]


def portable_path(text: str, *, work: PathLike | None = None, results: PathLike | None = None) -> str:
    """``text`` relative to the repository, or to ``work`` / ``results``, if it is an absolute path there."""
    if not os.path.isabs(text) or "\n" in text:
        return text
    p = Path(os.path.normpath(text))
    if p.is_relative_to(ROOT):
        return p.relative_to(ROOT).as_posix()
    for marker, folder in (("<work>", work), ("<results>", results)):
        if folder is not None:
            f = Path(os.path.normpath(os.path.abspath(folder)))
            if p.is_relative_to(f):
                rel = p.relative_to(f).as_posix()
                return marker if rel == "." else f"{marker}/{rel}"
    return text


def portable_paths(value: Any, *, work: PathLike | None = None, results: PathLike | None = None) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, strings, numbers) with every absolute path made portable."""
    if isinstance(value, str):
        return portable_path(value, work=work, results=results)
    if isinstance(value, os.PathLike):
        return portable_path(os.fspath(value), work=work, results=results)
    if isinstance(value, dict):
        return {k: portable_paths(v, work=work, results=results) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_paths(v, work=work, results=results) for v in value]
    return value
