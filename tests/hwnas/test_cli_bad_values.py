"""Every command, every option, a bad value: a clear error (exit 2) or accepted, never a traceback (issue 16).

The commands and their options are walked from the Typer app, so a new command or option is covered without
touching this file. Work that would take long once the input is accepted (training, measuring, serving) is
replaced by a sentinel: reaching it means the value was accepted, which is fine for values that are valid
(``--seed -1``); what must never happen is an exception escaping as a traceback, or an exit code other than 0
or 2 for a bad value.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hwnas.cli import _mount_subapps, app


class WorkStarted(Exception):
    """Raised instead of a long-running library call: the command accepted its input."""


# library entry points that run for minutes (or forever: servers) once the input is accepted
_WORK = [
    ("hwnas.demo", "run_demo"),
    ("supernet.train", "train_supernet"),
    ("hwnas.pipeline", "search_device"),
    ("latency_tables.table", "build_table"),
    ("latency_tables.predictor", "validate"),
    ("latency_tables.kit", "write_kit"),
    ("latency_tables.subnet_kit", "write_subnet_kit"),
    ("latency_tables.service", "serve"),
    ("uvicorn", "run"),
    ("nas.bench", "run"),
    ("device_agents.live", "run_live"),
    ("supernet.evaluate", "recalibrated_subnet"),
    ("supernet.evaluate", "evaluate"),
]

_BAD = {
    "int": ["abc", "-1", "0", "99999999999999999999999"],
    "float": ["nan", "inf", "-1", "abc", "0"],
    "str": ["bogus", "", "nan"],
}


def _commands() -> Iterator[tuple[list[str], Any]]:
    _mount_subapps()

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    yield from walk(typer.main.get_command(app), [])


def _kind(param: Any) -> str:
    t = str(param.bare_type()).lower()
    if "path" in t:
        return "path"
    for k in ("float", "int"):
        if k in t:
            return k
    return "str"


def _bad_values(param: Any, root: Path) -> list[str]:
    kind = _kind(param)
    if kind == "path":
        return [str(root / "missing" / "x.json"), str(root / "a_dir"), str(root / "junk.txt"),
                str(root / "junk.txt" / "under_a_file.csv")]
    return _BAD[kind]


def _filler(param: Any, root: Path) -> str:
    """A value for a required parameter that is not under test (an output path, a junk file, a number)."""
    kind = _kind(param)
    if kind == "path":
        return str(root / f"fresh_{param.name}") if "out" in param.name else str(root / "junk.txt")
    return {"int": "1", "float": "1"}.get(kind, "bogus")


def _cases() -> list[tuple[str, str, int, str]]:
    cases = []
    root = Path("/ROOT")
    for path, cmd in _commands():
        for p in cmd.params:
            if getattr(p, "is_flag", False) or p.name in ("help",):
                continue
            for i, v in enumerate(_bad_values(p, root)):
                cases.append((" ".join(path), p.name, i, v))
    return cases


CASES = _cases()


def test_the_walk_finds_every_command() -> None:
    names = {c for c, *_ in CASES}
    for expected in ("train", "search", "eval", "export", "lut build", "lut predict", "agent simulate",
                     "nas reward", "serve", "bundle", "quantize"):
        assert expected in names
    assert len(CASES) > 500


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import importlib

    (tmp_path / "a_dir").mkdir()
    (tmp_path / "junk.txt").write_text("garbage, not JSON {\n\x00\x01")
    monkeypatch.chdir(tmp_path)  # default paths (hwnas-runs/...) point into the sandbox, where nothing exists

    def work(*_a: Any, **_k: Any) -> None:
        raise WorkStarted

    for mod, attr in _WORK:
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        if hasattr(m, attr):
            monkeypatch.setattr(m, attr, work)
    return tmp_path


@pytest.mark.parametrize("command", sorted({c for c, *_ in CASES}))
def test_every_option_with_a_bad_value_gives_a_clear_error_not_a_traceback(command: str, sandbox: Path) -> None:
    runner = CliRunner()
    cmd = {" ".join(p): c for p, c in _commands()}[command]
    failures = []
    for _, name, i, _ in (c for c in CASES if c[0] == command):
        param = next(p for p in cmd.params if p.name == name)
        value = _bad_values(param, sandbox)[i]
        args = command.split()
        for p in cmd.params:
            if p is param or not p.required:
                continue
            args += ([p.opts[0]] if p.opts[0].startswith("-") else []) + [_filler(p, sandbox)]
        args += ([param.opts[0]] if param.opts[0].startswith("-") else []) + [value]
        if not param.opts[0].startswith("-"):  # a positional argument: keep the order of the declaration
            positional = [p for p in cmd.params if not p.opts[0].startswith("-")]
            args = command.split() + [value if p is param else _filler(p, sandbox) for p in positional] + [
                a for a in itertools.chain.from_iterable(
                    [p.opts[0], _filler(p, sandbox)] for p in cmd.params if p.required and p.opts[0].startswith("-"))]
        res = runner.invoke(app, args, catch_exceptions=True)
        exc = res.exception
        shown = f"hwnas {' '.join(args)}"
        if exc is not None and not isinstance(exc, (SystemExit, WorkStarted)):
            failures.append(f"{shown}: {type(exc).__name__}: {str(exc)[:200]}")
        elif "Traceback" in res.output:
            failures.append(f"{shown}: traceback in the output")
        elif not isinstance(exc, WorkStarted) and res.exit_code not in (0, 2):
            failures.append(f"{shown}: exit code {res.exit_code} (bad input exits 2): {res.output[-200:]!r}")
    assert not failures, "\n".join(failures)
