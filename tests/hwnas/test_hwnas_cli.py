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


@pytest.mark.parametrize("cmd", [["demo"], ["train"], ["eval"], ["export"], ["lut"], ["agent"]])
def test_every_command_has_help(cmd: list[str]) -> None:
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert len(res.output) > 100
