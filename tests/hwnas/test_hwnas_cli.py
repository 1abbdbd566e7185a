"""The command line: help texts, `space info`, and clear errors for bad input (no training needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hwnas.cli import _mount_subapps, app

_mount_subapps()
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_help_lists_every_stage() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("demo", "train", "eval", "export", "space", "lut", "agent"):
        assert cmd in res.output


def test_space_info_prints_ofa_count() -> None:
    res = runner.invoke(app, ["space", "info", "--space", "ofa-mbv3"])
    assert res.exit_code == 0, res.output
    out = _plain(res.output)
    assert "21758655492572485851" in out  # (9^2 + 9^3 + 9^4)^5
    assert "2.176e+19" in out
    assert "46 decisions" in out


def test_space_info_custom_resolutions_and_bad_input() -> None:
    res = runner.invoke(app, ["space", "info", "--space", "mnist", "--resolutions", "20,28"])
    assert res.exit_code == 0 and "20" in res.output
    bad = runner.invoke(app, ["space", "info", "--space", "nope"])
    assert bad.exit_code == 2 and "unknown search space 'nope'" in _plain(bad.output)
    bad = runner.invoke(app, ["space", "info", "--resolutions", "a,b"])
    assert bad.exit_code == 2 and "expected comma-separated integers" in _plain(bad.output)


def test_eval_with_missing_supernet_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "none.pt"
    res = runner.invoke(app, ["eval", "--arch", "largest", "--supernet", str(missing)])
    assert res.exit_code == 2
    assert str(missing) in _plain(res.output).replace("\n", "")


def test_train_rejects_unknown_dataset(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--dataset", "imagenet", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "imagenet" in _plain(res.output)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    assert readme[0].startswith("```")
    demo_cmd, test_cmd = readme[1], readme[2]
    assert demo_cmd.endswith("hwnas demo") and "pip install" in demo_cmd
    assert test_cmd.endswith("python -m pytest")
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


GROUPS = {  # sub-commands each group must show (a wrong sub-app mounted under a name fails here)
    "lut": {"adapt", "build", "export", "import", "info", "kit", "predict", "serve", "validate"},
    "agent": {"bundle", "example-variants", "live", "scenarios", "serve-model", "simulate"},
}


@pytest.mark.parametrize("cmd", ["demo", "train", "eval", "export", "search", "quantize", "lut", "agent"])
def test_every_command_has_help(cmd: str) -> None:
    """``hwnas CMD --help`` shows that command's usage, its summary line, each of its options or sub-commands."""
    import typer

    command = typer.main.get_command(app).commands[cmd]  # type: ignore[attr-defined]
    res = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})  # wide enough that no option name is cut
    assert res.exit_code == 0, res.output
    out = " ".join(_plain(res.output).replace("│", " ").split())
    assert re.search(rf"Usage: \S+ {cmd} \[OPTIONS\]", out), out[:200]
    summary = " ".join((command.help or "").split("\n\n")[0].split())
    assert summary and " ".join(summary.split()[:6]) in out, (summary, out[:300])
    for param in command.params:
        assert param.opts[0] in out, f"{cmd} --help does not show {param.opts[0]}"
    if cmd in GROUPS:
        assert set(command.commands) == GROUPS[cmd]  # type: ignore[attr-defined]
        for sub in GROUPS[cmd]:
            assert re.search(rf"(^| ){re.escape(sub)} [A-Z]", out), f"{cmd} --help does not list {sub}"


def test_serve_passes_its_body_limit_to_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from latency_tables import service

    seen: dict[str, object] = {}
    monkeypatch.setattr(service, "serve", lambda table, **kw: seen.update(kw, table=table))
    table = ROOT / "tests" / "latency_tables" / "fixtures" / "tables" / "schema-v2-fake.csv"
    res = runner.invoke(app, ["serve", "--table", str(table), "--max-body-bytes", "4096", "--max-batch", "7"])
    assert res.exit_code == 0, res.output
    assert seen["max_body_bytes"] == 4096 and seen["max_batch"] == 7 and seen["host"] == "127.0.0.1"
    assert runner.invoke(app, ["serve", "--table", str(table), "--max-body-bytes", "10"]).exit_code == 2
