"""The search-strategy contract as a reusable pytest suite (as `optuna.testing` ships its sampler tests).

A test module gets every check for every registered strategy by parametrizing one subclass::

    @pytest.mark.parametrize("name", list_strategies())
    class TestStrategies(StrategyContract):
        pass

A new strategy registered with `nas.strategies.register_strategy` is then tested without writing a test. The
contract (see `nas.strategies.base.SearchStrategy`): exactly ``budget`` distinct canonical architectures are
evaluated, the callback sees evaluation counts 1..budget in order, ``best`` is the maximum of the history, a
result survives ``to_json``/``from_json``, a seed fixes the run and another seed changes it, and the search
finds something better than its first evaluation. Needs pytest (the ``[dev]`` extra).
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

from nas.objective import Evaluation
from nas.strategies import create_strategy
from nas.strategies.base import SearchResult
from nas.synthetic import make_synthetic_objective

__all__ = ["StrategyContract", "run_strategy"]

# fewer candidates for the GP's acquisition search, Optuna's GP starts modelling early: keeps the suite fast
_FAST_KWARGS: dict[str, dict[str, Any]] = {
    "gp": {"n_pool": 300, "n_rounds": 2, "local_steps": 1},
    "optuna-gp": {"n_startup_trials": 11},
}


@cache
def run_strategy(name: str, seed: int, budget: int, space: str = "mnist") -> tuple[SearchResult, int, tuple[int, ...]]:
    """One search on the SYNTHETIC objective of ``space``: (result, evaluations measured, callback counts).

    Cached per arguments, so the checks of one strategy share a run; `run_strategy.__wrapped__` runs afresh.
    """
    obj = make_synthetic_objective(space, seed=0)
    calls: list[int] = []
    res = create_strategy(name, **_FAST_KWARGS.get(name, {})).search(
        obj, budget=budget, seed=seed, callback=lambda ev, n: calls.append(n))
    return res, obj.n_measured, tuple(calls)


class StrategyContract:
    """Checks every `SearchStrategy` must pass; parametrize a subclass with ``name`` (a registry name)."""

    budget: ClassVar[int] = 14
    space: ClassVar[str] = "mnist"

    def _run(self, name: str, seed: int = 0) -> tuple[SearchResult, int, tuple[int, ...]]:
        return run_strategy(name, seed, self.budget, self.space)

    def test_budget_is_respected_exactly(self, name: str) -> None:
        res, n_measured, calls = self._run(name)
        assert len(res.history) == self.budget
        assert n_measured == self.budget
        assert calls == tuple(range(1, self.budget + 1))
        assert res.strategy == name and res.seed == 0 and res.wall_time_s >= 0

    def test_history_is_valid_canonical_and_distinct(self, name: str) -> None:
        res, _, _ = self._run(name)
        space = make_synthetic_objective(self.space).space
        archs = [e.arch for e in res.history]
        assert len(set(archs)) == len(archs)
        for a in archs:
            assert space.canonical(a) == a
        assert all(isinstance(e, Evaluation) for e in res.history)

    def test_best_is_max_of_history_and_best_so_far(self, name: str) -> None:
        res, _, _ = self._run(name)
        assert res.best.reward == max(e.reward for e in res.history)
        bsf = res.best_so_far()
        assert bsf.shape == (self.budget,) and bsf[-1] == res.best.reward and (bsf[1:] >= bsf[:-1]).all()
        assert SearchResult.from_json(res.to_json()).history == res.history

    def test_deterministic_per_seed(self, name: str) -> None:
        a, _, _ = self._run(name)
        b, _, _ = run_strategy.__wrapped__(name, 0, self.budget, self.space)  # a fresh run, not the cached one
        assert [e.arch for e in a.history] == [e.arch for e in b.history]
        c, _, _ = self._run(name, seed=1)
        assert [e.arch for e in a.history] != [e.arch for e in c.history]

    def test_improves_over_first_evaluation(self, name: str) -> None:
        res, _, _ = self._run(name)
        assert res.best.reward > res.history[0].reward
