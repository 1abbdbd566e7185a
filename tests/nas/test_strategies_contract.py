"""One contract suite, run over every registered strategy (see `nas.strategies.base.SearchStrategy`)."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from nas.objective import Evaluation
from nas.strategies import create_strategy, list_strategies
from nas.strategies.base import SearchResult
from nas.synthetic import make_synthetic_objective

BUDGET = 14
# keep the suite fast: fewer candidates for the GP's acquisition search, Optuna's GP starts modelling early
FAST_KWARGS: dict[str, dict[str, Any]] = {
    "gp": {"n_pool": 300, "n_rounds": 2, "local_steps": 1},
    "optuna-gp": {"n_startup_trials": 11},
}


@cache
def _run(name: str, seed: int) -> tuple[SearchResult, int, tuple[int, ...]]:
    obj = make_synthetic_objective("mnist", seed=0)
    calls: list[int] = []
    res = create_strategy(name, **FAST_KWARGS.get(name, {})).search(
        obj, budget=BUDGET, seed=seed, callback=lambda ev, n: calls.append(n))
    return res, obj.n_measured, tuple(calls)


def test_registry_lists_the_issue_strategies() -> None:
    assert {"random", "evolution", "gp", "optuna-gp", "optuna-tpe", "nsga2", "rl"} <= set(list_strategies())
    with pytest.raises(KeyError, match="known"):
        create_strategy("no-such-strategy")


@pytest.mark.parametrize("name", list_strategies())
def test_budget_is_respected_exactly(name: str) -> None:
    res, n_measured, calls = _run(name, 0)
    assert len(res.history) == BUDGET
    assert n_measured == BUDGET
    assert calls == tuple(range(1, BUDGET + 1))
    assert res.strategy == name and res.seed == 0 and res.wall_time_s >= 0


@pytest.mark.parametrize("name", list_strategies())
def test_history_is_valid_canonical_and_distinct(name: str) -> None:
    res, _, _ = _run(name, 0)
    space = make_synthetic_objective("mnist").space
    archs = [e.arch for e in res.history]
    assert len(set(archs)) == len(archs)
    for a in archs:
        assert space.canonical(a) == a
    assert all(isinstance(e, Evaluation) for e in res.history)


@pytest.mark.parametrize("name", list_strategies())
def test_best_is_max_of_history_and_best_so_far(name: str) -> None:
    res, _, _ = _run(name, 0)
    assert res.best.reward == max(e.reward for e in res.history)
    bsf = res.best_so_far()
    assert bsf.shape == (BUDGET,) and bsf[-1] == res.best.reward and (bsf[1:] >= bsf[:-1]).all()
    assert SearchResult.from_json(res.to_json()).history == res.history


@pytest.mark.parametrize("name", list_strategies())
def test_deterministic_per_seed(name: str) -> None:
    a, _, _ = _run(name, 0)
    b, _, _ = _run_again(name)  # a fresh run, not the cached one
    assert [e.arch for e in a.history] == [e.arch for e in b.history]
    c, _, _ = _run(name, 1)
    assert [e.arch for e in a.history] != [e.arch for e in c.history]


def _run_again(name: str) -> tuple[SearchResult, int, tuple[int, ...]]:
    return _run.__wrapped__(name, 0)


@pytest.mark.parametrize("name", list_strategies())
def test_improves_over_first_evaluation(name: str) -> None:
    res, _, _ = _run(name, 0)
    assert res.best.reward > res.history[0].reward
