"""`search`: one call from (space, objective) to a `SearchResult`, optionally resumable through Optuna storage."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from nas.objective import Evaluation, Objective, reward_json
from nas.strategies import create_strategy
from nas.strategies.base import Callback, SearchResult
from nas.strategies.optuna_search import OptunaSearch
from nas.study import (
    evaluation_attrs,
    evaluations_from_study,
    load_or_create_study,
    param_distributions,
    storage_errors,
)
from supernet.space import SearchSpace

__all__ = ["search"]

log = logging.getLogger(__name__)


def search(
    space: SearchSpace,
    objective: Objective,
    *,
    strategy: str = "gp",
    budget: int = 50,
    seed: int = 0,
    storage: str | os.PathLike[str] | None = None,
    study_name: str | None = None,
    callback: Callback | None = None,
    study_meta: dict[str, Any] | None = None,
    **strategy_kwargs: Any,
) -> SearchResult:
    """Find the architecture with the best reward in ``budget`` evaluations.

    Args:
        space: must be the objective's space (checked).
        strategy: a registry name (`nas.strategies.list_strategies`).
        budget: number of distinct architectures to evaluate (in total over resumed runs).
        seed: all randomness of the strategy.
        storage, study_name: an Optuna storage (`nas.study.open_storage`) makes the search resumable: re-running
            with the same study name continues it. Optuna strategies ("optuna-gp", "optuna-tpe", "nsga2") ask and
            tell trials directly and support several concurrent workers. The other strategies are replayed:
            stored evaluations seed the objective's cache and the (deterministic) strategy re-runs with the same
            seed, re-proposing the stored architectures at no measurement cost, then continues; so a resumed
            search returns exactly what an uninterrupted one would. Replay needs one worker and the same seed.
            ``budget`` is the total: re-running a finished study with a larger budget adds only the difference
            (the strategy is planned with the budget the study was created with, `SearchStrategy.search`).
        study_meta: facts the objective does not carry that make two searches different (e.g. the latency
            table's and predictor's sha256): stored in the study, and a re-run with other values is refused.
        strategy_kwargs: hyperparameters of the strategy.
    """
    if objective.space != space:
        raise ValueError(f"objective is for space {objective.space.name!r}, not {space.name!r}")
    if storage is None:
        return create_strategy(strategy, **strategy_kwargs).search(objective, budget=budget, seed=seed,
                                                                   callback=callback)
    strat = create_strategy(strategy, **strategy_kwargs)
    with storage_errors(storage):  # a full disk says so, not Optuna's "e.g. exceeding max length"
        if isinstance(strat, OptunaSearch):
            strat = create_strategy(strategy, storage=storage, study_name=study_name, study_meta=study_meta,
                                    **strategy_kwargs)
            return strat.search(objective, budget=budget, seed=seed, callback=callback)
        return _replayed_search(strat, objective, budget=budget, seed=seed, storage=storage,
                                study_name=study_name or f"hwnas-{strategy}-seed{seed}", callback=callback,
                                study_meta=study_meta)


def _replayed_search(strat: Any, objective: Objective, *, budget: int, seed: int, storage: str | os.PathLike[str],
                     study_name: str, callback: Callback | None,
                     study_meta: dict[str, Any] | None = None) -> SearchResult:
    import optuna

    t0 = time.perf_counter()
    space = objective.space
    meta = {"strategy": strat.name, "space": space.to_json(), "reward": reward_json(objective), "seed": seed,
            "budget": budget, "strategy_repr": repr(strat), **(study_meta or {})}
    study = load_or_create_study(storage=storage, study_name=study_name, directions=["maximize"], sampler=None,
                                 meta=meta)
    if study.user_attrs.get("seed") != seed:
        raise ValueError(f"study {study_name!r} was run with seed {study.user_attrs.get('seed')}; a replayed "
                         f"strategy ({strat.name!r}) can only be resumed with the same seed, not {seed}")
    stored = evaluations_from_study(study, space)
    objective.remember(stored)
    recorded = {e.arch for e in stored}
    dists = param_distributions(space)
    if stored:
        log.info("study %r: replaying %d stored evaluations of %r", study_name, len(stored), strat.name)

    def record(ev: Evaluation, n: int) -> None:
        if ev.arch not in recorded:
            study.add_trial(optuna.trial.create_trial(params=space.to_params(ev.arch), distributions=dists,
                                                      value=ev.reward, user_attrs=evaluation_attrs(ev)))
            recorded.add(ev.arch)
            if callback is not None:
                callback(ev, n)

    plan_budget = int(study.user_attrs.get("budget", budget))  # the budget the stored run was planned with
    result = strat.search(objective, budget=budget, seed=seed, callback=record, plan_budget=plan_budget)
    result.info.update({"study_name": study_name, "storage": os.fspath(storage), "n_resumed": len(stored)})
    result.wall_time_s = time.perf_counter() - t0
    return result
