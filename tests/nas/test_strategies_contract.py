"""The strategy contract (`nas.testing.StrategyContract`) run over every registered strategy."""

from __future__ import annotations

import pytest

from nas.strategies import create_strategy, list_strategies
from nas.testing import StrategyContract


def test_registry_lists_the_issue_strategies() -> None:
    assert {"random", "evolution", "gp", "optuna-gp", "optuna-tpe", "nsga2", "rl"} <= set(list_strategies())
    with pytest.raises(KeyError, match="known"):
        create_strategy("no-such-strategy")


@pytest.mark.parametrize("name", list_strategies())
class TestEveryStrategy(StrategyContract):
    pass
