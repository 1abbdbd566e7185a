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


def test_strategies_command_lists_each_registered_strategy_once() -> None:
    from nas.strategies import list_strategies

    res = CliRunner().invoke(app, ["strategies"])
    assert res.exit_code == 0, res.output
    rows = [line.split(maxsplit=1) for line in res.output.splitlines()]
    assert [r[0] for r in rows] == list_strategies()  # whole names: "gp" is not found inside "optuna-gp"
    assert {"gp", "evolution", "random", "optuna-gp", "optuna-tpe", "nsga2", "rl"} <= set(list_strategies())
    assert all(len(r) == 2 and r[1].strip() for r in rows), "every strategy has a one-line description"
