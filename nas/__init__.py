"""Hardware-aware architecture search over a `supernet.space.SearchSpace`.

Main entry points (imported lazily, so ``import nas`` stays cheap):

* `nas.reward.Reward` — MnasNet reward; `nas.objective.Objective` — what strategies maximise (counts evaluations);
* `nas.strategies.create_strategy` / `list_strategies` — the strategy registry; `nas.search.search` — one call;
* `nas.predictor.AccuracyPredictor` and `nas.cache.AccuracyCache` — accuracy estimates and their sqlite cache;
* `nas.pareto.pareto_front`, `nas.plots.plot_convergence` / `plot_pareto`.
* `nas.synthetic` — SYNTHETIC objectives for tests and benchmarks only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names `__getattr__` resolves at run time, visible to the type checker
    from nas.cache import AccuracyCache
    from nas.objective import Evaluation, Objective
    from nas.pareto import pareto_front
    from nas.plots import plot_convergence, plot_pareto
    from nas.predictor import AccuracyPredictor
    from nas.reward import HardConstraint, Reward
    from nas.search import search
    from nas.strategies import create_strategy, list_strategies
    from nas.strategies.base import SearchResult, SearchStrategy

_LAZY = {
    "Reward": "nas.reward", "HardConstraint": "nas.reward", "Objective": "nas.objective",
    "Evaluation": "nas.objective", "SearchResult": "nas.strategies.base", "SearchStrategy": "nas.strategies.base",
    "create_strategy": "nas.strategies", "list_strategies": "nas.strategies", "search": "nas.search",
    "pareto_front": "nas.pareto", "plot_convergence": "nas.plots", "plot_pareto": "nas.plots",
    "AccuracyPredictor": "nas.predictor", "AccuracyCache": "nas.cache",
}

__all__ = [
    "AccuracyCache", "AccuracyPredictor", "Evaluation", "HardConstraint", "Objective", "Reward", "SearchResult",
    "SearchStrategy", "create_strategy", "list_strategies", "pareto_front", "plot_convergence", "plot_pareto",
    "search",
]

if not TYPE_CHECKING:  # hidden from the type checker, which would otherwise accept any attribute name

    def __getattr__(name: str) -> Any:
        if name in _LAZY:
            return getattr(importlib.import_module(_LAZY[name]), name)
        raise AttributeError(f"module 'nas' has no attribute {name!r}")
