from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hwnas.commands.nas import app


def test_reward_command() -> None:
    res = CliRunner().invoke(app, ["reward", "0.8", "20", "--target-ms", "10", "--preset", "hard"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["reward"] == pytest.approx(0.4) and out["beta"] == -1.0


def test_strategies_command() -> None:
    res = CliRunner().invoke(app, ["strategies"])
    assert res.exit_code == 0
    for name in ("gp", "evolution", "random", "optuna-gp", "optuna-tpe", "nsga2", "rl"):
        assert name in res.output
