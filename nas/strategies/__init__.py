"""Search strategies behind one interface, created by name from a lazy registry.

    >>> from nas.strategies import create_strategy, list_strategies
    >>> strat = create_strategy("gp")                       # imports nas.strategies.gp on first use
    >>> result = strat.search(objective, budget=50, seed=0)

Registry names map to ``"module:Class"`` import strings, so optuna and torch are imported only by the
strategies that need them. Every registered strategy passes ``tests/nas/test_strategies_contract.py``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nas.strategies.base import Callback, EvalLoop, SearchResult, SearchStrategy
from supernet.registry import Registry

if TYPE_CHECKING:  # the names `__getattr__` resolves at run time, visible to the type checker
    from nas.pareto import pareto_front as pareto_front
    from nas.plots import plot_convergence as plot_convergence
    from nas.plots import plot_pareto as plot_pareto
    from nas.search import search as search

__all__ = ["STRATEGIES", "Callback", "EvalLoop", "SearchResult", "SearchStrategy", "create_strategy", "get_strategy_class",
           "list_strategies", "register_strategy"]

STRATEGIES: Registry[type[SearchStrategy]] = Registry("search strategy", plural="search strategies")
STRATEGIES.add("random", "nas.strategies.random_search:RandomSearch")
STRATEGIES.add("evolution", "nas.strategies.evolution:EvolutionSearch")
STRATEGIES.add("gp", "nas.strategies.gp:GPBayesOpt")
STRATEGIES.add("optuna-gp", "nas.strategies.optuna_search:OptunaGPSearch")
STRATEGIES.add("optuna-tpe", "nas.strategies.optuna_search:OptunaTPESearch")
STRATEGIES.add("nsga2", "nas.strategies.optuna_search:NSGA2Search")
STRATEGIES.add("rl", "nas.strategies.rl:ReinforceSearch")


def list_strategies() -> list[str]:
    return sorted(STRATEGIES.names())


def register_strategy(name: str, target: str) -> None:
    """Register ``"module:Class"`` under ``name`` (plugins); re-registering a name with another target fails."""
    if ":" not in target:
        raise ValueError(f"strategy target {target!r}: expected 'module:Class'")
    if name in STRATEGIES:
        if STRATEGIES.spec(name) != target:
            raise ValueError(f"strategy {name!r} is already registered as {STRATEGIES.spec(name)!r}")
        return
    STRATEGIES.add(name, target)


def get_strategy_class(name: str) -> type[SearchStrategy]:
    """The class registered as ``name`` (imported now); `UnknownNameError` (a KeyError) lists known ones."""
    cls = STRATEGIES.get(name)
    target = STRATEGIES.spec(name)
    if not (isinstance(cls, type) and issubclass(cls, SearchStrategy)):
        raise TypeError(f"strategy {name!r} -> {target!r} is not a SearchStrategy subclass")
    return cls


def create_strategy(name: str, **kwargs: Any) -> SearchStrategy:
    """Instantiate the strategy registered as ``name`` with keyword hyperparameters."""
    return get_strategy_class(name)(**kwargs)


_LAZY = {"search": "nas.search", "pareto_front": "nas.pareto", "plot_convergence": "nas.plots",
         "plot_pareto": "nas.plots"}


if not TYPE_CHECKING:  # hidden from the type checker, which would otherwise accept any attribute name

    def __getattr__(name: str) -> Any:
        """`search`, `pareto_front`, `plot_convergence` and `plot_pareto` are re-exported lazily (no import cycle)."""
        if name in _LAZY:
            return getattr(importlib.import_module(_LAZY[name]), name)
        raise AttributeError(f"module 'nas.strategies' has no attribute {name!r}")
